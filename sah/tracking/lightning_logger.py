"""Lightning's MLflow logger on a run that sah's run driver owns."""

from __future__ import annotations

from lightning.pytorch.loggers import MLFlowLogger


class RunLogger(MLFlowLogger):
    """Logs a training loop's metrics into an existing run and leaves its end to the driver.

    Lightning's logger ends the run FINISHED as soon as ``fit`` returns (or FAILED when it
    raises), before the test patients are scored; the driver ends it once everything is
    logged, as FINISHED, FAILED or KILLED (``sah.tracking.runs.run_life``)."""

    def finalize(self, status: str = "success") -> None:
        """Nothing to end: the driver ends the run."""
