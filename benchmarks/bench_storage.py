"""Storage overhead per trial, and recovery time after a worker is SIGKILLed, on SQLite, a journal file and
PostgreSQL. Prints figures; asserts nothing.

``overhead``: ``--trials`` (1,000) trials on a fresh study (fresh database per backend and level), each doing
what an optuna-nas trial does to storage, with no training, at three levels:
  ask+tell   ``study.ask()`` + ``study.tell()``
  +attrs     + fail_stale_trials before the ask, one heartbeat, two suggests (configuration, seed), user attrs
             (configuration, worker, params, flops, a 20-edge genotype), 5 epochs of report + ``epochs_done``
  +artifacts + per epoch an ``ArtifactCheckpointer.save`` of a ~5 KB state dict, and one ``upload_json``;
             the finished run's checkpoint is discarded, as the study runner does
Median and p90 ms per trial, mean ms of the first and last 100 trials, ratios to SQLite ask+tell of this run.

``recovery``: two ``python -m optuna_nas.cli run`` workers on a study file with one long configuration
(enqueued first, so one worker takes it) and short 1-epoch ones (``busy``: 200, the other worker runs them;
``idle``: 1, then it waits). Once the long trial has 2 epochs and the other worker finished a trial, its
worker is SIGKILLed; printed: kill -> trial FAIL (stale detected), kill -> its retry RUNNING, kill -> the
retry's first new epoch (storage timestamps where Optuna keeps them, else polled every 50 ms).

``artifacts``: what a retraining trial writes to its artifact store (a checkpoint per epoch, replacing the previous
one, then the weights and a JSON file, then the checkpoint discarded), with real state dicts of a DARTS network
(``--channels``, default C=16 with 8 cells, about 1 MB), ``--trials`` (50) trials of ``--epochs`` (5) epochs, on a
local directory and on S3: an S3-compatible server on 127.0.0.1 (moto_server, started here unless
``$AWS_ENDPOINT_URL`` is set), so the figure is the client's and the protocol's cost, not a network's.

Usage: OMP_NUM_THREADS=1 python benchmarks/bench_storage.py [overhead|recovery|artifacts|all] [--quick]
PostgreSQL: --postgres URL or $OPTUNA_NAS_PGURL, else a private server (.ci/postgres.sh, port
$OPTUNA_NAS_PGPORT or 5479) started and stopped here; --no-postgres skips it.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
import torch
import yaml
from optuna.trial import FrozenTrial, TrialState

from optuna_nas.artifacts import (
    ArtifactCheckpointer,
    discard_checkpoint,
    open_artifact_store,
    upload_json,
    upload_state,
)
from optuna_nas.heartbeat import Heartbeat
from optuna_nas.storage import _with_installed_driver, load_or_create_study

ROOT = Path(__file__).resolve().parents[1]
LEVELS = ("ask+tell", "+attrs", "+artifacts")
EPOCHS = 5
TINY_RETRAIN = {"epochs": 1, "batch_size": 32, "channels": 4, "layers": 3, "drop_path_prob": 0.0, "amp": False}


# ---------------------------------------------------------------- stores


@contextmanager
def postgres_server(args: argparse.Namespace) -> Iterator[str | None]:
    """A PostgreSQL URL: given, or a private server started here (and stopped at the end), or None."""
    url = args.postgres or os.environ.get("OPTUNA_NAS_PGURL")
    if url or args.no_postgres or "postgresql" not in args.backends:
        yield url
        return
    env = {**os.environ, "OPTUNA_NAS_PGPORT": os.environ.get("OPTUNA_NAS_PGPORT", "5479")}
    script = ["bash", str(ROOT / ".ci" / "postgres.sh")]
    ours = subprocess.run([*script, "status"], env=env, capture_output=True).returncode != 0
    try:
        try:
            out = subprocess.run([*script, "start"], env=env, capture_output=True, text=True, timeout=180)
            url = out.stdout.strip().splitlines()[-1] if out.returncode == 0 and out.stdout.strip() else None
            why = out.stderr.strip()[-300:]
        except (OSError, subprocess.TimeoutExpired) as exc:
            why = str(exc)
        if url is None:
            print(f"note: PostgreSQL skipped, .ci/postgres.sh start failed: {why}")
        yield url
    finally:
        if ours:
            subprocess.run([*script, "stop"], env=env, capture_output=True, timeout=120)


@contextmanager
def fresh_store(backend: str, tmp: Path, pg_url: str | None) -> Iterator[str]:
    """A storage URL nobody used before: a new file, or a new PostgreSQL database (dropped afterwards)."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp / 'db.sqlite'}"
        return
    if backend == "journal":
        yield f"journal:{tmp / 'journal.log'}"
        return
    assert pg_url is not None
    engine = sqlalchemy.create_engine(_with_installed_driver(pg_url), isolation_level="AUTOCOMMIT")
    name = f"bench_{uuid.uuid4().hex[:12]}"
    try:
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text(f"CREATE DATABASE {name}"))
    except sqlalchemy.exc.SQLAlchemyError as exc:  # no CREATEDB right: a fresh study in the given database
        print(f"note: cannot create a database ({type(exc).__name__}); using {pg_url} with a new study")
        engine.dispose()
        yield pg_url
        return
    try:
        yield engine.url.set(database=name).render_as_string(hide_password=False)
    finally:
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        engine.dispose()


