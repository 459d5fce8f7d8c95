"""`sah-synth`: generate (or find in the cache) a synthetic cohort and print its manifest path.

    sah-synth --kind sah --n 30 --seed 0 [--matrix 128 --spacing 1.8] [--cache-dir DIR]
              [--preview OUT.png]

The default 128x128 at 1.8 mm is the CPU size; ``--matrix 512 --spacing 0.45`` is clinical.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sah.cli.quiet import quiet
from sah.errors import SahError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sah-synth",
        description="Generate a synthetic head-CT cohort (NIfTI + manifest) into the cache.",
    )
    parser.add_argument(
        "--kind",
        choices=("sah", "tbi"),
        default="sah",
        help="aneurysmal SAH (fine-tuning) or traumatic (pre-training) cohort",
    )
    parser.add_argument("--n", type=int, default=None, help="patients (default 30 sah, 124 tbi)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--matrix", type=int, default=128, help="in-plane size (default 128)")
    parser.add_argument("--spacing", type=float, default=1.8, help="in-plane mm (default 1.8)")
    parser.add_argument(
        "--slice-mm",
        type=float,
        nargs=2,
        default=(2.5, 5.0),
        metavar=("MIN", "MAX"),
        help="slice thickness range (default 2.5 5)",
    )
    parser.add_argument(
        "--cache-dir",
        default=None,
        help="cache root (default $SAH_CACHE_DIR, else ~/.cache/sah: the folder sah-train uses)",
    )
    parser.add_argument("--workers", type=int, default=None, help="processes (default 2)")
    parser.add_argument(
        "--preview",
        default=None,
        metavar="OUT.png",
        help="also write a PNG of a few patients with the blood outlined",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    with quiet():
        return synth(argv)


def synth(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        from sah.data.synthetic import SynthConfig, ensure_cohort, write_preview

        config = SynthConfig(
            kind=args.kind,
            n_patients=args.n,
            seed=args.seed,
            matrix=args.matrix,
            spacing_mm=args.spacing,
            slice_mm=tuple(args.slice_mm),
        )
        manifest = ensure_cohort(config, cache_root=args.cache_dir, workers=args.workers)
        if args.preview:
            preview = write_preview(manifest, args.preview)
            print(f"preview: {Path(preview).resolve()}", file=sys.stderr)
    except SahError as err:
        print(f"sah-synth: {err}", file=sys.stderr)
        return 2
    print(manifest)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
