"""Data-parallel retraining (torchrun, gloo on CPU): the processes see exactly one process's batches, compute its
loss within BatchNorm's per-process statistics, and make one Optuna trial that resumes like any other."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import torch
from optuna.artifacts import get_all_artifact_meta

from optuna_nas.cli import main
from optuna_nas.data import load_dataset, make_batches

from _studies import interrupt_after_first_epoch

COMMAND = ["retrain", "DARTS_V2", "--dataset", "synthetic", "--channels", "4", "--layers", "3", "--batch-size", "32"]


@pytest.mark.parametrize("train", [True, False])
def test_the_shards_of_a_batch_are_the_batch_one_process_sees(train: bool) -> None:
    data = load_dataset("synthetic")

    def batches(shard: tuple[int, int] | None) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return list(make_batches(data, "train", None, 32, train, torch.device("cpu"), torch.Generator().manual_seed(3),
                                 cutout=True, shard=shard))

    whole, halves = batches(None), [batches((rank, 2)) for rank in range(2)]
    assert len(whole) == len(halves[0]) == len(halves[1])
    for (x, y), (x0, y0), (x1, y1) in zip(whole, *halves, strict=True):
        assert len(y0) == len(y1) == len(y) // 2 or not train
        assert torch.equal(torch.cat([x0, x1]), x) and torch.equal(torch.cat([y0, y1]), y)  # augmentation included


def _torchrun(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    runner = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([runner, "--nproc-per-node", "2", "--master-port", str(29500 + os.getpid() % 500),
                           "-m", "optuna_nas", *args], capture_output=True, text=True, cwd=tmp_path, env=env,
                          timeout=600)


def _losses(text: str) -> list[float]:
    return [float(v) for v in re.findall(r"\] epoch \d+/\d+ .*?train_loss ([0-9.]+)", text)]


@pytest.mark.slow
def test_two_processes_train_one_trial_with_one_process_loss(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    storage = f"sqlite:///{tmp_path / 'db.sqlite'}"
    args = [*COMMAND, "--epochs", "2", "--storage", storage, "--artifact-dir", str(tmp_path / "a")]
    torch.set_num_threads(1)
    assert main([*args, "--study-name", "one"]) == 0
    alone = _losses(capsys.readouterr().err)
    done = _torchrun(tmp_path, *args, "--study-name", "two")
    assert done.returncode == 0, done.stderr[-3000:]
    together = _losses(done.stderr)
    assert len(alone) == len(together) == 2
    for a, b in zip(alone, together, strict=True):  # the same global batches; BatchNorm statistics per process
        assert b == pytest.approx(a, rel=0.03)
    study = optuna.load_study(study_name="two", storage=storage)
    (trial,) = study.trials
    assert trial.state.name == "COMPLETE" and trial.user_attrs["processes"] == 2
    assert "weights.pt" in {m.filename for m in get_all_artifact_meta(trial, storage=study._storage)}
    assert done.stderr.count("trial 0 (seed 0)") == 0 and done.stdout.count("trial 0 (seed 0)") == 1  # the lead


@pytest.mark.slow
def test_a_run_interrupted_alone_resumes_on_two_processes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    storage = f"sqlite:///{tmp_path / 'db.sqlite'}"
    args = [*COMMAND, "--epochs", "3", "--storage", storage, "--artifact-dir", str(tmp_path / "a"), "--quiet"]
    torch.set_num_threads(1)
    interrupt_after_first_epoch(monkeypatch)
    assert main(args) == 130
    done = _torchrun(tmp_path, *args)
    assert done.returncode == 0, done.stderr[-3000:]
    trials = optuna.load_study(study_name="retrain", storage=storage).trials
    assert [t.state.name for t in trials] == ["FAIL", "COMPLETE"]
    assert trials[1].user_attrs["resumed_from_epoch"] == 1 and sorted(trials[1].intermediate_values) == [1, 2, 3]
