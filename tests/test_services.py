"""The service fixtures work: Optuna on a real PostgreSQL server, optuna-dashboard rendered by headless Chromium."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from optuna.artifacts import FileSystemArtifactStore, upload_artifact

from services import render_dom, serve_dashboard


@pytest.mark.postgres
def test_optuna_study_round_trips_through_postgres(postgres_url: str) -> None:
    study = optuna.create_study(storage=postgres_url, study_name="pg-smoke", direction="minimize")
    study.optimize(lambda t: (t.suggest_float("x", -1.0, 1.0) - 0.5) ** 2, n_trials=4)

    loaded = optuna.load_study(study_name="pg-smoke", storage=postgres_url)  # a second storage: a new connection
    assert [t.number for t in loaded.trials] == [0, 1, 2, 3]
    assert loaded.best_value == study.best_value
    assert loaded.best_params == study.best_params


@pytest.mark.postgres
def test_each_test_gets_an_empty_database(postgres_url: str) -> None:
    assert optuna.get_all_study_names(storage=postgres_url) == []


@pytest.mark.browser
def test_dashboard_renders_study_name_trial_user_attrs_and_artifacts(chromium: str, tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    artifacts = FileSystemArtifactStore(str(tmp_path / "artifacts"))
    (tmp_path / "artifacts").mkdir()
    (tmp_path / "genotype.txt").write_text("normal: sep_conv_3x3\n")
    study = optuna.create_study(storage=storage, study_name="services-smoke", directions=["minimize", "maximize"])
    for number in range(2):
        trial = study.ask()
        trial.set_user_attr("genotype", f"genotype-{number}")
        upload_artifact(artifact_store=artifacts, file_path=str(tmp_path / "genotype.txt"), study_or_trial=trial)
        study.tell(trial, [0.5 - 0.1 * number, 0.5 + 0.1 * number])
    study_id = study._study_id  # the id in dashboard URLs

    with serve_dashboard(storage, artifact_dir=tmp_path / "artifacts") as base:
        assert "services-smoke" in render_dom(chromium, f"{base}/dashboard/")
        trial_page = render_dom(chromium, f"{base}/dashboard/studies/{study_id}/trials?numbers=1")
    assert "genotype-1" in trial_page and "genotype-0" not in trial_page
    assert "genotype.txt" in trial_page
