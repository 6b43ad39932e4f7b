"""Every shipped study's tiny preset runs end to end (one of its trials here, to keep the suite short; the
whole tiny grid is the README's example)."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState

from optuna_nas.cli import main
from optuna_nas.resources import shipped_names


@pytest.mark.slow
@pytest.mark.parametrize("name", shipped_names("studies"))
def test_tiny_preset_runs(name: str, tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'db.sqlite'}"
    torch.set_num_threads(1)
    assert main(["run", name, "--preset", "tiny", "--storage", storage, "--artifact-dir", str(tmp_path / "a"),
                 "--n-trials", "1", "--quiet"]) == 0
    study = optuna.load_study(study_name=f"{name}-tiny", storage=storage)
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 1
