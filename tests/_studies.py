"""Tiny study files on synthetic data, shared by the tests that run studies."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml

from optuna_nas import retrain

TINY_SEARCH = {"epochs": 1, "batch_size": 32, "channels": 4, "layers": 3, "amp": False}
TINY_RETRAIN = {"epochs": 1, "batch_size": 32, "channels": 4, "layers": 3, "drop_path_prob": 0.0, "amp": False}


def write_study(directory: Path, name: str, **fields: Any) -> str:
    """A study file in ``directory``; ``fields`` override a one-row retrain study on synthetic data."""
    data: dict[str, Any] = {"name": name, "description": f"test study {name}", "objective": "retrain",
                            "dataset": "synthetic", "retrain": dict(TINY_RETRAIN),
                            "configurations": [{"name": "darts_v2", "retrain": {"architecture": "DARTS_V2"}}],
                            "seeds": [0]}
    data.update(fields)
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(path)


def interrupt_after_first_epoch(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Make the next retraining stop with Ctrl-C once its first epoch is reported (and checkpointed); returns
    the real reporter, for a test that restores it before its rerun."""
    real = retrain.report_to_trial

    def reporter(trial: optuna.Trial, metric: str):  # type: ignore[no-untyped-def]
        report = real(trial, metric)

        def callback(epoch: int, metrics: dict) -> None:
            report(epoch, metrics)
            if epoch == 1 and not metrics.get("replayed"):  # a resumed run replays epoch 1 first
                raise KeyboardInterrupt

        return callback

    monkeypatch.setattr(retrain, "report_to_trial", reporter)
    return real