def dispose(study: optuna.Study) -> None:
    engine = getattr(getattr(study._storage, "_backend", study._storage), "engine", None)
    if engine is not None:
        engine.dispose()


# ---------------------------------------------------------------- 1. overhead per trial


def fake_genotype() -> dict[str, Any]:
    ops = ["sep_conv_3x3", "max_pool_3x3"] * 5
    edge = [{"op": op, "input": i % 4, "activation": "relu"} for i, op in enumerate(ops)]
    return {"normal": edge, "normal_concat": [2, 3, 4, 5], "reduce": edge, "reduce_concat": [2, 3, 4, 5]}


def one_trial(study: optuna.Study, store: Any, level: int, genotype: dict[str, Any]) -> None:
    storage = study._storage
    if level >= 1:
        optuna.storages.fail_stale_trials(study)
    trial = study.ask()
    if level >= 1:
        storage.record_heartbeat(trial._trial_id)  # type: ignore[attr-defined]
        name = trial.suggest_categorical("configuration", ["darts_v2", "darts_v1"])
        trial.suggest_int("seed", 0, 9)
        for key, value in {"configuration": name, "worker": f"bench:{os.getpid()}", "params": 1_234_567,
                           "flops": 98_765_432, "genotype": genotype}.items():
            trial.set_user_attr(key, value)
    checkpoint = ArtifactCheckpointer(store, study, f"retrain-{uuid.uuid4().hex[:16]}")
    for epoch in range(1, EPOCHS + 1):
        if level >= 2:
            checkpoint.save({"epoch": epoch, "w": torch.randn(32, 32), "b": torch.randn(32)})
        if level >= 1:
            trial.report(50.0 + epoch, epoch)
            trial.set_user_attr("epochs_done", epoch)
    if level >= 2:
        upload_json(trial, store, {"genotype": genotype}, "genotype.json")
    study.tell(trial, 42.0)
    if level >= 2:  # as the study runner does once a trial completed
        discard_checkpoint(store, study, checkpoint.key)


def time_trials(url: str, level: int, n: int, tmp: Path) -> list[float]:
    # RandomSampler, as the CLI's grid studies (whose enqueued points are fixed params: no sampling at all)
    study = load_or_create_study(url, f"bench-{uuid.uuid4().hex[:8]}", ["minimize"], ["test_error"],
                                 optuna.samplers.RandomSampler(0), heartbeat=Heartbeat(30, 90))
    store, genotype, times = open_artifact_store(tmp / "artifacts"), fake_genotype(), []
    try:
        for _ in range(n):
            start = time.perf_counter()
            one_trial(study, store, level, genotype)
            times.append((time.perf_counter() - start) * 1000)
    finally:
        dispose(study)
    return times


def quantile(xs: list[float], q: float) -> float:
    return statistics.quantiles(xs, n=100, method="inclusive")[int(q * 100) - 1] if len(xs) > 1 else xs[0]


