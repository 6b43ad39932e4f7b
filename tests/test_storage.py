"""Storages: concurrent first use of a new database, secrets kept out of every message."""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from optuna_nas.errors import redact
from optuna_nas.storage import load_or_create_study

from _studies import write_study

SECRET = "s3cr3t-Pa55"


def _create(url: str, barrier: multiprocessing.synchronize.Barrier, results: multiprocessing.Queue) -> None:
    barrier.wait()
    try:
        load_or_create_study(url, "race", ["minimize"], ["test_error"])
        results.put("ok")
    except Exception as exc:  # noqa: BLE001 - reported to the test
        results.put(f"{type(exc).__name__}: {exc}")


def test_many_processes_creating_one_new_sqlite_database_at_once_all_succeed(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'new.db'}"
    context = multiprocessing.get_context("spawn")
    n = 8
    barrier, results = context.Barrier(n), context.Queue()
    processes = [context.Process(target=_create, args=(url, barrier, results)) for _ in range(n)]
    for process in processes:
        process.start()
    outcomes = [results.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(timeout=60)
    assert outcomes == ["ok"] * n
    assert [s.study_name for s in optuna.get_all_study_summaries(url)] == ["race"]


def test_two_runs_started_at_once_on_a_new_sqlite_file_both_finish(tmp_path: Path) -> None:
    path = write_study(tmp_path, "twins", seeds=[0, 1])
    command = [sys.executable, "-m", "optuna_nas", "run", path, "--storage", f"sqlite:///{tmp_path / 'db.sqlite'}",
               "--artifact-dir", str(tmp_path / "a"), "--quiet", "--heartbeat-interval", "1", "--grace-period", "3"]
    runs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outcomes = [run.communicate(timeout=300) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], [err for _, err in outcomes]
    study = optuna.load_study(study_name="twins", storage=f"sqlite:///{tmp_path / 'db.sqlite'}")
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert sorted(t.params["seed"] for t in complete) == [0, 1]  # each point once


@pytest.mark.parametrize("text", [
    f"cannot open storage 'postgresql+psycopg2://nas:{SECRET}@db.example:5432/nas': connection refused",
    f"redis://:{SECRET}@127.0.0.1:6379/0", f"mysql+pymysql://root:{SECRET}@localhost/optuna?charset=utf8",
    f"postgresql://nas@host/db?password={SECRET}&sslmode=require",
])
def test_redact_removes_every_password_and_keeps_the_rest(text: str) -> None:
    shown = redact(text)
    assert SECRET not in shown and "***" in shown
    assert shown.split("***")[0] == text.split(SECRET)[0]  # everything before the secret stays readable


@pytest.mark.parametrize("command", [
    ["run", "STUDY"], ["search", "darts", "--dataset", "synthetic", "--epochs", "1"],
    ["report", "--study-name", "x"], ["export", "--study-name", "x", "-o", "out.json"],
    ["retrain", "DARTS_V2", "--dataset", "synthetic", "--epochs", "1"],
])
def test_no_command_prints_a_database_password(tmp_path: Path, command: list[str]) -> None:
    url = f"postgresql+psycopg2://nas:{SECRET}@127.0.0.1:9/nas"  # nothing listens on port 9
    args = [write_study(tmp_path, "s") if a == "STUDY" else a for a in command]
    done = subprocess.run([sys.executable, "-m", "optuna_nas", *args, "--storage", url], capture_output=True,
                          text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 2
    assert SECRET not in done.stdout + done.stderr
    assert "nas:***@127.0.0.1" in done.stderr and done.stderr.count("\n") == 1


def _pop_queued(url: str, barrier: multiprocessing.synchronize.Barrier, results: multiprocessing.Queue) -> None:
    from optuna_nas.storage import open_storage

    study = optuna.load_study(study_name="queue", storage=open_storage(url))
    barrier.wait()
    taken: list = []
    try:
        while True:
            trial = study.ask()
            x = trial.suggest_int("x", 0, 10_000)
            study.tell(trial, 0.0)
            if not trial.user_attrs.get("queued"):
                break  # the queue is empty: this was a fresh trial
            taken.append(x)
    except Exception as exc:  # noqa: BLE001 - e.g. "Cannot tell a COMPLETE trial": the other worker ran it too
        taken.append(f"{type(exc).__name__}: {exc}")
    results.put(taken)


def test_two_workers_never_take_the_same_queued_trial_on_sqlite(tmp_path: Path) -> None:
    """Optuna hands a waiting trial out with SELECT ... FOR UPDATE, which SQLite ignores; our SQLite transactions
    begin with the write lock, so each queued trial runs once."""
    url = f"sqlite:///{tmp_path / 'queue.db'}"
    study = load_or_create_study(url, "queue", ["minimize"], ["value"])
    for x in range(150):
        study.enqueue_trial({"x": x}, user_attrs={"queued": True})
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(2), context.Queue()
    workers = [context.Process(target=_pop_queued, args=(url, barrier, results)) for _ in range(2)]
    for worker in workers:
        worker.start()
    taken = [x for _ in workers for x in results.get(timeout=120)]
    for worker in workers:
        worker.join(timeout=60)
    assert sorted(taken) == list(range(150))  # every queued trial once: none twice, none lost


def test_a_failed_commit_while_opening_says_what_the_database_said(monkeypatch: pytest.MonkeyPatch) -> None:
    """Optuna reports a failed commit with a generic line; the error names the database's own reason too."""
    import sqlalchemy.exc

    from optuna_nas import storage
    from optuna_nas.errors import NasError

    def refuse(*args: object, **kwargs: object) -> None:
        try:
            raise sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception("FATAL:  sorry, too many clients already"))
        except sqlalchemy.exc.OperationalError as exc:
            raise optuna.exceptions.StorageInternalError("An exception is raised during the commit.") from exc

    monkeypatch.setattr(storage, "RDBStorage", refuse)
    with pytest.raises(NasError, match=r"during the commit\. \(OperationalError: .*too many clients already") as err:
        storage.open_storage("postgresql+psycopg2://user@127.0.0.1:5433/db")
    assert "\n" not in str(err.value)
