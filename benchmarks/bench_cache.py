"""Time loading + Swin UNETR preprocessing of NIfTI cases without cache vs from a warm cache.

Makes its own inputs: ``--cases`` head phantoms (int16 HU with noise, a bone shell, a blood
blob as label) of ``--shape`` voxels at ``--spacing`` mm, gzip-compressed as clinical NIfTI
usually is. Then, in one run and on the same files, times per pass over all cases:

- ``no_cache``: ``load_ct`` + ``load_label`` + ``SwinPreprocess()`` (what every epoch costs now);
- ``cold_cache``: first ``get_or_compute`` (hash, load, preprocess, write);
- ``warm_cache``: ``get_or_compute`` with a new ``PreprocessCache`` object (a second run: memo
  read from disk, entry loaded);
- ``warm_same_object``: the same object again (a second epoch in one run).

Source files are read from the OS page cache in every pass after the first, which favours
``no_cache``; on a network file system the gap is larger. Writes ``--out`` (JSON) and a
Markdown table next to it (same name, ``.md``).

    python benchmarks/bench_cache.py --out bench_results/cache.json
    python benchmarks/bench_cache.py --quick --out /tmp/cache.json   # smoke run
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
from results_io import write_results

from sah.data.preprocess.cache import PreprocessCache
from sah.data.preprocess.pipelines import PreprocessedCase, SwinPreprocess
from sah.data.readers.ct import load_ct, load_label


def make_case(
    folder: Path, index: int, shape: Sequence[int], spacing: Sequence[float]
) -> tuple[Path, Path]:
    """Write one phantom head CT and its blood label as .nii.gz; return both paths."""
    rng = np.random.default_rng(index)
    spacing_arr = np.asarray(spacing, dtype=np.float64)
    centre = (np.asarray(shape) - 1) / 2.0
    axes = [(np.arange(n) - c) * s for n, c, s in zip(shape, centre, spacing_arr, strict=True)]
    x, y, z = np.meshgrid(*axes, indexing="ij", sparse=True)
    semi = np.array([75.0, 90.0, 85.0]) * rng.uniform(0.9, 1.1, size=3)
    radius = np.sqrt((x / semi[0]) ** 2 + (y / semi[1]) ** 2 + (z / semi[2]) ** 2)
    image = np.full(shape, -1000.0, dtype=np.float32)
    image[radius < 1.0] = 1200.0
    image[radius < 0.93] = 35.0
    blob = np.sqrt((x - 20.0) ** 2 + (y - 10.0) ** 2 + (z - 5.0) ** 2) < 18.0
    label = (blob & (radius < 0.93)).astype(np.uint8)
    image[label > 0] = 70.0
    image += rng.normal(0.0, 5.0, size=image.shape).astype(np.float32)
    affine = np.diag([*spacing_arr, 1.0])
    affine[:3, 3] = -centre * spacing_arr
    image_path = folder / f"case{index:03d}_ct.nii.gz"
    label_path = folder / f"case{index:03d}_label.nii.gz"
    nib.save(nib.Nifti1Image(np.rint(image).astype(np.int16), affine), image_path)
    nib.save(nib.Nifti1Image(label, affine), label_path)
    return image_path, label_path


def touch(case: PreprocessedCase) -> float:
    """Read every voxel, so that lazily loaded arrays would pay their I/O inside the timing."""
    return float(case.image.sum()) + float(case.label.sum())


def time_pass(run: Callable[[], None]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def run_benchmark(
    cases: int, shape: Sequence[int], spacing: Sequence[float], repeats: int, workdir: Path
) -> dict:
    data = workdir / "nifti"
    data.mkdir(parents=True, exist_ok=True)
    pairs = [make_case(data, i, shape, spacing) for i in range(cases)]
    pipeline = SwinPreprocess()
    root = workdir / "cache"

    def no_cache() -> None:
        for image_path, label_path in pairs:
            ct = load_ct(image_path)
            touch(pipeline(ct, load_label(label_path, like=ct)))

    def with_cache(cache: PreprocessCache) -> Callable[[], None]:
        def run() -> None:
            for image_path, label_path in pairs:
                touch(cache.get_or_compute(image_path, label_path, pipeline))

        return run

    no_cache()  # warm the OS page cache and imports, so no_cache is not penalised
    times: dict[str, list[float]] = {"no_cache": [], "warm_cache": [], "warm_same_object": []}
    cold = PreprocessCache(root)
    cold_s = time_pass(with_cache(cold))
    for _ in range(repeats):
        times["no_cache"].append(time_pass(no_cache))
        times["warm_cache"].append(time_pass(with_cache(PreprocessCache(root))))
        times["warm_same_object"].append(time_pass(with_cache(cold)))
    median = {name: statistics.median(values) for name, values in times.items()}
    out_case = pipeline(load_ct(pairs[0][0]))
    return {
        "benchmark": "preprocess_cache",
        "pipeline": {"name": pipeline.name, **pipeline.params()},
        "cases": cases,
        "input_shape": list(shape),
        "input_spacing_mm": list(spacing),
        "output_shape_case0": list(out_case.shape),
        "repeats": repeats,
        "seconds_per_pass": {"cold_cache": cold_s, **median},
        "all_passes_s": times,
        "ms_per_case": {
            name: 1000.0 * value / cases for name, value in {"cold_cache": cold_s, **median}.items()
        },
        "speedup_warm_vs_no_cache": median["no_cache"] / median["warm_cache"],
        "speedup_same_object_vs_no_cache": median["no_cache"] / median["warm_same_object"],
        "source_bytes": sum(p.stat().st_size for pair in pairs for p in pair),
        "cache_bytes": sum(p.stat().st_size for p in root.rglob("*") if p.is_file()),
        "cache_hits_after_cold": cold.stats.hits,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
    }


def markdown(result: dict) -> str:
    ms = result["ms_per_case"]
    shape = "x".join(str(n) for n in result["input_shape"])
    spacing = "x".join(f"{s:g}" for s in result["input_spacing_mm"])
    rows = [
        ("no cache (load + preprocess)", "no_cache"),
        ("cold cache (hash + load + preprocess + write)", "cold_cache"),
        ("warm cache, new cache object (second run)", "warm_cache"),
        ("warm cache, same object (second epoch)", "warm_same_object"),
    ]
    lines = [
        f"# Preprocessing cache: {result['cases']} cases of {shape} int16 at {spacing} mm, "
        f"Swin pipeline, median of {result['repeats']} passes",
        "",
        "| pass | s per pass | ms per case |",
        "|---|---:|---:|",
    ]
    for title, key in rows:
        lines.append(f"| {title} | {result['seconds_per_pass'][key]:.3f} | {ms[key]:.1f} |")
    lines += [
        "",
        f"Speed-up, warm cache vs no cache: **{result['speedup_warm_vs_no_cache']:.1f}x** "
        f"(same object: {result['speedup_same_object_vs_no_cache']:.1f}x). "
        f"Sources {result['source_bytes'] / 1e6:.1f} MB, "
        f"cache {result['cache_bytes'] / 1e6:.1f} MB.",
        "",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("bench_results/cache.json"))
    parser.add_argument("--cases", type=int, default=4)
    parser.add_argument("--shape", type=int, nargs=3, default=(512, 512, 40))
    parser.add_argument("--spacing", type=float, nargs=3, default=(0.45, 0.45, 5.0))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temporary folder")
    parser.add_argument("--quick", action="store_true", help="2 tiny cases, 1 repeat (smoke)")
    args = parser.parse_args(argv)
    if args.quick:
        args.cases, args.shape, args.spacing, args.repeats = 2, (48, 48, 10), (4.0, 4.0, 5.0), 1
    with tempfile.TemporaryDirectory(prefix="sah-bench-cache-") as tmp:
        workdir = args.workdir or Path(tmp)
        result = run_benchmark(args.cases, args.shape, args.spacing, args.repeats, workdir)
    result["command"] = " ".join(["python", "benchmarks/bench_cache.py", *(argv or sys.argv[1:])])
    write_results(args.out, result, markdown(result))
    return result


if __name__ == "__main__":
    main()
