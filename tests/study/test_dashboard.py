"""optuna-dashboard serves a study written by `optuna-nas run`, and headless Chromium renders it: the trials, the
metric name, the study's note, user attrs and the artifacts (genotype JSON, cell drawing) are on the page."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import torch

from optuna_nas.cli import main

from _studies import TINY_SEARCH, write_study
from services import render_dom, serve_dashboard


@pytest.mark.slow
@pytest.mark.browser
def test_dashboard_shows_a_study_written_by_optuna_nas_run(chromium: str, tmp_path: Path) -> None:
    path = write_study(tmp_path, "dashboard-study", objective="search_retrain", space="darts",
                       search=dict(TINY_SEARCH), seeds=[0, 1],
                       configurations=[{"name": "relu_row", "search": {"activation_mode": "fixed:relu"}}])
    storage, artifacts = f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path / "artifacts"
    torch.set_num_threads(1)
    assert main(["run", path, "--storage", storage, "--artifact-dir", str(artifacts), "--quiet"]) == 0
    study = optuna.load_study(study_name="dashboard-study", storage=storage)
    with serve_dashboard(storage, artifacts) as base:
        listing = render_dom(chromium, f"{base}/dashboard/")
        assert "dashboard-study" in listing and "dashboard-study-searches" in listing
        history = render_dom(chromium, f"{base}/dashboard/studies/{study._study_id}")
        assert "test_error" in history  # the metric name
        trials = render_dom(chromium, f"{base}/dashboard/studies/{study._study_id}/trials?numbers=1")
        for shown in ("relu_row", "configuration", "search_wall_hours", "genotype", "cells.png", "genotype.json"):
            assert shown in trials, shown
        note = render_dom(chromium, f"{base}/dashboard/studies/{study._study_id}/note")
        assert "test study dashboard-study" in note
