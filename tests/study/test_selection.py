"""Nothing an optimiser or pruner sees comes from the test split: studies that sample or prune score on data held
out of the training set, and their values do not move when the test labels do."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import optuna
import pytest
import torch

from optuna_nas.cli import main
from optuna_nas.errors import NasError
from optuna_nas.study.spec import load_study_file

from _studies import TINY_RETRAIN, write_study


def _npz(path: Path, corrupt_test_labels: bool) -> str:
    """Learnable 8x8 images (the class brightens one band); the training half is the same in both files."""
    rng = np.random.default_rng(0)

    def make(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = rng.normal(100.0, 30.0, (len(y), 8, 8, 3))
        for k in range(3):
            x[y == k, 2 * k : 2 * k + 3] += 80.0
        return np.clip(x, 0, 255).astype(np.uint8), y

    # test classes of 6, 10 and 16 images: relabelling them changes the test error of any predictor that
    # ignores its input, too (a two-epoch run can end as one)
    x_train, y_train = make(rng.integers(0, 3, 64))
    x_test, y_test = make(rng.permutation(np.repeat([0, 1, 2], [6, 10, 16])))
    if corrupt_test_labels:
        y_test = (y_test + 1) % 3
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return f"npz:{path}"


def test_a_tpe_sweep_is_blind_to_the_test_labels(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """The same TPE sweep on data whose test labels are corrupted: the values TPE and the pruner saw (and the
    learning curves) are identical, and only the recorded test error changed."""
    torch.set_num_threads(1)
    results = []
    for corrupt in (False, True):
        name = f"tpe-{'corrupt' if corrupt else 'clean'}"
        path = write_study(tmp_path, name, sampler="tpe", n_trials=3, pruner="median",
                           dataset=_npz(tmp_path / f"{name}.npz", corrupt),
                           retrain={**TINY_RETRAIN, "epochs": 2, "batch_size": 16},
                           sweep={"retrain.lr": {"low": 0.01, "high": 0.1, "log": True}})
        storage = f"sqlite:///{tmp_path / f'{name}.db'}"
        assert main(["run", path, "--storage", storage, "--artifact-dir", str(tmp_path / "a"), "--quiet"]) == 0
        study = optuna.load_study(study_name=name, storage=storage)
        assert study.metric_names == ["val_error"]
        results.append(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)))
    clean, corrupted = results
    assert len(clean) == len(corrupted) == 3
    for a, b in zip(clean, corrupted, strict=True):
        assert a.params == b.params  # TPE proposed the same points: it saw the same values
        assert a.value == b.value and a.intermediate_values == b.intermediate_values
        assert a.intermediate_values[max(a.intermediate_values)] == a.value  # it reports what it returns
        assert a.user_attrs["metric"] == "val_error"
    assert [t.user_attrs["test_error"] for t in clean] != [t.user_attrs["test_error"] for t in corrupted]
    capsys.readouterr()
    assert main(["report", "--storage", f"sqlite:///{tmp_path / 'tpe-clean.db'}", "--study-name", "tpe-clean"]) == 0
    table = capsys.readouterr().out
    assert "val_error (mean ± std)" in table and "test_error (mean ± std)" in table  # both, side by side


def test_studies_that_sample_or_prune_hold_out_validation_data(tmp_path: Path) -> None:
    paper = load_study_file(write_study(tmp_path, "paper"))
    assert not paper.selects and paper.metric_names == ["test_error"]
    assert paper.configurations[0].retrain.val_portion is None
    for fields in ({"sampler": "random", "n_trials": 2}, {"pruner": "median"}):
        spec = load_study_file(write_study(tmp_path, "selecting", **fields))
        assert spec.selects and spec.metric_names == ["val_error"]
        assert spec.configurations[0].retrain.val_portion == pytest.approx(0.1)
    chosen = load_study_file(write_study(tmp_path, "chosen", pruner="median",
                                         retrain={**TINY_RETRAIN, "val_portion": 0.3}))
    assert chosen.configurations[0].retrain.val_portion == pytest.approx(0.3)
    graded = load_study_file(write_study(tmp_path, "graded", retrain={**TINY_RETRAIN, "val_portion": 0.2}))
    assert not graded.selects and graded.metric_names == ["val_error"]  # a grid may hold out data too


@pytest.mark.parametrize(("fields", "reason"), [
    ({"pruner": "median", "retrain": {**TINY_RETRAIN, "val_portion": None}}, "never on the test split"),
    ({"pruner": "median", "metric_names": ["test_error"]}, "returns val_error"),
    ({"configurations": [{"name": "a", "retrain": {"architecture": "DARTS_V2", "val_portion": 0.2}},
                         {"name": "b", "retrain": {"architecture": "DARTS_V1"}}]}, "either every row"),
    ({"sampler": "tpe", "n_trials": 2, "sweep": {"retrain.val_portion": {"low": 0.1, "high": 0.3}}},
     "one held-out split"),
])
def test_selecting_on_the_test_split_is_refused(tmp_path: Path, fields: dict, reason: str) -> None:
    with pytest.raises(NasError, match=reason):
        load_study_file(write_study(tmp_path, "refused", **fields))