def bench_overhead(backends: list[str], levels: list[str], n: int, pg_url: str | None) -> None:
    k = max(1, min(100, n // 10))
    print(f"\n== storage overhead per trial: {n} trials, ms per trial; x = / SQLite ask+tell of this run; "
          f"first/last = mean of trials 1-{k} and {n - k + 1}-{n}")
    print(f"{'backend':<11}{'level':<12}{'median':>8}{'p90':>8}{'x med':>7}{'x p90':>7}"
          f"{'first':>8}{'last':>8}{'last/1st':>9}")
    base: tuple[float, float] | None = None
    runs = [(b, LEVELS.index(label)) for b in backends for label in levels]
    if runs[0] != ("sqlite", 0):
        runs.insert(0, ("sqlite", 0))  # the baseline, always measured in the same run
    for backend, level in runs:
        label = LEVELS[level]
        with tempfile.TemporaryDirectory(prefix="bench-storage-") as tmp, \
                fresh_store(backend, Path(tmp), pg_url) as url:
            times = time_trials(url, level, n, Path(tmp))
        med, p90 = statistics.median(times), quantile(times, 0.9)
        base = base or (med, p90)
        first, last = statistics.fmean(times[:k]), statistics.fmean(times[-k:])
        print(f"{backend:<11}{label:<12}{med:8.2f}{p90:8.2f}{med / base[0]:7.2f}{p90 / base[1]:7.2f}"
              f"{first:8.2f}{last:8.2f}{last / first:9.2f}", flush=True)


# ---------------------------------------------------------------- 2. recovery after SIGKILL


def write_study_file(tmp: Path, name: str, n_short: int) -> str:
    rows = [{"name": "long", "retrain": {"architecture": "DARTS_V2", "epochs": 400}}]
    rows += [{"name": f"short{i:03d}", "retrain": {"architecture": "DARTS_V2"}} for i in range(n_short)]
    data = {"name": name, "description": "bench_storage recovery", "objective": "retrain", "dataset": "synthetic",
            "retrain": dict(TINY_RETRAIN), "configurations": rows, "seeds": [0]}
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(path)


def pid_of(trial: FrozenTrial) -> int | None:
    worker = str(trial.user_attrs.get("worker", ""))
    return int(worker.rsplit(":", 1)[1]) if ":" in worker else None


def stamp(value: Any, polled: float) -> float:
    return value.timestamp() if value is not None else polled


def recover_once(url: str, tmp: Path, interval: int, grace: int, scenario: str) -> dict[str, Any]:
    name = f"killed-{uuid.uuid4().hex[:6]}"
    n_short = 200 if scenario == "busy" else 1
    path = write_study_file(tmp, name, n_short)
    study = load_or_create_study(url, name, ["minimize"], ["test_error"])
    study.enqueue_trial({"configuration": "long", "seed": 0})  # the first worker to ask takes the long trial
    storage = study._storage
    command = [sys.executable, "-m", "optuna_nas.cli", "run", path, "--storage", url, "--artifact-dir",
               str(tmp / "artifacts"), "--quiet", "--heartbeat-interval", str(interval), "--grace-period", str(grace)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    logs = [open(tmp / f"worker{i}.log", "w") for i in range(2)]  # closed in finally
    procs = [subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                              cwd=tmp) for log in logs]
    deadline, killed_pid = time.time() + 240, -1

    def wait_for(what: str, check: Any) -> Any:
        while time.time() < deadline:
            found = check()
            if found:
                return found
            if any(p.poll() is not None for p in procs if p.pid != killed_pid):
                break
            time.sleep(0.05)
        tails = "\n".join(log.name + ": " + Path(log.name).read_text()[-600:] for log in logs)
        raise RuntimeError(f"gave up waiting for {what}\n{tails}")

    try:
        def ready() -> FrozenTrial | None:
            trials = study.get_trials(deepcopy=False)
            long = [t for t in trials if t.state == TrialState.RUNNING and t.params.get("configuration") == "long"
                    and int(t.user_attrs.get("epochs_done", 0)) >= 2]
            mine = pid_of(long[0]) if long else None
            others = [t for t in trials if t.state == TrialState.COMPLETE and pid_of(t) != mine]
            return long[0] if long and len(others) >= min(2, n_short) else None

        victim = wait_for("the long trial at epoch 2 and finished trials on the other worker", ready)
        killed_pid = pid_of(victim) or -1
        t_kill = time.time()
        os.kill(killed_pid, signal.SIGKILL)
        failed = wait_for("the stale trial to be failed",
                          lambda: (t := storage.get_trial(victim._trial_id)).state == TrialState.FAIL and t)
        t_failed_polled = time.time()
        retry = wait_for("the retried trial to run", lambda: next(
            (t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
             if t.system_attrs.get("failed_trial") == victim.number), None))
        t_running_polled = time.time()

        def new_epoch() -> bool:
            attrs = storage.get_trial(retry._trial_id).user_attrs
            return "resumed_from_epoch" in attrs and attrs["epochs_done"] > attrs["resumed_from_epoch"]

        wait_for("the retried trial's first new epoch", new_epoch)
        t_epoch = time.time()
        resumed = storage.get_trial(retry._trial_id).user_attrs["resumed_from_epoch"]
        other_starts = sorted(t.datetime_start.timestamp() for t in study.get_trials(deepcopy=False)
                              if t.datetime_start and pid_of(t) not in (None, killed_pid)
                              and t.datetime_start.timestamp() < t_kill)
        cycles = [b - a for a, b in zip(other_starts, other_starts[1:], strict=False)]
        return {"failed": stamp(failed.datetime_complete, t_failed_polled) - t_kill,
                "running": stamp(retry.datetime_start, t_running_polled) - t_kill, "epoch": t_epoch - t_kill,
                "resumed": resumed, "cycle": max(cycles) if cycles else float("nan")}
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        for log in logs:
            log.close()
        dispose(study)


def bench_recovery(backends: list[str], settings: list[tuple[int, int]], scenarios: list[str],
                   pg_url: str | None) -> None:
    print("\n== SIGKILL -> trial running again on the other worker, seconds after the kill "
          "(cycle = longest gap between the other worker's trial starts before the kill)")
    print(f"{'backend':<11}{'beat/grace':<11}{'other':<7}{'->FAIL':>8}{'->RUNNING':>10}{'->epoch':>9}"
          f"{'resumed@':>9}{'cycle':>7}  expected ->FAIL: grace-beat .. grace+(beat if idle, cycle if busy)")
    for backend in backends:
        for interval, grace in settings:
            for scenario in scenarios:
                with tempfile.TemporaryDirectory(prefix="bench-storage-") as tmp, \
                        fresh_store(backend, Path(tmp), pg_url) as url:
                    try:
                        r = recover_once(url, Path(tmp), interval, grace, scenario)
                    except RuntimeError as exc:
                        print(f"{backend:<11}{interval}/{grace:<9}{scenario:<7} failed: {exc}", flush=True)
                        continue
                upper = grace + (interval if scenario == "idle" else r["cycle"])
                cycle = "-" if scenario == "idle" else f"{r['cycle']:.2f}"
                print(f"{backend:<11}{f'{interval}/{grace} s':<11}{scenario:<7}{r['failed']:8.2f}{r['running']:10.2f}"
                      f"{r['epoch']:9.2f}{r['resumed']:9d}{cycle:>7}  {grace - interval:.1f} - {upper:.1f}",
                      flush=True)


# ---------------------------------------------------------------- artifact stores


@contextmanager
def s3_endpoint() -> Iterator[str]:
    """A bucket on $AWS_ENDPOINT_URL, or on a moto_server started here; yields the bucket's name."""
    import socket

    import boto3

    proc = None
    if not os.environ.get("AWS_ENDPOINT_URL"):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        proc = subprocess.Popen(["moto_server", "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        os.environ.update({"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "bench",
                           "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"})
        for _ in range(100):
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
    bucket = f"bench-{uuid.uuid4().hex[:8]}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    try:
        yield bucket
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait()


def artifact_trial_seconds(location: str, state: dict[str, torch.Tensor], trials: int, epochs: int) -> list[float]:
    store = open_artifact_store(location)
    study = optuna.create_study()
    times = []
    for _ in range(trials):
        start = time.perf_counter()
        trial = study.ask()
        key = f"bench-{uuid.uuid4().hex[:8]}"
        checkpointer = ArtifactCheckpointer(store, study, key)
        for epoch in range(epochs):
            checkpointer.save({"epoch": epoch, "modules": {"network": state}})
        upload_state(trial, store, state, "weights.pt")
        upload_json(trial, store, fake_genotype(), "genotype.json")
        discard_checkpoint(store, study, key)
        study.tell(trial, 1.0)
        times.append(time.perf_counter() - start)
    return times


def bench_artifacts(trials: int, epochs: int, channels: int) -> None:
    from optuna_nas.darts.genotypes import BUILTIN_GENOTYPES
    from optuna_nas.darts.model import network_cifar

    state = network_cifar(BUILTIN_GENOTYPES["DARTS_V2"], channels=channels, layers=8).state_dict()
    megabytes = sum(t.numel() * t.element_size() for t in state.values()) / 1e6
    print(f"\nartifacts: {trials} trials x ({epochs} checkpoints + weights + JSON), state dict {megabytes:.2f} MB")
    with tempfile.TemporaryDirectory() as tmp, s3_endpoint() as bucket:
        rows = {"directory": artifact_trial_seconds(tmp, state, trials, epochs),
                "s3 (127.0.0.1)": artifact_trial_seconds(f"s3://{bucket}/bench", state, trials, epochs)}
    base = statistics.median(rows["directory"])
    print(f"{'store':<16}{'median ms/trial':>16}{'p90 ms':>10}{'ratio':>8}")
    for name, times in rows.items():
        print(f"{name:<16}{statistics.median(times) * 1e3:16.1f}{quantile(times, 0.9) * 1e3:10.1f}"
              f"{statistics.median(times) / base:8.2f}")


# ---------------------------------------------------------------- main


def main() -> None:
    head, _, rest = __doc__.partition("\n\n")
    parser = argparse.ArgumentParser(description=head, epilog=rest,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", nargs="?", choices=["overhead", "recovery", "artifacts", "all"], default="all")
    parser.add_argument("--epochs", type=int, default=5, help="checkpoints per trial in the artifacts part (5)")
    parser.add_argument("--channels", type=int, default=16, help="C of the artifacts part's network (16)")
    parser.add_argument("--trials", type=int, default=1000, help="trials per backend and level (1000)")
    parser.add_argument("--backends", nargs="+", default=["sqlite", "journal", "postgresql"],
                        choices=["sqlite", "journal", "postgresql"])
    parser.add_argument("--levels", nargs="+", default=list(LEVELS), choices=LEVELS, help="overhead levels")
    parser.add_argument("--settings", nargs="+", default=["1/4", "2/8"], help="heartbeat interval/grace, seconds")
    parser.add_argument("--scenarios", nargs="+", default=["busy", "idle"], choices=["busy", "idle"],
                        help="what the surviving worker does when the other is killed")
    parser.add_argument("--postgres", default=None, help="PostgreSQL URL (default: $OPTUNA_NAS_PGURL or a private one)")
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--quick", action="store_true", help="smoke run: 100 trials, 1/4 s, busy only")
    args = parser.parse_args()
    if args.quick:
        args.trials, args.settings, args.scenarios = min(args.trials, 100), args.settings[:1], ["busy"]
    settings = [(int(a), int(b)) for a, b in (s.split("/") for s in args.settings)]
    warnings.simplefilter("ignore")  # heartbeats/artifacts are "experimental"; ask() warns about heartbeats
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    load = os.getloadavg()[0]
    print(f"bench_storage: {os.cpu_count()} CPUs, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, "
          f"optuna {optuna.__version__}, sqlalchemy {sqlalchemy.__version__}, load {load:.2f}")
    with postgres_server(args) as pg_url:
        backends = [b for b in args.backends if b != "postgresql" or pg_url]
        if pg_url:
            print(f"PostgreSQL: {pg_url}")
        if args.part in ("overhead", "all"):
            bench_overhead(backends, args.levels, args.trials, pg_url)
        if args.part in ("recovery", "all"):
            bench_recovery(backends, settings, args.scenarios, pg_url)
        if args.part in ("artifacts", "all"):
            bench_artifacts(min(args.trials, 50), args.epochs, args.channels)
    print(f"\n1-min load average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
