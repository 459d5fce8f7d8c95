"""Training-step speed of every adapter method against full fine-tuning and HF PEFT.

    python benchmarks/bench_adapters.py --out bench_results/adapters.json [--quick]

On the lab's 2D segmentation net (``sah.models.mv_unet.MVUnet``) with a 2x1x256x256 batch, 2
threads: seconds per training step (forward, backward, Adam step) for each method at ranks 1,
4, 16, 64, full fine-tuning, and PEFT's conv LoRA / DoRA on the non-dilated convs (where PEFT
is correct) next to ours on the same layers; then merged inference against the base model.
Every contender runs once per round, rounds interleaved, so load from other processes hits all
alike; the tables report the median over rounds (and the minimum). Also writes a Markdown table
next to the JSON. ``--quick`` is a seconds-long smoke run on a tiny net.

Fairness notes, also written into the results: frozen norm layers keep their running
statistics (eval behaviour) in every adapter run, ours and PEFT's alike; full fine-tuning
trains them (train behaviour). Denormals are flushed for every contender (a randomly
initialised net otherwise produces denormal activations that slow any CPU code path).
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from results_io import write_results

from sah.adapters import (
    AdapterConfig,
    inject,
    merge,
    merge_and_unload,
    set_compute_path,
)
from sah.models.mv_unet import MVUnet

LORA = ["lora_c", "conv_lora", "cp_lora"]
DORA = ["dora_c", "conv_dora", "cp_dora"]


# -- the net -----------------------------------------------------------------------------------
def build_net(features: int) -> tuple[nn.Module, str]:
    return MVUnet(features=features), "sah.models.mv_unet.MVUnet"


def non_dilated_convs(model: nn.Module) -> list[str]:
    return [
        n
        for n, m in model.named_modules()
        if type(m) is nn.Conv2d and m.dilation == (1, 1) and m.groups == 1
    ]


def _freeze_norm_statistics(model: nn.Module) -> None:
    """The frozen-norm behaviour of sah.adapters, applied to PEFT's models too."""

    def hook(module, args):
        module.training = False

    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._NormBase) and not m.weight.requires_grad:
            m.register_forward_pre_hook(hook)


# -- contenders --------------------------------------------------------------------------------
@dataclass
class Contender:
    key: str
    kind: str  # full, ours, peft
    method: str
    rank: int | None
    layers: str  # "all" or "non-dilated"
    path: str = "auto"
    trainable: int = 0
    step: Callable[[], None] | None = field(default=None, repr=False)
    times: list[float] = field(default_factory=list)


def _step_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[Callable, int]:
    params = [p for p in model.parameters() if p.requires_grad]
    model.train()
    if not params:  # the floor: everything frozen, gradients flow to the input only
        x_grad = x.detach().clone().requires_grad_()  # its own copy: x stays grad-free

        def floor_step() -> None:
            loss = F.binary_cross_entropy_with_logits(model(x_grad), y)
            loss.backward()
            x_grad.grad = None

        return floor_step, 0
    optimiser = torch.optim.Adam(params, lr=1e-4)

    def step() -> None:
        loss = F.binary_cross_entropy_with_logits(model(x), y)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()

    return step, sum(p.numel() for p in params)


def build_contenders(base, x, y, ranks, methods, with_peft, paths, floor) -> list[Contender]:
    out: list[Contender] = []

    def add(c: Contender, model: nn.Module) -> None:
        c.step, c.trainable = _step_fn(model, x, y)
        out.append(c)

    model = copy.deepcopy(base)
    inject(model, AdapterConfig("full", None))
    add(Contender("full", "full", "full", None, "all"), model)
    if floor:
        model = copy.deepcopy(base)
        inject(model, AdapterConfig("none", None))
        add(Contender("floor", "floor", "none", None, "all"), model)
    for method in methods:
        for rank in ranks:
            for path in paths:
                model = copy.deepcopy(base)
                inject(model, AdapterConfig(method, rank))
                set_compute_path(model, path)
                key = f"{method}:r{rank}" + ("" if path == "auto" else f":{path}")
                add(Contender(key, "ours", method, rank, "all", path), model)
    if not with_peft:
        return out
    try:
        import peft
    except ImportError:
        print("peft is not installed (pip install -e .[dev]): PEFT rows skipped")
        return out
    names = non_dilated_convs(base)
    targets = "^(" + "|".join(n.replace(".", r"\.") for n in names) + ")$"
    for rank in ranks:
        for dora, ours_method in ((False, "conv_lora"), (True, "conv_dora")):
            model = copy.deepcopy(base)
            config = peft.LoraConfig(r=rank, lora_alpha=rank, target_modules=names, use_dora=dora)
            model = peft.inject_adapter_in_model(config, model)
            _freeze_norm_statistics(model)
            label = "peft_dora" if dora else "peft_lora"
            add(Contender(f"{label}:r{rank}", "peft", label, rank, "non-dilated"), model)
            model = copy.deepcopy(base)
            inject(model, AdapterConfig(ours_method, rank, target=targets))
            add(
                Contender(f"{ours_method}:r{rank}:nd", "ours", ours_method, rank, "non-dilated"),
                model,
            )
    return out


