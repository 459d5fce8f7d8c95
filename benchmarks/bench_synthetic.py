"""Time the synthetic SAH cohort: first generation, generation with 1 and 2 processes, reuse.

Issue budget: the LoRA study's 30 patients at the CPU default (128x128 at 1.8 mm) in under 2
minutes on the project's 2-core machine. In one run, in fresh cache folders, times:

- ``anatomy``: deriving the MNI152 anatomy channels (once per cache root and voxel size);
- ``workers_1`` / ``workers_2``: rendering the cohort with 1 and 2 processes (anatomy cached);
- ``reuse``: asking for the same cohort again (the manifest comes back from the cache).

Writes ``--out`` (JSON) and a Markdown table next to it.

    python benchmarks/bench_synthetic.py --out bench_results/synthetic.json
    python benchmarks/bench_synthetic.py --quick --out /tmp/synthetic.json   # smoke run
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from results_io import write_results

from sah.data.synthetic import SynthConfig, ensure_cohort
from sah.data.synthetic.anatomy import load_anatomy

BUDGET_S = 120.0


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def run_benchmark(config: SynthConfig, voxel_mm: float) -> dict:
    with tempfile.TemporaryDirectory(prefix="sah-bench-synth-") as tmp:
        roots = {w: Path(tmp) / f"workers{w}" for w in (1, 2)}
        seconds = {}
        seconds["anatomy"], _ = timed(lambda: load_anatomy(voxel_mm, roots[1]))
        # The second root gets the same anatomy file, so both renders start from a cached one.
        (roots[2] / "anatomy").mkdir(parents=True)
        for item in (roots[1] / "anatomy").iterdir():
            os.link(item, roots[2] / "anatomy" / item.name)
        for workers, root in roots.items():
            seconds[f"workers_{workers}"], manifest = timed(
                lambda root=root, workers=workers: ensure_cohort(config, root, workers=workers)
            )
        seconds["reuse"], again = timed(lambda: ensure_cohort(config, roots[2], workers=2))
        assert again == manifest, "the cached cohort was not reused"
    first_use = seconds["anatomy"] + seconds["workers_2"]
    return {
        "config": dataclasses.asdict(config),
        "seconds": {k: round(v, 6) for k, v in seconds.items()},
        "ratios": {
            "workers_1_over_workers_2": round(seconds["workers_1"] / seconds["workers_2"], 2),
            "first_use_over_reuse": round(first_use / max(seconds["reuse"], 1e-9)),
        },
        "first_use_s": round(first_use, 6),
        "budget_s": BUDGET_S,
        "within_budget": first_use <= BUDGET_S,
        "cpu_count": os.cpu_count(),
        "load_average": [round(v, 2) for v in os.getloadavg()],
        "python": platform.python_version(),
    }


def markdown(result: dict) -> str:
    s, r, c = result["seconds"], result["ratios"], result["config"]
    lines = [
        "# Synthetic cohort benchmark",
        "",
        f"{c['n_patients']} {c['kind']} patients, {c['matrix']}x{c['matrix']} at "
        f"{c['spacing_mm']} mm, {result['cpu_count']} CPUs, load average after "
        f"{result['load_average']}.",
        "",
        "| step | seconds |",
        "|---|---:|",
        f"| anatomy channels (once per cache) | {s['anatomy']:.1f} |",
        f"| render, 1 process | {s['workers_1']:.1f} |",
        f"| render, 2 processes | {s['workers_2']:.1f} |",
        f"| reuse from the cache | {s['reuse']:.4f} |",
        "",
        f"First use (anatomy + 2-process render): {result['first_use_s']:.1f} s against the "
        f"{result['budget_s']:.0f} s budget: {'within' if result['within_budget'] else 'OVER'}. "
        f"1 vs 2 processes: {r['workers_1_over_workers_2']}x; first use vs reuse: "
        f"{r['first_use_over_reuse']}x.",
        "",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("bench_results/synthetic.json"))
    parser.add_argument("--quick", action="store_true", help="3 tiny patients (smoke)")
    args = parser.parse_args(argv)
    if args.quick:
        config = SynthConfig(kind="sah", n_patients=3, seed=0, matrix=48, spacing_mm=4.8)
    else:
        config = SynthConfig(kind="sah", n_patients=30, seed=0)  # the demo's cohort
    result = run_benchmark(config, voxel_mm=config.anatomy_mm)
    write_results(args.out, result, markdown(result))
    return result


if __name__ == "__main__":
    main()
