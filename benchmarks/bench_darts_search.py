"""CPU step time and peak memory of the DARTS-family search step and DARTS_V2 retraining, ours beside the original code.

Why: the targets, each against figures measured in the same run: our DARTS step <= 0.40x the original code's and
peak <= 5 GB; our PC-DARTS K=4 step <= 0.50x the original PC-DARTS step and <= 0.40x our own DARTS step; A-DARTS's
factorized activation search <= 1.20x our fixed ReLU; DARTS_V2 retraining forward+backward <= 0.65x the original.

What: for each search mode, the C=16, 8-cell super-network (batch 64, 3x32x32, 10 classes, first order, fp32)
runs 1 warm-up step and N timed steps of Algorithm 1; each step is timed as the weight step plus the
architecture step (the one shared alpha/beta validation pass). Each mode runs in a fresh subprocess
(``--single-mode``) so its peak resident set size (``ru_maxrss``) is its own; the report gives that peak and
the peak minus the RSS just before the first step; a mode killed for memory is reported as failed.
``retrain`` times forward+backward of DARTS_V2 (C=36, 20 cells, auxiliary head, batch 32, drop path 0.2).

``--reference DIR`` (repeatable) times the original code in DIR (a DARTS or a PC-DARTS folder, told apart by
PC-DARTS's ``channel_shuffle``; loaded by ``reference_code.py``) the same way, in its own subprocess, at the same
shapes, in its own default NCHW layout: a DARTS folder gives the DARTS search iteration (``original:darts``) and
DARTS_V2 retraining (``original:retrain``), a PC-DARTS folder the K=4 search iteration (``original:pc_darts``),
each when its counterpart is among ``--modes``. An original search iteration is what its train_search.py does,
first order: ``Architect.step(..., unrolled=False)`` on a validation batch, then the weight step with gradient
clipping; its hyperparameters are the original's. Then a side-by-side table (original against ours, time and
peak memory) and the targets, MET or MISSED. Without ``--reference``, the targets that need the original are
checked against its figures recorded earlier on this machine class (full shapes only), and marked so.

``--profile [MODE]`` prints a torch.profiler table of one search step (default fixed:relu) and the bytes
autograd saves for backward in one forward pass, grouped by the candidate operator and module saving them.
``--shapes tiny`` (hidden) shrinks every shape (batch 2, C=8, 5 cells, 16x16; retraining at 32x32, which the
original auxiliary head needs) for a smoke test of the machinery; its figures mean nothing.

Usage: python benchmarks/bench_darts_search.py [--steps N] [--repeat R] [--modes ...] [--reference DIR ...]
       [--json out.json]
       [--profile [MODE]]
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
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from reference_code import detect_kind  # benchmarks/reference_code.py; imports no torch at module level

# torch is imported only inside the measuring subprocess, so the parent stays small and a child's
# ru_maxrss (which Linux carries over from the parent's memory image across exec) is the child's own.

# "+recompute": the memory-saving option (each cell recomputed in backward); "+compile": --compile-mixture
SEARCH_MODES = ("fixed:relu", "factorized", "pc_darts", "fixed:relu+recompute", "factorized+recompute",
                "factorized+compile", "non_factorized+recompute", "non_factorized")
ALL_MODES = (*SEARCH_MODES, "retrain")
DEFAULT_MODES = ("fixed:relu", "factorized", "pc_darts", "fixed:relu+recompute", "factorized+recompute", "retrain")
# the original code's runs (--reference): which kind of folder gives each, and which of our modes it is compared with
ORIGINAL_KIND = {"original:darts": "darts", "original:pc_darts": "pc_darts", "original:retrain": "darts"}
COUNTERPART = {"fixed:relu": "original:darts", "fixed:relu+recompute": "original:darts",
               "pc_darts": "original:pc_darts", "retrain": "original:retrain"}
LABELS = {"original:darts": "DARTS search step", "original:pc_darts": "PC-DARTS K=4 search step",
          "original:retrain": "DARTS_V2 retrain fwd+bwd"}
GB = 1e9

# The targets (ratios are of median step times measured in the same run; peak is the peak RSS).
DARTS_VS_ORIGINAL = 0.40
DARTS_PEAK_GB = 5.0
PC_DARTS_VS_ORIGINAL = 0.50
PC_DARTS_VS_DARTS = 0.40
FACTORIZED_VS_RELU = 1.20
RETRAIN_VS_ORIGINAL = 0.65

# The original code's figures recorded earlier on this machine class at the full shapes (2 cores, fp32): used only
# for a target whose original was not measured in this run (no --reference for it), and marked "recorded".
RECORDED_ORIGINAL: dict[str, dict[str, float]] = {
    "original:darts": {"step_s": 21.3, "weight_s": 10.6, "arch_s": 10.6, "peak_gb": 10.8},
    "original:pc_darts": {"step_s": 8.3, "peak_gb": 4.2},
    "original:retrain": {"step_s": 2.2},
}


@dataclass(frozen=True)
class Shapes:
    batch: int
    channels: int
    layers: int
    image: int
    retrain_batch: int
    retrain_channels: int
    retrain_layers: int
    retrain_image: int


# tiny: a smoke test of the machinery only. PC-DARTS's K=4 needs an even C/4 (so C=8); the original auxiliary head
# needs an 8x8 map at 2/3 of the depth (so 32x32 retraining input).
SHAPES = {"full": Shapes(64, 16, 8, 32, 32, 36, 20, 32), "tiny": Shapes(2, 8, 5, 16, 2, 8, 5, 32)}
NUM_CLASSES = 10


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def build_search(mode: str, shapes: Shapes = SHAPES["full"]) -> tuple[Any, Any, tuple[Any, ...]]:
    import torch

    from optuna_nas.darts.space import A_DARTS_SPACE, DARTS_SPACE, ActivationMode
    from optuna_nas.darts.supernet import SearchNetwork, SuperNetConfig
    from optuna_nas.darts.trilevel import TriLevelOptimizer

    torch.manual_seed(0)
    recompute = mode.endswith("+recompute")
    compile_mixture = mode.endswith("+compile")  # compiled in the warm-up step, which is not timed
    mode = mode.removesuffix("+recompute").removesuffix("+compile")
    pc = mode == "pc_darts"
    activation = "fixed:relu" if pc else mode
    space = DARTS_SPACE if activation.startswith("fixed") else A_DARTS_SPACE
    config = SuperNetConfig(space, ActivationMode.parse(activation), channels=shapes.channels, layers=shapes.layers,
                            num_classes=NUM_CLASSES, in_channels=3, partial_channels=4 if pc else 1,
                            recompute_cells=recompute, compile_mixture=compile_mixture)
    # the library's default layout (SearchSettings.channels_last)
    net = SearchNetwork(config).train().to(memory_format=torch.channels_last)

    def adam(params: list[torch.nn.Parameter]) -> torch.optim.Adam:
        return torch.optim.Adam(params, lr=6e-4, betas=(0.5, 0.999), weight_decay=1e-3)

    w_opt = torch.optim.SGD(net.weight_parameters(), 0.05, momentum=0.9, weight_decay=3e-4)
    b_opt = adam(net.beta_parameters()) if net.beta_parameters() else None
    opt = TriLevelOptimizer(net, w_opt, adam(net.alpha_parameters()), b_opt, grad_clip=5.0, unrolled=False,
                            beta_pass="shared", amp=False)
    images = [torch.randn(shapes.batch, 3, shapes.image, shapes.image).contiguous(memory_format=torch.channels_last)
              for _ in range(2)]
    labels = [torch.randint(0, NUM_CLASSES, (shapes.batch,)) for _ in range(2)]
    return net, opt, (images[0], labels[0], images[1], labels[1])


def search_step(opt: Any, data: tuple[Any, ...]) -> tuple[float, float]:
    """One Algorithm 1 iteration (shared beta pass, as ``TriLevelOptimizer.step``): (weight s, arch s)."""
    t0 = time.perf_counter()
    opt.weight_step(data[0], data[1])
    t1 = time.perf_counter()
    opt._arch_step(opt.alphas + opt.betas, *data)
    return t1 - t0, time.perf_counter() - t1


def build_search_step(mode: str, shapes: Shapes = SHAPES["full"]) -> Callable[[], tuple[float, float]]:
    _, opt, data = build_search(mode, shapes)
    return lambda: search_step(opt, data)


def build_retrain(shapes: Shapes = SHAPES["full"]) -> tuple[Any, Callable[[], None]]:
    import torch

    from optuna_nas.darts.genotypes import BUILTIN_GENOTYPES
    from optuna_nas.darts.model import network_cifar

    torch.manual_seed(0)
    net = network_cifar(BUILTIN_GENOTYPES["DARTS_V2"], channels=shapes.retrain_channels, num_classes=NUM_CLASSES,
                        layers=shapes.retrain_layers, auxiliary=True)
    net.train().to(memory_format=torch.channels_last)  # TrainSettings.channels_last
    net.set_drop_path(0.2)
    criterion = torch.nn.CrossEntropyLoss()
    size = shapes.retrain_image
    x = torch.randn(shapes.retrain_batch, 3, size, size).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, NUM_CLASSES, (shapes.retrain_batch,))

    def fwd_bwd() -> None:
        net.zero_grad(set_to_none=True)
        logits, aux = net(x)
        (criterion(logits, y) + 0.4 * criterion(aux, y)).backward()

    return net, fwd_bwd


def _original_code(mode: str, reference: Path | None) -> Any:
    from reference_code import load_reference

    if reference is None:
        raise SystemExit(f"{mode} needs --reference DIR")
    code = load_reference(reference)
    if code.kind != ORIGINAL_KIND[mode]:
        raise SystemExit(f"{mode} needs a {ORIGINAL_KIND[mode]} folder; {reference} holds {code.kind}")
    return code


def build_original_search(mode: str, reference: Path | None,
                          shapes: Shapes = SHAPES["full"]) -> Callable[[], tuple[float, float]]:
    """The original search network at our shapes, NCHW; a callable doing one iteration: (weight s, arch s)."""
    import torch
    from reference_code import OriginalSearch

    code = _original_code(mode, reference)
    torch.manual_seed(0)
    search = OriginalSearch(code, shapes.channels, NUM_CLASSES, shapes.layers)
    search.net.train()
    images = [torch.randn(shapes.batch, 3, shapes.image, shapes.image) for _ in range(2)]
    labels = [torch.randint(0, NUM_CLASSES, (shapes.batch,)) for _ in range(2)]
    return lambda: search.step(images[0], labels[0], images[1], labels[1])


def build_original_retrain(reference: Path | None, shapes: Shapes = SHAPES["full"]) -> Callable[[], None]:
    """The original NetworkCIFAR of DARTS_V2 at our shapes, NCHW, drop path 0.2; one forward+backward."""
    import torch
    from reference_code import OriginalRetrain

    code = _original_code("original:retrain", reference)
    torch.manual_seed(0)
    retrain = OriginalRetrain(code, shapes.retrain_channels, NUM_CLASSES, shapes.retrain_layers, auxiliary=True,
                              drop_path_prob=0.2)
    retrain.net.train()
    size = shapes.retrain_image
    x = torch.randn(shapes.retrain_batch, 3, size, size)
    y = torch.randint(0, NUM_CLASSES, (shapes.retrain_batch,))

    def fwd_bwd() -> None:
        retrain.forward_backward(x, y)

    return fwd_bwd


def measure(mode: str, steps: int, shapes: Shapes = SHAPES["full"], reference: Path | None = None) -> dict[str, Any]:
    """Run in a fresh process: 1 warm-up + ``steps`` timed steps of one mode (ours or ``original:*``)."""
    if mode in ("retrain", "original:retrain"):
        fwd_bwd = build_retrain(shapes)[1] if mode == "retrain" else build_original_retrain(reference, shapes)
        before = rss_bytes()
        times = []
        for i in range(steps + 1):
            t0 = time.perf_counter()
            fwd_bwd()
            if i:
                times.append(time.perf_counter() - t0)
        out: dict[str, Any] = {"step_s": statistics.median(times), "step_all_s": times}
    else:
        step = build_original_search(mode, reference, shapes) if mode.startswith("original:") \
            else build_search_step(mode, shapes)
        before = rss_bytes()
        timed = [step() for _ in range(steps + 1)][1:]
        out = {"step_s": statistics.median(w + a for w, a in timed),
               "weight_s": statistics.median(w for w, _ in timed),
               "arch_s": statistics.median(a for _, a in timed), "step_all_s": [w + a for w, a in timed]}
    peak = peak_bytes()
    extra = {"reference": str(reference)} if mode.startswith("original:") else {}
    return out | extra | {"mode": mode, "steps": steps, "rss_before_gb": before / GB, "peak_gb": peak / GB,
                          "peak_delta_gb": (peak - before) / GB, "load_avg": os.getloadavg()[0]}


def run_child(mode: str, steps: int, shapes: str = "full", reference: Path | None = None) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--single-mode", mode, "--steps", str(steps),
           "--shapes", shapes]
    if reference is not None:
        cmd += ["--reference", str(reference)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode:  # e.g. -9: killed by the kernel's OOM killer
        why = "killed (SIGKILL: out of memory?)" if done.returncode == -9 else f"exit {done.returncode}"
        print(f"{mode} failed: {why}\n{done.stderr[-2000:]}", file=sys.stderr)
        return {"mode": mode, "error": why}
    return json.loads(done.stdout.strip().splitlines()[-1])


def median_round(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """The round (one fresh process) with the median step time, all its figures kept together, and every
    round's step time beside it: one process can be 15% off another on this kind of machine."""
    ok = sorted((r for r in rounds if "error" not in r), key=lambda r: r["step_s"])
    if not ok:
        return rounds[-1]
    return ok[(len(ok) - 1) // 2] | {"round_step_s": [r.get("step_s") for r in rounds]}


def verdict(ok: bool) -> str:
    return "MET" if ok else "MISSED"


def _ok(results: dict[str, dict[str, Any]], mode: str) -> dict[str, Any] | None:
    r = results.get(mode)
    return r if r is not None and "error" not in r else None


def _original(results: dict[str, dict[str, Any]], mode: str, full: bool) -> tuple[dict[str, Any] | None, str]:
    """The original's figures for ``mode``: measured in this run, else recorded (full shapes only), else None."""
    r = _ok(results, mode)
    if r is not None:
        return r, "this run"
    if full and mode not in results:  # not asked for; a failed run is not replaced by a recorded figure
        return RECORDED_ORIGINAL[mode], "recorded"
    return None, ""


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _fmt(x: float | None, spec: str = ".2f") -> str:
    return "-" if x is None else format(x, spec)


def side_by_side(results: dict[str, dict[str, Any]], full: bool) -> list[dict[str, Any]]:
    """One row per (our mode, its original): seconds and peak GB of each, and ours/original."""
    rows = []
    for ours_mode, original_mode in COUNTERPART.items():
        ours = _ok(results, ours_mode)
        original, source = _original(results, original_mode, full)
        if ours is None or original is None:
            continue
        parts = [("step_s", f"{LABELS[original_mode]} ({ours_mode})")]
        if "weight_s" in ours:
            parts += [("weight_s", "  weight step"), ("arch_s", "  architecture step")]
        for key, label in parts:
            gb = key == "step_s"
            row = {"run": label, "ours_mode": ours_mode, "original_mode": original_mode, "part": key,
                   "original_s": original.get(key), "original_gb": original.get("peak_gb") if gb else None,
                   "ours_s": ours[key], "ours_gb": ours["peak_gb"] if gb else None, "original_from": source}
            row["time_x"] = _ratio(row["ours_s"], row["original_s"])
            row["memory_x"] = _ratio(row["ours_gb"], row["original_gb"])
            rows.append(row)
    return rows


def _step_ratio(ours: dict[str, Any], other: dict[str, Any]) -> tuple[float | None, list[float]]:
    """ours / other step time, and each round's ratio. Over several rounds the value is the median of the
    rounds' ratios: the two runs of a round are minutes apart, so a drift of the machine cancels out, where
    the ratio of the two median rounds can pair a slow round with a fast one."""
    per_round = [a / b for a, b in zip(ours.get("round_step_s") or [], other.get("round_step_s") or [], strict=False)
                 if a is not None and b]
    if len(per_round) > 1:
        return statistics.median(per_round), per_round
    return _ratio(ours["step_s"], other["step_s"]), []


def targets(results: dict[str, dict[str, Any]], full: bool) -> list[dict[str, Any]]:
    """The targets that this run's modes allow checking: value, limit, MET / MISSED, and what it is against."""
    out: list[dict[str, Any]] = []

    def check(name: str, value: float | None, limit: float, unit: str, against: str,
              per_round: list[float] | None = None) -> None:
        met = None if value is None else value <= limit
        out.append({"target": name, "value": value, "limit": limit, "unit": unit, "against": against,
                    "met": met, "per_round": per_round or []})

    def vs_original(name: str, ours_mode: str, original_mode: str, limit: float) -> None:
        ours = _ok(results, ours_mode)
        if ours is None:
            return
        original, source = _original(results, original_mode, full)
        value, per_round = _step_ratio(ours, original) if original else (None, [])
        check(name, value, limit, "x", f"{original_mode} ({source})" if original else "no original (--reference)",
              per_round)

    for mode in ("fixed:relu", "fixed:relu+recompute"):
        vs_original(f"DARTS step, ours ({mode}) / original", mode, "original:darts", DARTS_VS_ORIGINAL)
        if (r := _ok(results, mode)) is not None:
            check(f"DARTS step peak RSS ({mode})", r["peak_gb"], DARTS_PEAK_GB, "GB", "absolute")
    vs_original("PC-DARTS K=4 step, ours / original", "pc_darts", "original:pc_darts", PC_DARTS_VS_ORIGINAL)
    base = _ok(results, "fixed:relu")
    for mode, name, limit in (("pc_darts", "PC-DARTS K=4 step / our DARTS step (fixed:relu)", PC_DARTS_VS_DARTS),
                              ("factorized", "factorized step / fixed:relu step", FACTORIZED_VS_RELU),
                              ("factorized+compile", "factorized+compile step / fixed:relu step",
                               FACTORIZED_VS_RELU)):
        if (r := _ok(results, mode)) is not None:
            value, per_round = _step_ratio(r, base) if base else (None, [])
            check(name, value, limit, "x", "fixed:relu (this run)" if base else "fixed:relu not measured", per_round)
    vs_original("DARTS_V2 retrain fwd+bwd, ours / original", "retrain", "original:retrain", RETRAIN_VS_ORIGINAL)
    return out


def report(results: dict[str, dict[str, Any]], full: bool = True) -> dict[str, list[dict[str, Any]]]:
    """Print our modes, the side-by-side table and the targets; return the last two (for --json)."""
    base = _ok(results, "fixed:relu")
    print(f"{'mode':<26}{'step s':>8}{'weight s':>10}{'arch s':>8}{'x relu':>8}{'peak GB':>9}{'dpeak GB':>10}"
          f"{'mem x relu':>11}")
    for mode, r in results.items():
        if mode == "retrain" or mode.startswith("original:"):
            continue
        if "error" in r:
            print(f"{mode:<26}FAILED: {r['error']}")
            continue
        ratio = _ratio(r["step_s"], base["step_s"] if base else None)
        mem = _ratio(r["peak_delta_gb"], base["peak_delta_gb"] if base else None)
        print(f"{mode:<26}{r['step_s']:>8.2f}{r['weight_s']:>10.2f}{r['arch_s']:>8.2f}{_fmt(ratio):>8}"
              f"{r['peak_gb']:>9.2f}{r['peak_delta_gb']:>10.2f}{_fmt(mem):>11}")
    if (r := _ok(results, "retrain")) is not None:
        s = SHAPES["full" if full else "tiny"]
        print(f"retrain DARTS_V2 fwd+bwd (C={s.retrain_channels}, {s.retrain_layers} cells, aux, batch "
              f"{s.retrain_batch}): {r['step_s']:.2f} s, peak {r['peak_gb']:.2f} GB")
    for mode, r in results.items():
        if mode.startswith("original:") and "error" in r:
            print(f"{mode} ({r.get('reference', '')}): FAILED: {r['error']}")

    rows = side_by_side(results, full)
    if rows:
        print("\nside by side: the original code (NCHW) against ours (channels-last), same shapes")
        print(f"{'run':<46}{'orig s':>8}{'orig GB':>9}{'ours s':>8}{'ours GB':>9}{'time x':>8}{'mem x':>7}  original")
        for row in rows:
            print(f"{row['run']:<46}{_fmt(row['original_s']):>8}{_fmt(row['original_gb']):>9}"
                  f"{row['ours_s']:>8.2f}{_fmt(row['ours_gb']):>9}{_fmt(row['time_x']):>8}{_fmt(row['memory_x']):>7}"
                  f"  {row['original_from']}")
    checked = targets(results, full)
    if checked:
        print("\ntargets")
        for t in checked:
            unit = " GB" if t["unit"] == "GB" else "x"
            value, limit = _fmt(t["value"]) + (unit if t["value"] is not None else ""), f"<= {t['limit']:.2f}{unit}"
            met = "n/a" if t["met"] is None else verdict(t["met"])
            rounds = f"; rounds {' '.join(f'{x:.2f}' for x in t['per_round'])}" if t["per_round"] else ""
            print(f"{t['target']:<52}{value:>9}  {limit:<11}{met:<8}against {t['against']}{rounds}")
    loads = ", ".join(f"{m} {r['load_avg']:.1f}" for m, r in results.items() if "load_avg" in r)
    print(f"\n1-min load average at the end of each mode ({os.cpu_count()} cores): {loads}")
    return {"side_by_side": rows, "targets": checked}


def profile(mode: str, shapes: Shapes = SHAPES["full"]) -> None:
    """torch.profiler of one search step, then the bytes saved for backward, by the op saving them."""
    import torch
    from torch.profiler import ProfilerActivity

    _, opt, data = build_search(mode, shapes)
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


def original_runs(parser: argparse.ArgumentParser, folders: list[Path], modes: list[str]) -> dict[str, Path]:
    """``original:*`` run -> its folder: each folder's runs whose counterpart among ``modes`` was asked for."""
    by_kind: dict[str, Path] = {}
    for folder in folders:
        try:
            kind = detect_kind(folder)
        except (OSError, SyntaxError) as exc:
            parser.error(f"--reference {folder}: {exc}")
        if kind in by_kind:
            parser.error(f"--reference {folder}: a second {kind} folder (the first is {by_kind[kind]})")
        by_kind[kind] = folder.resolve()
    wanted = {COUNTERPART[m] for m in modes if m in COUNTERPART}
    return {run: by_kind[kind] for run, kind in ORIGINAL_KIND.items() if kind in by_kind and run in wanted}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3, help="timed steps per mode, after 1 warm-up step")
    parser.add_argument("--modes", nargs="+", choices=ALL_MODES, default=list(DEFAULT_MODES),
                        help="non_factorized needs the memory-saving option to fit in 24 GB")
    parser.add_argument("--reference", action="append", type=Path, default=[], metavar="DIR",
                        help="a folder of the original DARTS or PC-DARTS code (repeatable): time it at the same "
                             "shapes and print it side by side with ours")
    parser.add_argument("--repeat", type=int, default=1, metavar="R",
                        help="run every mode R times, round by round, each in a fresh process, and report the "
                             "round with the median step time; a target's ratio is the median of the rounds' "
                             "own ratios")
    parser.add_argument("--json", type=Path, help="write all results here")
    parser.add_argument("--single-mode", choices=(*ALL_MODES, *ORIGINAL_KIND), help=argparse.SUPPRESS)
    parser.add_argument("--shapes", choices=SHAPES, default="full", help=argparse.SUPPRESS)  # "tiny": smoke test
    parser.add_argument("--profile", nargs="?", const="fixed:relu", choices=SEARCH_MODES, metavar="MODE",
                        help="profile one search step of MODE (default fixed:relu) instead")
    args = parser.parse_args()
    shapes = SHAPES[args.shapes]
    if args.single_mode:
        reference = args.reference[0] if args.reference else None
        print(json.dumps(measure(args.single_mode, args.steps, shapes, reference)))
        return
    if args.profile:
        profile(args.profile, shapes)
        return
    modes = sorted(args.modes, key=lambda m: m != "fixed:relu")  # the baseline first
    originals = original_runs(parser, args.reference, modes)
    if args.shapes != "full":
        print(f"--shapes {args.shapes}: {shapes} (a smoke test; the figures mean nothing)", file=sys.stderr)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    load_start = os.getloadavg()[0]
    rounds: dict[str, list[dict[str, Any]]] = {mode: [] for mode in [*modes, *originals]}
    for _ in range(args.repeat):
        for mode in rounds:
            r = run_child(mode, args.steps, args.shapes, originals.get(mode))
            rounds[mode].append(r)
            if "error" not in r:
                print(f"[{mode}] {r['step_s']:.2f} s/step, peak {r['peak_gb']:.2f} GB", file=sys.stderr)
    results = {mode: median_round(runs) for mode, runs in rounds.items()}
    print(f"1-min load average before the first mode: {load_start:.1f}")
    tables = report(results, full=args.shapes == "full")
    if args.json:
        summary = {"shapes": {"name": args.shapes, **asdict(shapes)}, "steps": args.steps, "repeat": args.repeat,
                   "references": {run: str(folder) for run, folder in originals.items()},
                   "load_avg_start": load_start, "modes": results, **tables}
        args.json.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
