"""What optuna-dashboard shows of a search, rendered in headless Chromium: a DARTS search's learning curve, its
architecture-weights figure and cell drawing; a RandGrow search's learning curves, grown-network drawings and
readable architectures. Every image the page shows is fetched back and is the PNG in the artifact store."""

from __future__ import annotations

import re
import urllib.request
from pathlib import Path

import optuna
import pytest
import torch
from optuna.artifacts import get_all_artifact_meta

from optuna_nas.artifacts import open_artifact_store
from optuna_nas.cli import main

from services import render_dom, serve_dashboard

PNG = b"\x89PNG\r\n\x1a\n"


def _images(dom: str) -> dict[str, str]:
    """The page's images: alt text (the artifact's file name) -> src."""
    return {alt: src for alt, src in re.findall(r'<img[^>]*alt="([^"]+)"[^>]*src="([^"]+)"', dom)}


def _check_images(base: str, dom: str, study: optuna.Study, trial: optuna.trial.FrozenTrial, artifacts: Path,
                  expected: set[str]) -> None:
    images = _images(dom)
    assert expected <= set(images), f"images on the page: {sorted(images)}"
    store = open_artifact_store(artifacts)
    stored = {meta.filename: meta.artifact_id for meta in get_all_artifact_meta(trial, storage=study._storage)}
    for name in expected:
        with urllib.request.urlopen(base + images[name], timeout=30) as response:
            served = response.read()
        with store.open_reader(stored[name]) as reader:
            assert served == reader.read() and served.startswith(PNG), name


@pytest.mark.slow
@pytest.mark.browser
def test_a_darts_search_shows_its_architecture_weights_cells_and_learning_curve(chromium: str,
                                                                                 tmp_path: Path) -> None:
    storage, artifacts = f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path / "artifacts"
    torch.set_num_threads(1)
    assert main(["search", "darts", "--activation-mode", "factorized", "--dataset", "synthetic", "--epochs", "2",
                 "--channels", "4", "--layers", "3", "--storage", storage, "--study-name", "darts-view",
                 "--artifact-dir", str(artifacts), "--quiet"]) == 0
    study = optuna.load_study(study_name="darts-view", storage=storage)
    (trial,) = study.trials
    with serve_dashboard(storage, artifacts) as base:
        page = render_dom(chromium, f"{base}/dashboard/studies/{study._study_id}/trials?numbers=0")
        _check_images(base, page, study, trial, artifacts, {"architecture-weights.png", "cells.png"})
        for shown in ("genotype", "search_wall_hours", "supernet.pt", "architecture-weights.json"):
            assert shown in page, shown
        history = render_dom(chromium, f"{base}/dashboard/studies/{study._study_id}")
        assert "Intermediate values" in history and "val_acc" in history  # the per-epoch learning curve


@pytest.mark.slow
@pytest.mark.browser
def test_a_randgrow_search_shows_curves_drawings_and_readable_architectures(chromium: str, tmp_path: Path) -> None:
    storage, artifacts = f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path / "artifacts"
    torch.set_num_threads(1)
    assert main(["search", "randgrow", "--dataset", "synthetic", "--cells-per-block", "1", "--channels", "4",
                 "--epochs", "2", "--cycles", "1", "--initial-epochs", "2", "--batch-size", "32", "--n-trials", "2",
                 "--storage", storage, "--study-name", "grow-view", "--artifact-dir", str(artifacts),
                 "--quiet"]) == 0
    study = optuna.load_study(study_name="grow-view", storage=storage)
    child = study.trials[1]
    assert len(child.user_attrs["val_error_history"]) == 2
    with serve_dashboard(storage, artifacts) as base:
        page = render_dom(chromium, f"{base}/dashboard/studies/{study._study_id}/trials?numbers=1")
        _check_images(base, page, study, child, artifacts, {"learning-curve.png", "network.png"})
        assert "architecture_summary" in page and child.user_attrs["architecture_summary"] in page
        assert "architecture.json" in page and "randgrow-weights.pt" in page
