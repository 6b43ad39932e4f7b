"""RandGrowSampler's ask latency against Optuna's own samplers, and a small growth run's hull.

Why: the sampler reads every completed trial from storage at each ask (the paper's workers share no
memory), so its ask must stay cheap as a study grows; the target is no slower than TPESampler. And a
search should actually find models that beat the initial network.

What:
* ``latency``: a SQLite study with ``--trials`` (1,000) completed RandGrow trials (macro architectures
  grown over many generations, two objectives) is copied once per sampler; each sampler then times
  ``--asks`` asks, each ask plus one ``suggest_float`` (so TPE really samples) and a FAIL tell (the
  completed count stays fixed), the samplers taking turns ask by ask. Median milliseconds and the ratio to
  TPESampler measured in the same run are printed.
* ``growth``: ``optuna-nas search randgrow`` on ``--dataset`` (default: the CIFAR-10 subset
  ``../shared/data/cifar10-mini.npz`` when present, otherwise digits) for ``--growth-trials`` models, then
  prints the hull against the initial model (trial 0).

Usage: python benchmarks/bench_randgrow.py [latency|growth|all] [--trials 1000] [--asks 30] [--tree recent|uniform]
       [--storage postgresql://...] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState

from optuna_nas.randgrow import RandGrowSampler, get_proposal, grow, initial_architecture, sample_increments
from optuna_nas.randgrow.sampler import Proposal, proposal_attrs

CIFAR_MINI = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-mini.npz"


def _populate(storage: str, n: int, tree: str = "recent", study_name: str = "bench") -> None:
    """``n`` completed trials: a growth tree of macro architectures with plausible (error, params).

    ``tree``: "recent" grows each model from one of the 20 latest (a deep tree: architectures of about
    n/10 generations, 100-200 KB of JSON each at n=1,000); "uniform" from any earlier model (a random
    recursive tree, depth about ln n), closer to a real search, whose parents are the few hull models,
    and the only one that fits on disk at n=10,000.
    """
    rng = np.random.RandomState(0)
    base = initial_architecture()
    archs = [base]
    study = optuna.create_study(storage=storage, study_name=study_name, directions=["minimize", "minimize"])
    trials = []
    for number in range(n):
        low = max(1, len(archs) - 20) if tree == "recent" else 1
        parent = int(rng.randint(low, len(archs))) if number else None
        arch = base if parent is None else grow(archs[parent], sample_increments(archs[parent], "macro", rng))
        archs.append(arch)
        size = len(arch.increments)
        trials.append(optuna.create_trial(
            state=TrialState.COMPLETE, values=[5.0 / (1 + size / 20) + rng.rand(), 366_506 + 9_000 * size],
            params={"lr": float(rng.uniform(1e-3, 1e-1))},
            distributions={"lr": optuna.distributions.FloatDistribution(1e-3, 1e-1, log=True)},
            system_attrs=proposal_attrs(Proposal(arch.to_json(), parent, 0, 0 if parent is None else 1))))
    study.add_trials(trials)


def _time_ask(study: optuna.Study) -> float:
    """Milliseconds of one ask plus one suggest_float; the trial is told FAIL, so the completed count stays."""
    start = time.perf_counter()
    trial = study.ask()
    trial.suggest_float("lr", 1e-3, 1e-1, log=True)
    elapsed = (time.perf_counter() - start) * 1e3
    study.tell(trial, state=TrialState.FAIL)
    return elapsed


def _time_interleaved(studies: dict[str, optuna.Study], asks: int) -> dict[str, list[float]]:
    """``asks`` asks per study, one study after another ask by ask, the order rotated each round: on a shared
    machine a slow spell then falls on every sampler alike instead of on whichever ran during it."""
    names = list(studies)
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(asks):
        for k in range(len(names)):
            name = names[(round_ + k) % len(names)]
            times[name].append(_time_ask(studies[name]))
    return times


def latency(n_trials: int, asks: int, tree: str = "recent", storage: str | None = None) -> dict[str, Any]:
    """``storage``: an RDB URL (PostgreSQL, say) to populate one study per sampler in; default: a
    temporary SQLite file populated once and copied per sampler."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    out: dict[str, Any] = {"completed_trials": n_trials, "asks": asks, "tree": tree,
                           "storage": "sqlite" if storage is None else storage.split(":")[0].split("+")[0]}
    samplers = {
        "TPESampler": lambda: optuna.samplers.TPESampler(seed=0),
        "RandomSampler": lambda: optuna.samplers.RandomSampler(seed=0),
        "RandGrowSampler": lambda: RandGrowSampler(initial_architecture(), seed=0, verbose=False),
    }
    with tempfile.TemporaryDirectory() as tmp:
        template = Path(tmp) / "template.db"
        start = time.perf_counter()
        print(f"populating {n_trials} trials ({tree} tree)...", file=sys.stderr)
        if storage is None:
            _populate(f"sqlite:///{template}", n_trials, tree)
        studies, urls = {}, {}
        for name, make in samplers.items():
            if storage is None:
                db = Path(tmp) / f"{name}.db"
                shutil.copy(template, db)
                url, study_name = f"sqlite:///{db}", "bench"
            else:
                url, study_name = storage, f"bench-{name}-{n_trials}-{tree}-{os.getpid()}"
                _populate(url, n_trials, tree, study_name)
            urls[name] = url, study_name
            studies[name] = optuna.load_study(study_name=study_name, storage=url, sampler=make())
        for name, times in _time_interleaved(studies, asks).items():
            out[name] = {"median_ms": statistics.median(times), "max_ms": max(times)}
        # the proposals are real children of stored trials
        proposal = get_proposal(studies["RandGrowSampler"].trials[-1])
        assert proposal is not None and proposal.parent is not None
        if storage is not None:
            for url, study_name in urls.values():
                optuna.delete_study(study_name=study_name, storage=url)
        print(f"populated and timed in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    base = out["TPESampler"]["median_ms"]
    print(f"\nask + one suggest_float, {n_trials} completed trials ({tree} tree) in {out['storage']}, "
          f"median of {asks} asks:")
    print(f"{'sampler':<16} {'median ms':>10} {'max ms':>9} {'x TPE':>7}")
    for name in ("TPESampler", "RandomSampler", "RandGrowSampler"):
        row = out[name]
        row["ratio_to_tpe"] = row["median_ms"] / base
        print(f"{name:<16} {row['median_ms']:>10.1f} {row['max_ms']:>9.1f} {row['ratio_to_tpe']:>7.2f}")
    return out


def growth(dataset: str, n_trials: int, workers: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        storage = f"sqlite:///{Path(tmp) / 'grow.db'}"
        args = ["optuna-nas", "search", "randgrow", "--dataset", dataset, "--storage", storage,
                "--study-name", "growth", "--artifact-dir",
                str(Path(tmp) / "artifacts"), "--cells-per-block", "2", "--channels", "16", "--epochs", "4",
                "--cycles", "2", "--initial-epochs", "8", "--n-trials", str(n_trials), "--n-workers", str(workers),
                "--quiet"]
        start = time.perf_counter()
        subprocess.run(args, check=True)
        seconds = time.perf_counter() - start
        study = optuna.load_study(study_name="growth", storage=storage)
        from optuna_nas.randgrow.runner import hull_trials
        initial = study.trials[0]
        hull = [{"trial": t.number, "parent": t.user_attrs.get("parent"), "generation": t.user_attrs["generation"],
                 "params": int(t.values[1]), "val_error": t.values[0]} for t in hull_trials(study)]
    print(f"\ngrowth on {dataset}: {n_trials} models in {seconds:.0f} s; initial model: "
          f"{initial.values[0]:.2f}% val error, {int(initial.values[1]):,} params")
    for row in hull:
        print(f"  hull: trial {row['trial']:>3}  parent {row['parent']!s:>4}  gen {row['generation']}  "
              f"{row['params']:>9,} params  {row['val_error']:.2f}% "
              f"({row['val_error'] / initial.values[0]:.2f}x the initial error)")
    return {"dataset": dataset, "trials": n_trials, "seconds": seconds, "hull": hull,
            "initial": {"val_error": initial.values[0], "params": int(initial.values[1])}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", nargs="?", choices=["latency", "growth", "all"], default="all")
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--asks", type=int, default=30)
    parser.add_argument("--tree", choices=["recent", "uniform"], default="recent",
                        help="shape of the stored growth tree (see _populate)")
    parser.add_argument("--storage", default=None, help="an RDB URL for the latency studies (default: SQLite)")
    parser.add_argument("--dataset", default=f"npz:{CIFAR_MINI}" if CIFAR_MINI.exists() else "digits")
    parser.add_argument("--growth-trials", type=int, default=8)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    results: dict[str, Any] = {}
    if args.what in ("latency", "all"):
        results["latency"] = latency(args.trials, args.asks, args.tree, args.storage)
    if args.what in ("growth", "all"):
        results["growth"] = growth(args.dataset, args.growth_trials, args.workers)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