def time_rounds(contenders: list[Contender], warmup: int, rounds: int) -> None:
    """Warm up, then time one step of every contender per round, in a shuffled order."""
    for c in contenders:
        for _ in range(warmup):
            c.step()
    order = list(contenders)
    shuffle = random.Random(0).shuffle
    for k in range(rounds):
        shuffle(order)
        for c in order:
            start = time.perf_counter()
            c.step()
            c.times.append(time.perf_counter() - start)
        print(f"round {k + 1}/{rounds} done", flush=True)


def time_inference(base: nn.Module, x: torch.Tensor, rounds: int) -> dict[str, list[float]]:
    """Base model vs merged adapters (wrapped) vs merge_and_unload, eval mode, no grad."""
    models = {"base": copy.deepcopy(base).eval()}
    merged = copy.deepcopy(base)
    inject(merged, AdapterConfig("cp_dora", 16))
    merge(merged)
    models["merged cp_dora r16"] = merged.eval()
    unloaded = copy.deepcopy(base)
    inject(unloaded, AdapterConfig("conv_dora", 16))
    models["merge_and_unload conv_dora r16"] = merge_and_unload(unloaded).eval()
    times: dict[str, list[float]] = {k: [] for k in models}
    with torch.no_grad():
        for m in models.values():
            m(x)
        for _ in range(rounds):
            for key, m in models.items():
                start = time.perf_counter()
                m(x)
                times[key].append(time.perf_counter() - start)
    return times


# -- report ------------------------------------------------------------------------------------
def summarise(contenders, inference, ranks) -> dict:
    med = {c.key: statistics.median(c.times) for c in contenders}
    low = {c.key: min(c.times) for c in contenders}
    full = med["full"]
    rows = []
    for c in contenders:
        row = {
            "key": c.key,
            "kind": c.kind,
            "method": c.method,
            "rank": c.rank,
            "layers": c.layers,
            "path": c.path,
            "trainable_parameters": c.trainable,
            "seconds": c.times,
            "median_s": med[c.key],
            "min_s": low[c.key],
            "vs_full": med[c.key] / full,
            "vs_full_min": low[c.key] / low["full"],
        }
        if c.kind == "ours" and c.layers == "non-dilated":
            ref = ("peft_dora" if c.method == "conv_dora" else "peft_lora") + f":r{c.rank}"
            if ref in med:
                row["vs_peft"] = med[c.key] / med[ref]
                row["vs_peft_min"] = low[c.key] / low[ref]
        rows.append(row)
    inf = {
        k: {"seconds": v, "median_s": statistics.median(v), "min_s": min(v)}
        for k, v in inference.items()
    }
    for v in inf.values():
        v["vs_base"] = v["median_s"] / inf["base"]["median_s"]
        v["vs_base_min"] = v["min_s"] / inf["base"]["min_s"]
    return {"rows": rows, "inference": inf, "targets": check_targets(rows, inf)}


def check_targets(rows, inference) -> list[dict]:
    """Each target on the median ratio and on the best-of-rounds (min) ratio."""
    checks = []

    def add(name, key, value, value_min, limit):
        checks.append(
            {
                "target": name,
                "key": key,
                "value": value,
                "value_min": value_min,
                "limit": limit,
                "holds": value <= limit,
                "holds_min": value_min <= limit,
            }
        )

    for r in rows:
        if r["kind"] != "ours" or r["path"] != "auto":
            continue
        if r["layers"] == "all":
            if r["method"] in LORA and r["rank"] <= 8:
                name = "LoRA family, rank <= 8: <= 0.7x full FT"
                add(name, r["key"], r["vs_full"], r["vs_full_min"], 0.7)
            name = "any method, any rank: <= 1.1x full FT"
            add(name, r["key"], r["vs_full"], r["vs_full_min"], 1.1)
        elif "vs_peft" in r:
            limit = 0.7 if r["method"] == "conv_lora" else 0.8
            name = f"{r['method']} <= {limit}x PEFT (same layers)"
            add(name, r["key"], r["vs_peft"], r["vs_peft_min"], limit)
    for key, v in inference.items():
        if key != "base":
            add("merged inference <= 1.02x base", key, v["vs_base"], v["vs_base_min"], 1.02)
    return checks


