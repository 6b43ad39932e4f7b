"""A RandGrow study file: rows that share a search grow one study, the best grown model is trained finally,
and report / export read both the final trainings and the growth study."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState

from optuna_nas.cli import main
from optuna_nas.randgrow.architecture import Architecture
from optuna_nas.retrain import load_architecture

from _studies import TINY_RETRAIN, write_study

GROW = {"n_models": 2, "cells_per_block": 1, "channels": 4, "epochs": 1, "cycles": 1, "initial_epochs": 1,
        "batch_size": 32, "cutout": False}


@pytest.mark.slow
def test_randgrow_rows_share_growth_and_train_the_best_model(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = write_study(tmp_path, "grow", objective="randgrow", randgrow=GROW,
                       retrain={**TINY_RETRAIN, "drop_path_prob": 0.2, "auxiliary_weight": 0.0},
                       configurations=[{"name": "macro"},
                                       {"name": "macro_no_droppath", "retrain": {"drop_path_prob": 0.0}},
                                       {"name": "cell", "randgrow": {"space": "randgrow_cell"}}])
    storage = f"sqlite:///{tmp_path / 'db.sqlite'}"
    torch.set_num_threads(1)
    assert main(["run", path, "--storage", storage, "--artifact-dir", str(tmp_path / "a"), "--quiet"]) == 0
    names = sorted(s.study_name for s in optuna.get_all_study_summaries(storage))
    growth = [n for n in names if n.startswith("grow-grow-")]
    assert len(growth) == 2 and any("-macro-N1-F4-" in n for n in growth) and any("-cell-" in n for n in growth)
    final = {t.params["configuration"]: t for t in optuna.load_study(study_name="grow", storage=storage).trials}
    assert all(t.state == TrialState.COMPLETE for t in final.values())
    assert final["macro"].user_attrs["search_study"] == final["macro_no_droppath"].user_attrs["search_study"]
    assert final["macro"].user_attrs["parent"] == final["macro_no_droppath"].user_attrs["parent"]
    for name in growth:  # each search grew exactly its n_models, once
        grown = optuna.load_study(study_name=name, storage=storage)
        assert len(grown.get_trials(states=(TrialState.COMPLETE,))) == GROW["n_models"]
    out = tmp_path / "best.json"
    assert main(["export", "--storage", storage, "--study-name", "grow", "-o", str(out)]) == 0
    assert isinstance(load_architecture(str(out)), Architecture)
    capsys.readouterr()
    macro = next(n for n in growth if "-macro-" in n)
    assert main(["report", "--storage", storage, "--study-name", macro, "--plots", str(tmp_path / "p")]) == 0
    assert "lower convex hull" in capsys.readouterr().out and (tmp_path / "p" / "pareto.png").is_file()
