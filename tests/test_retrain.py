"""Retraining as a trial: it reports what it returns, keeps its weights, is rebuilt from the trial, is not run
twice, and reading a study that is not there creates nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import torch
from optuna.artifacts import get_all_artifact_meta

from optuna_nas.cli import main
from optuna_nas.data import load_dataset
from optuna_nas.retrain import load_trained_network, trained_weights
from optuna_nas.train import TrainSettings, evaluate_split

TINY = ["--dataset", "synthetic", "--epochs", "2", "--channels", "4", "--layers", "3", "--batch-size", "32",
        "--quiet"]


def _retrain(tmp_path: Path, *extra: str, study: str = "retrain") -> int:
    return main(["retrain", "DARTS_V2", "--storage", f"sqlite:///{tmp_path / 'r.db'}", "--study-name", study,
                 "--artifact-dir", str(tmp_path / "artifacts"), *TINY, *extra])


def _study(tmp_path: Path, name: str = "retrain") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path / 'r.db'}")


@pytest.mark.parametrize(("extra", "metric"), [((), "test_error"), (("--val-portion", "0.25"), "val_error")])
def test_a_retraining_reports_every_epoch_the_value_it_returns(tmp_path: Path, extra: tuple[str, ...],
                                                               metric: str) -> None:
    assert _retrain(tmp_path, *extra) == 0
    study = _study(tmp_path)
    (trial,) = study.trials
    assert study.metric_names == [metric] and trial.user_attrs["metric"] == metric
    assert set(trial.intermediate_values) == {1, 2}
    assert trial.intermediate_values[2] == pytest.approx(trial.value)  # the last report is the returned value
    assert trial.user_attrs["test_error"] == pytest.approx(100.0 - trial.user_attrs["test_acc"], abs=1e-3)
    if metric == "test_error":
        assert trial.value == pytest.approx(trial.user_attrs["test_error"], abs=1e-3)
    else:
        assert trial.value == pytest.approx(trial.user_attrs["val_error"], abs=1e-3)
    files = {meta.filename for meta in get_all_artifact_meta(trial, storage=study._storage)}
    assert {"weights.pt", "genotype.json", "cells.png"} <= files


def test_the_trained_network_is_rebuilt_from_its_trial(tmp_path: Path) -> None:
    assert _retrain(tmp_path) == 0
    study = _study(tmp_path)
    net = load_trained_network(study, 0, str(tmp_path / "artifacts"))
    assert not net.training
    data = load_dataset("synthetic")
    metrics = evaluate_split(net, data, "test", TrainSettings(batch_size=32, amp=False), torch.device("cpu"))
    assert metrics["test_acc"] == pytest.approx(study.trials[0].user_attrs["test_acc"], abs=1e-3)


def test_export_writes_the_weights_beside_the_architecture(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert _retrain(tmp_path) == 0
    out = tmp_path / "export" / "best.json"
    assert main(["export", "--storage", f"sqlite:///{tmp_path / 'r.db'}", "--study-name", "retrain", "-o", str(out),
                 "--weights", "--artifact-dir", str(tmp_path / "artifacts")]) == 0
    assert "genotype" in json.loads(out.read_text())
    saved = torch.load(out.with_suffix(".pt"), weights_only=True)
    stored = trained_weights(_study(tmp_path), 0, str(tmp_path / "artifacts"))
    assert saved.keys() == stored.keys() and all(torch.equal(saved[k], stored[k]) for k in stored)
    assert not list(out.parent.glob("*.tmp"))


def test_a_finished_run_is_not_run_twice_unless_forced(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert _retrain(tmp_path) == 0
    capsys.readouterr()
    assert _retrain(tmp_path) == 0
    assert "trial 0 of 'retrain' already holds this result" in capsys.readouterr().err
    assert len(_study(tmp_path).trials) == 1
    assert _retrain(tmp_path, "--force") == 0
    assert [t.state.name for t in _study(tmp_path).trials] == ["COMPLETE", "COMPLETE"]


def test_a_finished_search_is_not_run_twice(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    args = ["search", "darts", "--activation-mode", "fixed:relu", "--storage", f"sqlite:///{tmp_path / 's.db'}",
            "--study-name", "s", "--artifact-dir", str(tmp_path / "a"), "--dataset", "synthetic", "--epochs", "1",
            "--channels", "4", "--layers", "3", "--quiet"]
    assert main(args) == 0 and main(args) == 0
    assert "trial 0 of 's' already holds this result" in capsys.readouterr().err
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 's.db'}")
    assert len(study.trials) == 1
    attrs = study.trials[0].user_attrs
    assert attrs["search_device"] == "cpu" and attrs["search_wall_hours"] > 0 and "search_process_cpu_hours" in attrs
    files = {meta.filename for meta in get_all_artifact_meta(study.trials[0], storage=study._storage)}
    assert {"supernet.pt", "architecture-weights.json", "architecture-weights.png", "cells.png"} <= files


@pytest.mark.parametrize("command", ["report", "export"])
@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_reading_a_missing_study_is_one_line_and_creates_nothing(tmp_path: Path, command: str, kind: str) -> None:
    storage = f"sqlite:///{tmp_path / 'none.db'}" if kind == "sqlite" else f"journal:{tmp_path / 'none.log'}"
    args = [sys.executable, "-m", "optuna_nas", command, "--storage", storage, "--study-name", "typo"]
    if command == "export":
        args += ["-o", str(tmp_path / "out.json")]
    done = subprocess.run(args, capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "no study 'typo'" in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no database, journal or output file appeared


def test_reading_a_missing_study_in_an_existing_database_adds_nothing(tmp_path: Path) -> None:
    assert _retrain(tmp_path) == 0
    assert main(["report", "--storage", f"sqlite:///{tmp_path / 'r.db'}", "--study-name", "retrian"]) == 2
    assert [s.study_name for s in optuna.get_all_study_summaries(f"sqlite:///{tmp_path / 'r.db'}")] == ["retrain"]