def markdown(payload: dict) -> str:
    s = payload["summary"]
    env = payload["environment"]
    lines = [
        "# Adapter training-step benchmark",
        "",
        f"Net: {env['net']}, batch {env['input']}, {env['threads']} threads, "
        f"torch {env['torch']}, peft {env['peft']}, CPU: {env['cpu']}. "
        f"Load average before/after: {env['load_before']} / {env['load_after']}. "
        f"{env['rounds']} timed rounds (interleaved, shuffled) after {env['warmup']} warm-up "
        "steps; median seconds per step, in brackets the minimum over rounds (the estimate "
        "least affected by other processes on a shared CPU).",
        "",
        "| contender | layers | path | trainable | s/step | vs full FT | vs PEFT |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for r in s["rows"]:
        vs_peft = f"{r['vs_peft']:.2f} ({r['vs_peft_min']:.2f})" if "vs_peft" in r else ""
        lines.append(
            f"| {r['key']} | {r['layers']} | {r['path']} | {r['trainable_parameters']:,} | "
            f"{r['median_s']:.3f} ({r['min_s']:.3f}) | {r['vs_full']:.2f} "
            f"({r['vs_full_min']:.2f}) | {vs_peft} |"
        )
    lines += ["", "| inference (eval, no grad) | s/forward | vs base |", "|---|---:|---:|"]
    for key, v in s["inference"].items():
        lines.append(
            f"| {key} | {v['median_s']:.4f} ({v['min_s']:.4f}) | "
            f"{v['vs_base']:.3f} ({v['vs_base_min']:.3f}) |"
        )
    lines += [
        "",
        "| target | contender | ratio, median (min) | limit | holds: median / min |",
        "|---|---|---:|---:|---|",
    ]
    for t in s["targets"]:
        marks = " / ".join("yes" if ok else "**no**" for ok in (t["holds"], t["holds_min"]))
        lines.append(
            f"| {t['target']} | {t['key']} | {t['value']:.2f} ({t['value_min']:.2f}) | "
            f"{t['limit']} | {marks} |"
        )
    lines += ["", *[f"- {n}" for n in payload["notes"]], ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("bench_results/adapters.json"))
    parser.add_argument("--quick", action="store_true", help="tiny smoke run (seconds)")
    parser.add_argument("--threads", type=int, default=None, help="default 2 (1 with --quick)")
    parser.add_argument("--rounds", type=int, default=None, help="timed steps per contender")
    parser.add_argument("--warmup", type=int, default=None)
    parser.add_argument("--ranks", type=int, nargs="+", default=None)
    parser.add_argument("--methods", nargs="+", default=LORA + DORA)
    parser.add_argument(
        "--paths",
        nargs="+",
        default=["auto"],
        choices=["auto", "weight", "lowrank", "lowrank_taps"],
        help="compute paths to time for our methods (weight/lowrank validate the cost model)",
    )
    parser.add_argument("--no-peft", action="store_true")
    parser.add_argument(
        "--floor",
        action="store_true",
        help="also time a step with everything frozen (input gradients only): the least any "
        "adapter with frozen base and norms can cost",
    )
    args = parser.parse_args(argv)

    quick = args.quick
    torch.set_num_threads(args.threads or (1 if quick else 2))
    torch.set_flush_denormal(True)
    torch.manual_seed(0)
    size, features = (32, 4) if quick else (256, 32)
    ranks = args.ranks or ([2] if quick else [1, 4, 16, 64])
    rounds = args.rounds or (1 if quick else 7)
    warmup = args.warmup if args.warmup is not None else (0 if quick else 2)

    base, net_name = build_net(features)
    x = torch.randn(2, 1, size, size)
    y = (torch.rand(2, 1, size, size) > 0.5).float()
    with torch.no_grad():  # settle BN statistics, as in a pre-trained net
        base.train()
        for _ in range(3):
            base(x)
    base.eval()

    load_before = os.getloadavg()
    contenders = build_contenders(
        base, x, y, ranks, args.methods, not args.no_peft, args.paths, args.floor
    )
    print(f"{len(contenders)} contenders, {warmup} warm-up + {rounds} timed steps each")
    time_rounds(contenders, warmup, rounds)
    inference = time_inference(base, x, max(rounds, 3))
    load_after = os.getloadavg()
    try:
        import peft

        peft_version = peft.__version__
    except ImportError:
        peft_version = "absent"
    payload = {
        "environment": {
            "net": net_name,
            "parameters": sum(p.numel() for p in base.parameters()),
            "input": list(x.shape),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "peft": peft_version,
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "load_before": [round(v, 2) for v in load_before],
            "load_after": [round(v, 2) for v in load_after],
            "rounds": rounds,
            "warmup": warmup,
            "quick": quick,
        },
        "notes": [
            "full FT: every parameter trainable, norm layers in train mode; adapters (ours and "
            "PEFT's): base and norm layers frozen, norms keep their running statistics.",
            "PEFT rows adapt only the non-dilated Conv2d layers (PEFT's conv LoRA ignores "
            "dilation); the ':nd' rows are ours on exactly those layers.",
            "path: auto = per-layer choice of the cost model in sah/adapters/pathcost.py.",
            "floor (with --floor): all weights and norms frozen, gradients to the input only.",
        ],
        "summary": summarise(contenders, inference, ranks),
    }
    write_results(args.out, payload, markdown(payload))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
