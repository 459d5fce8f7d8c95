"""What a user's log file holds: progress lines without a terminal, no third-party noise.

Every command here runs as a subprocess with stdout and stderr going to a file, as under nohup
or SLURM, where a redrawn progress bar would print once at the end.
"""

from __future__ import annotations

import io
import re
import subprocess
from pathlib import Path

from sah.data.progress import Progress

STAMP = r"\[\d\d:\d\d:\d\d\]"

# Lines the entry points filter out (sah.cli.quiet): none of them says anything to a sah user.
NOISE = (
    "GPU available",
    "TPU available",
    "HPU available",
    "Seed set to",
    "litlogger",
    "Creating initial MLflow database tables",
    "DeprecationWarning",
    "PossibleUserWarning",
    "log_every_n_steps",
)


def run_to_file(args: list[str], cwd: Path, log: Path) -> str:
    with log.open("w") as fh:
        done = subprocess.run(args, cwd=cwd, stdout=fh, stderr=subprocess.STDOUT, timeout=600)
    text = log.read_text()
    assert done.returncode == 0, text[-3000:]
    return text


def test_sah_synth_prints_timestamped_progress_and_where_the_preview_is(
    tmp_path: Path, cache_root: Path, tiny_manifest: Path
) -> None:
    preview = tmp_path / "preview.png"
    args = ["sah-synth", "--n", "3", "--matrix", "32", "--spacing", "5", "--seed", "7"]
    args += ["--cache-dir", str(cache_root), "--workers", "1", "--preview", str(preview)]
    text = run_to_file(args, tmp_path, tmp_path / "synth.log")
    lines = text.splitlines()
    progress = [line for line in lines if "synthetic cohort sah n=3: patient" in line]
    assert progress, text
    line = STAMP + r" synthetic cohort sah n=3: patient \d/3 \(\d+ s\)"
    assert all(re.match(line, p) for p in progress)
    assert progress[0].split(": patient ")[1].startswith("1/3")
    assert progress[-1].split(": patient ")[1].startswith("3/3")
    assert len(progress) <= 3
    assert preview.is_file()
    assert f"preview: {preview}" in text
    # The manifest path is still the last line, for scripts that read it.
    assert Path(lines[-1]).name == "manifest.csv" and Path(lines[-1]).is_file()


def test_sweep_log_has_one_line_per_epoch_and_no_third_party_noise(
    tmp_path: Path, tiny_overrides
) -> None:
    overrides = [o for o in tiny_overrides(tmp_path) if not o.startswith("callbacks.progress")]
    overrides = [o for o in overrides if not o.startswith("trainer.max_epochs")]
    args = ["sah-train", "-m", *overrides, "trainer.max_epochs=2"]
    args += ["adapter=lora_c", "adapter.rank=1,2"]
    text = run_to_file(args, tmp_path, tmp_path / "sweep.log")
    line = STAMP + r" epoch (\d)/2: train/loss [\d.e+-]+, val/dice [\d.e+-]+ \(\d+ s\)"
    epochs = re.findall(line, text)
    assert epochs == ["1", "2", "1", "2"], text
    for noise in NOISE:
        assert noise not in text, noise
    # sah's own warning: one short line, once for the two trials.
    frozen = [line for line in text.splitlines() if "frozen" in line]
    assert len(frozen) == 1, text
    assert frozen[0].startswith("warning: lora_c leaves") and len(frozen[0]) < 160
    assert text.count("MLflow run id:") == 2


def test_progress_lines_without_a_terminal() -> None:
    out = io.StringIO()
    with Progress("preprocessing ct", total=4, unit="case", stream=out, every_s=3600) as bar:
        for _ in range(4):
            bar.advance()
    lines = out.getvalue().splitlines()
    # The first and the last item; the ones between fall within the rate limit.
    assert [line.split(": ", 1)[1].split(" (")[0] for line in lines] == ["case 1/4", "case 4/4"]
    assert all(re.match(STAMP + " preprocessing ct: ", line) for line in lines)


def test_sah_train_help_describes_the_command_its_examples_and_groups(tmp_path: Path) -> None:
    text = run_to_file(["sah-train", "--help"], tmp_path, tmp_path / "help.txt")
    assert text.startswith("sah-train: train and evaluate")
    assert "Examples:" in text and "sah-train -m " in text
    groups = dict(
        line.split(": ", 1) for line in text.splitlines() if re.match(r"^[a-z_]+: \w", line)
    )
    options = sorted(
        p.stem for p in (Path(__file__).parents[2] / "conf" / "adapter").glob("*.yaml")
    )
    assert groups["adapter"].split(", ") == options
    assert "unet2d" in groups["model"].split(", ")
    # No config dump (that is `sah-train --cfg job`).
    assert "_target_" not in text and len(text.splitlines()) < 60


def test_quiet_filters_only_while_a_command_runs() -> None:
    """A test calling a main() in-process keeps seeing every warning afterwards."""
    import logging
    import warnings

    from sah.cli.quiet import quiet

    filters, formatter = list(warnings.filters), warnings.formatwarning
    seed_logger = logging.getLogger("lightning.fabric.utilities.seed")
    level = seed_logger.level
    with quiet():
        assert seed_logger.level == logging.WARNING
        assert warnings.filters != filters  # the third-party filter is on
    assert warnings.filters == filters and warnings.formatwarning is formatter
    assert seed_logger.level == level
