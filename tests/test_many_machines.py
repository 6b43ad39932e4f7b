"""Two "machines" sharing nothing but PostgreSQL and an S3-compatible server on 127.0.0.1: separate processes, working
directories and HOMEs. A worker SIGKILLed mid-trial is taken over by the other, which resumes the trial from the
checkpoint in the object store; RandGrow children on one machine grow from weights the other uploaded."""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import boto3
import optuna
import pytest
from optuna.artifacts import get_all_artifact_meta
from optuna.trial import TrialState

from optuna_nas.randgrow import get_proposal
from optuna_nas.storage import open_storage

from _studies import TINY_RETRAIN, write_study

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.s3]
ROWS = [{"name": "darts_v2", "retrain": {"architecture": "DARTS_V2"}},
        {"name": "darts_v1", "retrain": {"architecture": "DARTS_V1"}}]
EPOCHS = 12


def _machine(tmp_path: Path, name: str) -> tuple[Path, dict[str, str]]:
    """A working directory and an environment of its own (HOME included): nothing on disk is shared."""
    home = tmp_path / name / "home"
    home.mkdir(parents=True)
    env = {**os.environ, "HOME": str(home), "OMP_NUM_THREADS": "1"}
    return tmp_path / name, env


@functools.cache
def _poller(url: str) -> optuna.storages.BaseStorage:
    """One storage for all of a test's polls, as a dashboard keeps one: a storage opened ten times a second beside
    busy workers made CI fail once while Optuna set it up ("An exception is raised during the commit")."""
    return open_storage(url)


def _trials(storage: str, name: str) -> list[optuna.trial.FrozenTrial]:
    try:
        return optuna.load_study(study_name=name, storage=_poller(storage)).get_trials(deepcopy=False)
    except KeyError:
        return []


def _keys(bucket: str) -> set[str]:
    pages = boto3.client("s3").get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return {o["Key"] for page in pages for o in page.get("Contents", [])}


def test_a_killed_worker_s_trial_resumes_on_the_other_machine_from_the_object_store(
        postgres_url: str, s3_bucket: str, tmp_path: Path) -> None:
    store = f"s3://{s3_bucket}/study"
    machines = [_machine(tmp_path, f"machine{i}") for i in range(2)]
    workers = []
    for directory, env in machines:
        path = write_study(directory, "killed", configurations=ROWS, seeds=[0, 1],
                           retrain={**TINY_RETRAIN, "epochs": EPOCHS})
        command = [sys.executable, "-m", "optuna_nas", "run", path, "--storage", postgres_url, "--artifact-store",
                   store, "--quiet", "--heartbeat-interval", "1", "--grace-period", "4"]
        workers.append(subprocess.Popen(command, cwd=directory, env=env, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True))
    victim, survivor = workers
    deadline = time.time() + 240
    try:
        while True:  # kill the first machine's worker once its trial has a checkpoint of two epochs
            assert time.time() < deadline and victim.poll() is None, "the worker finished before it could be killed"
            mine = [t for t in _trials(postgres_url, "killed") if t.state == TrialState.RUNNING
                    and t.user_attrs.get("worker", "").endswith(f":{victim.pid}")
                    and t.user_attrs.get("epochs_done", 0) >= 2]
            if mine:
                victim.send_signal(signal.SIGKILL)
                killed_at, killed = time.time(), mine[0].number
                victim.wait()
                break
            time.sleep(0.1)
        taken_over = None
        while survivor.poll() is None and time.time() < deadline:
            retried = [t for t in _trials(postgres_url, "killed") if t.system_attrs.get("failed_trial") == killed
                       and t.state in (TrialState.RUNNING, TrialState.COMPLETE)]
            if retried and taken_over is None:
                taken_over = time.time() - killed_at
            time.sleep(0.2)
        out, _ = survivor.communicate(timeout=max(1.0, deadline - time.time()))
        assert survivor.returncode == 0, out
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
    trials = _trials(postgres_url, "killed")
    complete = [t for t in trials if t.state == TrialState.COMPLETE and "duplicate_of" not in t.user_attrs]
    per_point = Counter((t.params["configuration"], t.params["seed"]) for t in complete)
    print(f"\nmany machines: 1 kill, {len(per_point)} points, taken over {taken_over:.1f} s after the kill "
          f"(grace 4 s), resumed from epoch {[t.user_attrs.get('resumed_from_epoch') for t in complete]}")
    assert per_point == {(row["name"], seed): 1 for row in ROWS for seed in (0, 1)}
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    retried = [t for t in complete if t.system_attrs.get("failed_trial") == killed]
    assert len(retried) == 1 and retried[0].user_attrs["resumed_from_epoch"] >= 2  # the object store's checkpoint
    assert not retried[0].user_attrs["worker"].endswith(f":{victim.pid}")
    keys = _keys(s3_bucket)
    storage = open_storage(postgres_url)
    for trial in complete:  # every completed retraining keeps its weights in the bucket
        weights = [m for m in get_all_artifact_meta(trial, storage=storage) if m.filename == "weights.pt"]
        assert weights and f"study/{weights[0].artifact_id}" in keys
    assert not any((directory / "optuna-nas-artifacts").exists() for directory, _ in machines)  # all in the bucket


def test_randgrow_children_grow_from_weights_the_other_machine_uploaded(
        postgres_url: str, s3_bucket: str, tmp_path: Path) -> None:
    store = f"s3://{s3_bucket}/grow"
    (first, first_env), (second, second_env) = (_machine(tmp_path, f"machine{i}") for i in range(2))

    def grow(directory: Path, env: dict[str, str], n_trials: int) -> subprocess.Popen:
        command = [sys.executable, "-m", "optuna_nas", "search", "randgrow", "--storage", postgres_url,
                   "--study-name", "grow", "--artifact-store", store, "--dataset", "synthetic",
                   "--cells-per-block", "1", "--channels", "4", "--epochs", "1", "--cycles", "1",
                   "--initial-epochs", "1", "--batch-size", "16",
                   "--n-trials", str(n_trials), "--quiet", "--heartbeat-interval", "1", "--grace-period", "4"]
        return subprocess.Popen(command, cwd=directory, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)

    # the initial model on one machine, then children on the other, then both at once
    for batch in ([(first, first_env, 1)], [(second, second_env, 3)],
                  [(first, first_env, 6), (second, second_env, 6)]):
        started = [grow(*machine) for machine in batch]
        for worker in started:
            out, _ = worker.communicate(timeout=300)
            assert worker.returncode == 0, out
    trials = [t for t in _trials(postgres_url, "grow") if t.state == TrialState.COMPLETE]
    assert len(trials) >= 6  # two workers finishing at once may both complete the last model
    by_number = {t.number: t for t in trials}
    crossed = [t for t in trials if (p := get_proposal(t)) is not None and p.parent is not None
               and by_number[p.parent].user_attrs["worker"] != t.user_attrs["worker"]]
    assert crossed, "no child grew from a parent trained by the other machine"
    keys = _keys(s3_bucket)
    storage = open_storage(postgres_url)
    for trial in trials:
        weights = [m for m in get_all_artifact_meta(trial, storage=storage) if m.filename == "randgrow-weights.pt"]
        assert weights and f"grow/{weights[0].artifact_id}" in keys
