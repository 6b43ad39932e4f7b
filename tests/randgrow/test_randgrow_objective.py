"""RandGrow growth trials: weights through the artifact store, (error, cost) values, clear errors."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import optuna
import pytest
import torch

from optuna_nas.artifacts import ArtifactCheckpointer, download_state, find_artifact, open_artifact_store
from optuna_nas.data import synthetic_dataset
from optuna_nas.errors import NasError
from optuna_nas.randgrow import Architecture, RandGrowSampler, get_proposal
from optuna_nas.randgrow.objective import (
    INITIAL_TRAINING,
    SEARCH_TRAINING,
    WEIGHTS_FILE,
    RandGrowJob,
    RandGrowObjective,
    skeleton_for,
)
from optuna_nas.trials import TrialContext

optuna.logging.set_verbosity(optuna.logging.WARNING)
DATA = synthetic_dataset(48, 16, size=8, num_classes=3)


def _job(tmp_path: Path, **overrides: object) -> RandGrowJob:
    tiny = {"epochs": 1, "batch_size": 16, "channels_last": False}
    job = RandGrowJob(search=replace(SEARCH_TRAINING, cycles=1, **tiny),  # type: ignore[arg-type]
                      initial=replace(INITIAL_TRAINING, **tiny), val_portion=0.25)  # type: ignore[arg-type]
    return replace(job, **overrides)  # type: ignore[arg-type]


def _context(tmp_path: Path) -> TrialContext:
    return TrialContext(device="cpu", artifact_store=str(tmp_path / "artifacts"), verbose=False)


def _grow(job: RandGrowJob, n_trials: int, mode: str = "macro",
          context: TrialContext | None = None) -> tuple[optuna.Study, RandGrowObjective]:
    objective = RandGrowObjective(job, DATA, context)
    initial = Architecture(skeleton_for(DATA, cells_per_block=1, channels=4))
    study = optuna.create_study(directions=["minimize", "minimize"],
                                sampler=RandGrowSampler(initial, mode, seed=0, verbose=False))  # type: ignore[arg-type]
    study.optimize(objective, n_trials=n_trials, catch=())
    return study, objective


@pytest.fixture(autouse=True)
def last_checkpoints(monkeypatch: pytest.MonkeyPatch) -> dict[str, dict]:
    """The last epoch checkpoint each run saved (a completed run's checkpoint is deleted from the store)."""
    saved: dict[str, dict] = {}
    real = ArtifactCheckpointer.save

    def save(self: ArtifactCheckpointer, state: dict) -> None:
        saved[self.key] = state
        real(self, state)

    monkeypatch.setattr(ArtifactCheckpointer, "save", save)
    return saved


def _checkpoint(saved: dict[str, dict], study: optuna.Study, number: int) -> dict[str, torch.Tensor]:
    return saved["grow-" + study.trials[number].user_attrs["run_key"]]["modules"]["network"]


def test_every_model_uploads_its_trained_weights(tmp_path, last_checkpoints) -> None:
    study, _ = _grow(_job(tmp_path), 2, context=_context(tmp_path))
    store = open_artifact_store(_context(tmp_path).artifact_store)
    for trial in study.trials:
        assert trial.state == optuna.trial.TrialState.COMPLETE
        uploaded = download_state(store, find_artifact(trial, study._storage, WEIGHTS_FILE))  # type: ignore[arg-type]
        trained = _checkpoint(last_checkpoints, study, trial.number)
        assert uploaded.keys() == trained.keys()
        assert all(torch.equal(uploaded[k], trained[k]) for k in trained)


def test_a_child_trains_from_its_parents_weights(tmp_path, last_checkpoints) -> None:
    """With a vanishing learning rate the child's inherited convolutions stay its parent's trained ones."""
    still = {"lr": 1e-12, "momentum": 0.0, "weight_decay": 0.0}
    job = _job(tmp_path, function_preserving=True)
    job = replace(job, search=replace(job.search, **still))  # type: ignore[arg-type]
    study, _ = _grow(job, 2, context=_context(tmp_path))
    child = get_proposal(study.trials[1])
    assert child is not None and child.parent == 0
    parent_state, child_state = _checkpoint(last_checkpoints, study, 0), _checkpoint(last_checkpoints, study, 1)
    inherited = [k for k in parent_state if k.endswith("weight") and parent_state[k].dim() == 4]
    assert inherited and set(parent_state) < set(child_state)
    for key in inherited:
        torch.testing.assert_close(child_state[key], parent_state[key], rtol=0, atol=1e-9)


@pytest.mark.parametrize("cost", ["params", "flops"])
def test_values_are_validation_error_and_the_chosen_cost(tmp_path, cost: str) -> None:
    study, _ = _grow(_job(tmp_path, cost=cost), 2, mode="cell", context=_context(tmp_path))
    for trial in study.trials:
        error, value = trial.values
        assert 0.0 <= error <= 100.0 and error == pytest.approx(trial.user_attrs["val_error"], abs=1e-3)
        assert value == trial.user_attrs[cost] > 0
        assert len(trial.user_attrs["val_error_history"]) == 1
    assert study.trials[1].values[1] > study.trials[0].values[1]  # growing costs something


def test_a_trial_without_a_proposal_is_refused(tmp_path) -> None:
    objective = RandGrowObjective(_job(tmp_path), DATA, _context(tmp_path))
    study = optuna.create_study(directions=["minimize", "minimize"])
    with pytest.raises(NasError, match="RandGrowSampler"):
        study.optimize(objective, n_trials=1, catch=())


def test_an_architecture_for_other_data_is_refused(tmp_path) -> None:
    objective = RandGrowObjective(_job(tmp_path), DATA, _context(tmp_path))
    initial = Architecture(replace(skeleton_for(DATA, 1, 4), num_classes=10))
    study = optuna.create_study(directions=["minimize", "minimize"],
                                sampler=RandGrowSampler(initial, seed=0, verbose=False))
    with pytest.raises(NasError, match="10 classes"):
        study.optimize(objective, n_trials=1, catch=())


def test_an_unknown_cost_is_one_clear_error(tmp_path) -> None:
    with pytest.raises(NasError, match="unknown cost"):
        RandGrowObjective(_job(tmp_path, cost="latency"), DATA, _context(tmp_path))
