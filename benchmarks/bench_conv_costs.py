"""What a conv LoRA's factor gradients cost next to the full weight gradient they replace.

An adapter step of a frozen layer always pays the forward and the input gradient; full
fine-tuning adds the weight gradient. A low-rank gradient path (``sah/adapters/lowrank.py``)
adds instead the thin in-stage forward (c_in -> r), its weight gradient, and two channel
mixes with the output gradient; computing the r extra channels inside the main forward
(c_out + r outputs) is the fused alternative. Times each op side by side on the 3x3 convs of
the multi-view Unet's three resolutions (batch 2), median of interleaved repeats, and prints
``low-rank extra / weight-gradient extra``: below 1 the low-rank path saves time, and the
LoRA speed target of 0.7x full fine-tuning needs it far below 1. Writes ``--out`` (JSON) and
a Markdown table next to it.

    python benchmarks/bench_conv_costs.py --out bench_results/conv_costs.json
    python benchmarks/bench_conv_costs.py --quick --out /tmp/conv_costs.json   # smoke run
"""

from __future__ import annotations

import argparse
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from results_io import write_results

from sah.adapters.lowrank import _mix, _mix_weight_grad

# (input channels, output channels, side): the MVUnet's 3x3 convs at its three levels.
LAYERS = ((32, 32, 256), (64, 32, 128), (96, 32, 64))


def _backward(grad, x, weight, input_grad: bool, weight_grad: bool):
    return torch.ops.aten.convolution_backward(
        grad, x, weight, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1,
        [input_grad, weight_grad, False],
    )  # fmt: skip


def ops_for(c_in: int, c_out: int, side: int, rank: int, batch: int) -> dict[str, Callable]:
    """The timed operations of one layer; all tensors made once, up front."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, c_in, side, side, generator=gen)
    w = torch.randn(c_out, c_in, 3, 3, generator=gen)
    w_thin = torch.randn(rank, c_in, 3, 3, generator=gen)
    w_fused = torch.cat([w, w_thin])
    gy = torch.randn(batch, c_out, side, side, generator=gen)
    gz = torch.randn(batch, rank, side, side, generator=gen)
    out_factor = torch.randn(1, c_out, rank, generator=gen)
    return {
        "forward": lambda: F.conv2d(x, w, padding=1),
        "input_grad": lambda: _backward(gy, x, w, True, False),
        "input_and_weight_grad": lambda: _backward(gy, x, w, True, True),
        "thin_forward": lambda: F.conv2d(x, w_thin, padding=1),
        "thin_weight_grad": lambda: _backward(gz, x, w_thin, False, True),
        "mixes": lambda: (_mix_weight_grad(gy, gz, 1), _mix(out_factor.transpose(1, 2), gy)),
        "fused_forward": lambda: F.conv2d(x, w_fused, padding=1),
    }


def time_ops(ops: dict[str, Callable], repeats: int) -> dict[str, float]:
    """Median milliseconds per op; ops interleaved in a shuffled order each repeat."""
    for op in ops.values():
        op()
    times: dict[str, list[float]] = {k: [] for k in ops}
    order = list(ops)
    shuffle = random.Random(0).shuffle
    for _ in range(repeats):
        shuffle(order)
        for key in order:
            start = time.perf_counter()
            ops[key]()
            times[key].append((time.perf_counter() - start) * 1000)
    return {k: statistics.median(v) for k, v in times.items()}


def summarise(ms: dict[str, float]) -> dict[str, float]:
    weight_extra = ms["input_and_weight_grad"] - ms["input_grad"]
    lowrank_extra = ms["thin_forward"] + ms["thin_weight_grad"] + ms["mixes"]
    fused_extra = ms["fused_forward"] - ms["forward"] + ms["thin_weight_grad"] + ms["mixes"]
    per_weight = 1.0 / weight_extra if weight_extra > 0 else float("nan")  # timer noise
    return {
        "weight_grad_extra_ms": weight_extra,
        "lowrank_extra_ms": lowrank_extra,
        "fused_lowrank_extra_ms": fused_extra,
        "lowrank_vs_weight": lowrank_extra * per_weight,
        "fused_vs_weight": fused_extra * per_weight,
    }


def run_benchmark(layers, ranks, batch: int, repeats: int) -> dict:
    rows = []
    for c_in, c_out, side in layers:
        for rank in ranks:
            ms = time_ops(ops_for(c_in, c_out, side, rank, batch), repeats)
            rows.append({"c_in": c_in, "c_out": c_out, "side": side, "rank": rank, "ms": ms,
                         **summarise(ms)})  # fmt: skip
            print(f"{c_in}->{c_out} at {side}^2, r{rank}: done", flush=True)
    return {
        "threads": torch.get_num_threads(),
        "batch": batch,
        "repeats": repeats,
        "torch": torch.__version__,
        "cpu": platform.machine(),
        "rows": rows,
    }


def markdown(result: dict) -> str:
    lines = [
        "# Conv LoRA factor gradients against the full weight gradient",
        "",
        f"3x3 convs, batch {result['batch']}, {result['threads']} threads, torch "
        f"{result['torch']}, CPU {result['cpu']}; median ms of {result['repeats']} interleaved "
        "repeats. `weight` = what full fine-tuning adds to a frozen step (input + weight "
        "gradient minus input gradient); `low-rank` = thin forward + thin weight gradient + "
        "mixes; `fused` = the r channels computed in the main forward instead.",
        "",
        "| layer | rank | forward | input grad | thin fwd | thin weight grad | mixes "
        "| fused fwd | weight extra | low-rank extra | fused extra | low-rank / weight "
        "| fused / weight |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        ms = r["ms"]
        lines.append(
            f"| {r['c_in']}->{r['c_out']} at {r['side']}^2 | {r['rank']} | {ms['forward']:.1f} "
            f"| {ms['input_grad']:.1f} | {ms['thin_forward']:.1f} | {ms['thin_weight_grad']:.1f} "
            f"| {ms['mixes']:.1f} | {ms['fused_forward']:.1f} | {r['weight_grad_extra_ms']:.1f} "
            f"| {r['lowrank_extra_ms']:.1f} | {r['fused_lowrank_extra_ms']:.1f} "
            f"| {r['lowrank_vs_weight']:.2f} | {r['fused_vs_weight']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("bench_results/conv_costs.json"))
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="tiny layers, 2 repeats (smoke)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1 if args.quick else args.threads)
    layers = ((8, 8, 16),) if args.quick else LAYERS
    result = run_benchmark(layers, args.ranks, 2, 2 if args.quick else args.repeats)
    result["command"] = " ".join(
        ["python", "benchmarks/bench_conv_costs.py", *(argv or sys.argv[1:])]
    )
    write_results(args.out, result, markdown(result))
    return result


if __name__ == "__main__":
    main()
