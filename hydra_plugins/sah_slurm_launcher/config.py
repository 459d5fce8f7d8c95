"""Config of the SLURM launcher, registered as ``hydra/launcher=sah_slurm`` (conf/hydra/launcher/
slurm.yaml is the name users type). Registered only when hydra-submitit-launcher is installed
(``pip install 'sah[slurm]'``).

No ``from __future__ import annotations``: Hydra's plugin scanner runs this module before it is
in ``sys.modules``, where dataclasses cannot resolve string annotations.
"""

from dataclasses import dataclass

from hydra.core.config_store import ConfigStore

try:
    from hydra_plugins.hydra_submitit_launcher.config import SlurmQueueConf
except ImportError:  # the [slurm] extra is not installed
    SlurmQueueConf = None

if SlurmQueueConf is not None:

    @dataclass
    class SahSlurmConf(SlurmQueueConf):  # type: ignore[misc, valid-type]
        _target_: str = "hydra_plugins.sah_slurm_launcher.slurm_launcher.SahSlurmLauncher"
        # Check the request against `scontrol show partition/node` before submitting.
        preflight: bool = True
        # Seconds between looks at the jobs' result files; squeue is asked every 3rd look.
        poll_s: float = 5.0
        # A job still pending for the same reason is reported again after this many seconds.
        pending_report_s: float = 300.0

    ConfigStore.instance().store(
        group="hydra/launcher", name="sah_slurm", node=SahSlurmConf, provider="sah"
    )
