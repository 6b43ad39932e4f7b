"""The same command twice at once, a killed command rerun, and names from users that look like paths."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from optuna_nas.cli import main
from optuna_nas.storage import open_storage

TINY = ["--dataset", "synthetic", "--channels", "4", "--layers", "3", "--quiet", "--heartbeat-interval", "1",
        "--grace-period", "3"]


def _command(tmp_path: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "optuna_nas", *args, "--storage", f"sqlite:///{tmp_path / 'db.sqlite'}",
            "--artifact-dir", str(tmp_path / "artifacts"), *TINY]


def _trials(tmp_path: Path, name: str) -> list[optuna.trial.FrozenTrial]:
    # open_storage: the child may be creating the schema at this moment (a plain RDBStorage can fail on that race)
    return optuna.load_study(study_name=name, storage=open_storage(f"sqlite:///{tmp_path / 'db.sqlite'}")).trials


@pytest.mark.slow
def test_two_copies_of_one_search_started_at_once(tmp_path: Path) -> None:
    """Both finish, or one says in one line (exit 3) that the other runs it; one trial trains it either way."""
    command = _command(tmp_path, "search", "darts", "--activation-mode", "fixed:relu", "--epochs", "2",
                       "--study-name", "twice")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    copies = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
              for _ in range(2)]
    outcomes = [copy.communicate(timeout=300) for copy in copies]
    codes = sorted(copy.returncode for copy in copies)
    assert codes in ([0, 0], [0, 3]), outcomes
    for (_, err), copy in zip(outcomes, copies, strict=True):
        if copy.returncode == 3:
            assert err.count("\n") == 1 and "this already" in err
        assert "Traceback" not in err
    trials = _trials(tmp_path, "twice")
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 1 or codes == [0, 0]


@pytest.mark.slow
def test_a_killed_retraining_is_in_progress_until_its_grace_period_then_resumes(tmp_path: Path) -> None:
    command = _command(tmp_path, "retrain", "DARTS_V2", "--epochs", "40", "--batch-size", "32",
                       "--study-name", "killed")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    victim = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while True:  # kill it once it has an epoch checkpoint
        assert time.time() < deadline and victim.poll() is None
        if (tmp_path / "db.sqlite").exists():
            try:
                running = [t for t in _trials(tmp_path, "killed") if t.state == TrialState.RUNNING]
            except KeyError:
                running = []
            if running and running[0].user_attrs.get("epochs_done", 0) >= 1:
                break
        time.sleep(0.1)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    killed_at = time.time()
    # a grace period the rerun comes well within, even on a loaded machine (its start-up alone takes seconds,
    # and the suite runs tests in parallel)
    grace = 25
    patient = list(command)
    patient[patient.index("--grace-period") + 1] = str(grace)
    again = subprocess.run(patient, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 3 and again.stderr.count("\n") == 1, (again.stderr, time.time() - killed_at)
    assert time.time() - killed_at < grace
    assert "is running this already" in again.stderr and "grace period" in again.stderr
    time.sleep(max(0.0, killed_at + grace + 1 - time.time()))  # past the grace period: failed, retried, resumed
    resumed = subprocess.run(patient, env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    trials = _trials(tmp_path, "killed")
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert trials[1].user_attrs["resumed_from_epoch"] >= 1  # from the dead process's checkpoint
    assert not [t for t in trials if t.state == TrialState.RUNNING]


def test_a_study_name_that_looks_like_a_path_writes_only_into_the_artifact_store(tmp_path: Path) -> None:
    work = tmp_path / "deep" / "work"
    work.mkdir(parents=True)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    os.chdir(work)
    try:
        assert main(["retrain", "DARTS_V2", "--study-name", "../../x", "--storage", "sqlite:///db.sqlite",
                     "--artifact-dir", "store", "--dataset", "synthetic", "--epochs", "1", "--channels", "4",
                     "--layers", "3", "--quiet"]) == 0
    finally:
        os.chdir(tmp_path)
    created = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    outside = [p for p in created if p not in before and not str(p).startswith(os.path.join("deep", "work"))]
    assert outside == []
    assert {p.name for p in (work / "store").iterdir()}  # the weights and drawings are there
