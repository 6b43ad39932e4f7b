"""Step time and peak memory of the DARTS-family search super-network, and of DARTS_V2 retraining, on CPU.

Why: A-DARTS claims its activation search costs little over DARTS (factorized <= 1.25x fixed ReLU) and
PC-DARTS claims K=4 partial channels cut a search step to <= 0.45x. This script checks both claims, and the
absolute budget (a DARTS step <= 10 s and <= 5 GB on this machine class), against numbers measured in the
same run, with the original DARTS / PC-DARTS code's figures printed for context.

What: for each search mode, the C=16, 8-cell super-network (batch 64, 3x32x32, 10 classes, first order,
fp32) runs 1 warm-up step and N timed steps of Algorithm 1; each step is timed as the weight step plus the
architecture step (the one shared alpha/beta validation pass). Each mode runs in a fresh subprocess
(``--single-mode``) so its peak resident set size (``ru_maxrss``) is its own; the report gives that peak and
the peak minus the RSS just before the first step; a mode killed for memory is reported as failed.
``retrain`` times forward+backward of DARTS_V2 (C=36, 20 cells, auxiliary head, batch 32, drop path 0.2).
``--profile [MODE]`` prints a torch.profiler table of one search step (default fixed:relu) and the bytes
autograd saves for backward in one forward pass, grouped by the candidate operator and module saving them.

Usage: python benchmarks/bench_darts_search.py [--steps N] [--modes ...] [--json out.json] [--profile [MODE]]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

# torch is imported only inside the measuring subprocess, so the parent stays small and a child's
# ru_maxrss (which Linux carries over from the parent's memory image across exec) is the child's own.

# "+recompute": the memory-saving option (each cell recomputed in backward)
SEARCH_MODES = ("fixed:relu", "factorized", "pc_darts", "fixed:relu+recompute", "factorized+recompute",
                "non_factorized+recompute", "non_factorized")
ALL_MODES = (*SEARCH_MODES, "retrain")
DEFAULT_MODES = ("fixed:relu", "factorized", "pc_darts", "fixed:relu+recompute", "factorized+recompute", "retrain")
GB = 1e9
# (step s, weight s, arch s, peak GB) of the original DARTS / PC-DARTS code on this machine class
REFERENCE = {"fixed:relu": (21.3, 10.6, 10.6, 10.8), "pc_darts": (8.3, None, None, 4.2)}
RETRAIN_REFERENCE_S = 2.2


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def build_search(mode: str, batch: int = 64) -> tuple[Any, Any, tuple[Any, ...]]:
    import torch

    from optuna_nas.darts.space import A_DARTS_SPACE, DARTS_SPACE, ActivationMode
    from optuna_nas.darts.supernet import SearchNetwork, SuperNetConfig
    from optuna_nas.darts.trilevel import TriLevelOptimizer

    torch.manual_seed(0)
    recompute = mode.endswith("+recompute")
    mode = mode.removesuffix("+recompute")
    pc = mode == "pc_darts"
    activation = "fixed:relu" if pc else mode
    space = DARTS_SPACE if activation.startswith("fixed") else A_DARTS_SPACE
    config = SuperNetConfig(space, ActivationMode.parse(activation), channels=16, layers=8, num_classes=10,
                            in_channels=3, partial_channels=4 if pc else 1, recompute_cells=recompute)
    # the library's default layout (SearchSettings.channels_last)
    net = SearchNetwork(config).train().to(memory_format=torch.channels_last)

    def adam(params: list[torch.nn.Parameter]) -> torch.optim.Adam:
        return torch.optim.Adam(params, lr=6e-4, betas=(0.5, 0.999), weight_decay=1e-3)

    w_opt = torch.optim.SGD(net.weight_parameters(), 0.05, momentum=0.9, weight_decay=3e-4)
    b_opt = adam(net.beta_parameters()) if net.beta_parameters() else None
    opt = TriLevelOptimizer(net, w_opt, adam(net.alpha_parameters()), b_opt, grad_clip=5.0, unrolled=False,
                            beta_pass="shared", amp=False)
    images = [torch.randn(batch, 3, 32, 32).contiguous(memory_format=torch.channels_last) for _ in range(2)]
    data = (images[0], torch.randint(0, 10, (batch,)), images[1], torch.randint(0, 10, (batch,)))
    return net, opt, data


def search_step(opt: Any, data: tuple[Any, ...]) -> tuple[float, float]:
    """One Algorithm 1 iteration (shared beta pass, as ``TriLevelOptimizer.step``): (weight s, arch s)."""
    t0 = time.perf_counter()
    opt.weight_step(data[0], data[1])
    t1 = time.perf_counter()
    opt._arch_step(opt.alphas + opt.betas, *data)
    return t1 - t0, time.perf_counter() - t1


def build_retrain() -> tuple[Any, Any]:
    import torch

    from optuna_nas.darts.genotypes import BUILTIN_GENOTYPES
    from optuna_nas.darts.model import network_cifar

    torch.manual_seed(0)
    net = network_cifar(BUILTIN_GENOTYPES["DARTS_V2"], channels=36, num_classes=10, layers=20, auxiliary=True)
    net.train().to(memory_format=torch.channels_last)  # TrainSettings.channels_last
    net.set_drop_path(0.2)
    criterion = torch.nn.CrossEntropyLoss()
    x, y = torch.randn(32, 3, 32, 32).contiguous(memory_format=torch.channels_last), torch.randint(0, 10, (32,))

    def fwd_bwd() -> None:
        net.zero_grad(set_to_none=True)
        logits, aux = net(x)
        (criterion(logits, y) + 0.4 * criterion(aux, y)).backward()

    return net, fwd_bwd


def measure(mode: str, steps: int) -> dict[str, Any]:
    """Run in a fresh process: 1 warm-up + ``steps`` timed steps of one mode."""
    if mode == "retrain":
        _, fwd_bwd = build_retrain()
        before = rss_bytes()
        times = []
        for i in range(steps + 1):
            t0 = time.perf_counter()
            fwd_bwd()
            if i:
                times.append(time.perf_counter() - t0)
        out: dict[str, Any] = {"step_s": statistics.median(times), "step_all_s": times}
    else:
        _, opt, data = build_search(mode)
        before = rss_bytes()
        timed = [search_step(opt, data) for _ in range(steps + 1)][1:]
        out = {"step_s": statistics.median(w + a for w, a in timed),
               "weight_s": statistics.median(w for w, _ in timed),
               "arch_s": statistics.median(a for _, a in timed), "step_all_s": [w + a for w, a in timed]}
    peak = peak_bytes()
    return out | {"mode": mode, "steps": steps, "rss_before_gb": before / GB, "peak_gb": peak / GB,
                  "peak_delta_gb": (peak - before) / GB, "load_avg": os.getloadavg()[0]}


def run_child(mode: str, steps: int) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--single-mode", mode, "--steps", str(steps)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode:  # e.g. -9: killed by the kernel's OOM killer
        why = "killed (SIGKILL: out of memory?)" if done.returncode == -9 else f"exit {done.returncode}"
        print(f"{mode} failed: {why}\n{done.stderr[-2000:]}", file=sys.stderr)
        return {"mode": mode, "error": why}
    return json.loads(done.stdout.strip().splitlines()[-1])


def verdict(ok: bool) -> str:
    return "MET" if ok else "MISSED"


def report(results: dict[str, dict[str, Any]]) -> None:
    base = results.get("fixed:relu")
    base = None if base is None or "error" in base else base
    print(f"{'mode':<26}{'step s':>8}{'weight s':>10}{'arch s':>8}{'x relu':>8}{'peak GB':>9}{'dpeak GB':>10}"
          f"{'mem x relu':>11}  target / reference")
    for mode, r in results.items():
        if mode == "retrain":
            continue
        if "error" in r:
            print(f"{mode:<26}FAILED: {r['error']}")
            continue
        ratio = r["step_s"] / base["step_s"] if base else float("nan")
        mem = r["peak_delta_gb"] / base["peak_delta_gb"] if base else float("nan")
        notes = []
        if mode.startswith("fixed:relu"):
            notes.append(f"<=10 s {verdict(r['step_s'] <= 10)}, <=5 GB {verdict(r['peak_gb'] <= 5)}")
        if mode == "factorized" and base:
            notes.append(f"<=1.25x {verdict(ratio <= 1.25)}")
        if mode == "pc_darts" and base:
            notes.append(f"<=0.45x {verdict(ratio <= 0.45)}")
        if mode in REFERENCE:
            s, w, a, gb = REFERENCE[mode]
            split = f" (w {w} / a {a})" if w else ""
            notes.append(f"ref {s} s{split}, {gb} GB")
        print(f"{mode:<26}{r['step_s']:>8.2f}{r['weight_s']:>10.2f}{r['arch_s']:>8.2f}{ratio:>8.2f}"
              f"{r['peak_gb']:>9.2f}{r['peak_delta_gb']:>10.2f}{mem:>11.2f}  {'; '.join(notes)}")
    if "step_s" in results.get("retrain", {}):
        r = results["retrain"]
        print(f"retrain DARTS_V2 fwd+bwd (C=36, 20 cells, aux, batch 32): {r['step_s']:.2f} s "
              f"(ref {RETRAIN_REFERENCE_S} s), peak {r['peak_gb']:.2f} GB")
    loads = ", ".join(f"{m} {r['load_avg']:.1f}" for m, r in results.items() if "load_avg" in r)
    print(f"1-min load average at the end of each mode (2 cores): {loads}")


def profile(mode: str) -> None:
    """torch.profiler of one search step, then the bytes saved for backward, by the op saving them."""
    import torch
    from torch.profiler import ProfilerActivity

    _, opt, data = build_search(mode)
    search_step(opt, data)
    with torch.profiler.profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        search_step(opt, data)
    table = prof.key_averages()
    print(table.table(sort_by="self_cpu_time_total", row_limit=15, max_name_column_width=40))
    print(table.table(sort_by="self_cpu_memory_usage", row_limit=10, max_name_column_width=40))

    net = opt.net
    labels = {m: type(m).__name__ for m in net.modules()}
    for edge in (m for m in net.modules() if type(m).__name__ == "MixedEdge"):
        labels[edge] = "edge mixing"  # what an edge saves outside any sub-module (weights, folded norms)
        for op, cand in zip(edge.ops, edge.candidates, strict=True):
            labels |= {m: f"{cand.op} / {type(m).__name__}" for m in op.modules()}
        if edge.activation is not None:
            labels |= {m: f"edge activation / {type(m).__name__}" for m in edge.activation.modules()}
    stack: list[str] = []
    handles = [m.register_forward_pre_hook(lambda m, _: stack.append(labels[m])) for m in net.modules()]
    handles += [m.register_forward_hook(lambda *_: stack.pop() and None) for m in net.modules()]
    saved: dict[str, int] = defaultdict(int)
    seen: set[int] = set()

    def pack(t: torch.Tensor) -> torch.Tensor:
        ptr = t.untyped_storage().data_ptr()
        if ptr not in seen:  # count each buffer once, as memory does
            seen.add(ptr)
            saved[stack[-1] if stack else "-"] += t.untyped_storage().nbytes()
        return t

    x, y = data[0], data[1]
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = opt.criterion(net(x), y)
    for h in handles:
        h.remove()
    print(f"saved for backward by one forward (batch {len(y)}): {sum(saved.values()) / GB:.2f} GB")
    for name, nbytes in sorted(saved.items(), key=lambda kv: -kv[1])[:12]:
        print(f"  {name:<50}{nbytes / GB:>8.3f} GB")
    del loss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3, help="timed steps per mode, after 1 warm-up step")
    parser.add_argument("--modes", nargs="+", choices=ALL_MODES, default=list(DEFAULT_MODES),
                        help="non_factorized needs the memory-saving option to fit in 24 GB")
    parser.add_argument("--json", type=Path, help="write all results here")
    parser.add_argument("--single-mode", choices=ALL_MODES, help=argparse.SUPPRESS)
    parser.add_argument("--profile", nargs="?", const="fixed:relu", choices=SEARCH_MODES, metavar="MODE",
                        help="profile one search step of MODE (default fixed:relu) instead")
    args = parser.parse_args()
    if args.single_mode:
        print(json.dumps(measure(args.single_mode, args.steps)))
        return
    if args.profile:
        profile(args.profile)
        return
    modes = sorted(args.modes, key=lambda m: m != "fixed:relu")  # the baseline first
    results = {}
    for mode in modes:
        results[mode] = run_child(mode, args.steps)
        r = results[mode]
        if "error" not in r:
            print(f"[{mode}] {r['step_s']:.2f} s/step, peak {r['peak_gb']:.2f} GB", file=sys.stderr)
    report(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
