"""`optuna-nas search randgrow` end to end: worker processes sharing one storage, resume, retrain."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest

from optuna_nas.artifacts import find_artifact
from optuna_nas.cli import main
from optuna_nas.randgrow import get_proposal
from optuna_nas.randgrow.objective import WEIGHTS_FILE
from optuna_nas.storage import open_storage

TINY = ["--dataset", "synthetic", "--cells-per-block", "1", "--channels", "4", "--epochs", "1", "--cycles", "1",
        "--initial-epochs", "1", "--batch-size", "16", "--quiet"]


def _args(tmp_path: Path, storage: str, *extra: str) -> list[str]:
    return ["search", "randgrow", "--storage", storage, "--study-name", "grow",
            "--artifact-dir", str(tmp_path / "artifacts"), *TINY, *extra]


def _storage(kind: str, tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'grow.db'}" if kind == "sqlite" else f"journal:{tmp_path / 'grow.log'}"


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_two_worker_processes_grow_one_study_without_losing_or_duplicating_trials(tmp_path, kind, capsys) -> None:
    storage = _storage(kind, tmp_path)
    assert main(_args(tmp_path, storage, "--n-trials", "6", "--n-workers", "2")) == 0
    assert "lower convex hull" in capsys.readouterr().out
    study = optuna.load_study(study_name="grow", storage=open_storage(storage))
    trials = study.get_trials()
    assert [t.number for t in trials] == list(range(6))
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    proposals = [get_proposal(t) for t in trials]
    assert sum(p.parent is None for p in proposals) == 1  # one initial model, whichever worker trained it
    for trial, proposal in zip(trials, proposals, strict=True):
        assert proposal is not None
        assert find_artifact(trial, study._storage, WEIGHTS_FILE) is not None
        if proposal.parent is not None:  # a child of another trial (a worker that waited for the initial
            parent = proposals[proposal.parent]  # model may pick a parent numbered after itself)
            assert proposal.parent != trial.number and parent is not None
            assert proposal.generation == parent.generation + 1
            assert proposal.architecture.increments[: -proposal.new_increments] == parent.architecture.increments
    assert len({p.architecture.to_json() for p in proposals}) == 6  # every trial a different model
    assert study.metric_names == ["val_error", "params"]

    # rerunning the same command is a resume: nothing more to do; a larger budget grows on
    assert main(_args(tmp_path, storage, "--n-trials", "6")) == 0
    assert len(study.get_trials()) == 6
    assert main(_args(tmp_path, storage, "--n-trials", "7")) == 0
    assert len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))) == 7


def test_resuming_with_other_settings_is_refused_before_anything_is_stored(tmp_path, capsys) -> None:
    storage = _storage("sqlite", tmp_path)
    assert main(_args(tmp_path, storage, "--n-trials", "1")) == 0
    assert main(_args(tmp_path, storage, "--n-trials", "2", "--mode", "cell")) == 2
    assert "mode 'macro' -> 'cell'" in capsys.readouterr().err
    assert len(optuna.load_study(study_name="grow", storage=storage).trials) == 1


def test_odd_channels_are_one_clear_error(tmp_path, capsys) -> None:
    args = _args(tmp_path, _storage("sqlite", tmp_path), "--n-trials", "1")
    args[args.index("--channels") + 1] = "5"
    assert main(args) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_retrain_a_trial_of_the_study_and_its_exported_json(tmp_path, capsys) -> None:
    storage = _storage("sqlite", tmp_path)
    assert main(_args(tmp_path, storage, "--n-trials", "2")) == 0
    capsys.readouterr()
    common = ["--storage", storage, "--dataset", "synthetic", "--epochs", "1", "--batch-size", "16", "--quiet",
              "--artifact-dir", str(tmp_path / "artifacts"), "--json"]
    assert main(["retrain", "--study-name", "grow", "--trial", "1", "--runs", "2", *common]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [line["seed"] for line in lines[:2]] == [0, 1] and lines[2]["runs"] == 2
    retrained = optuna.load_study(study_name="grow-retrain", storage=storage).trials
    grown = optuna.load_study(study_name="grow", storage=storage).trials[1]
    grown_json = get_proposal(grown).architecture_json
    assert retrained[0].user_attrs["architecture"] == grown_json
    assert retrained[0].user_attrs["params"] == grown.user_attrs["params"]

    path = tmp_path / "arch.json"
    path.write_text(grown_json)
    assert main(["retrain", str(path), "--study-name", "from-file", *common]) == 0
    assert main(["retrain", "--study-name", "grow", "--trial", "9", *common]) == 2
    assert "no trial 9" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study.optimize")
def test_a_rerun_leaves_no_trial_running_that_no_worker_owns(tmp_path, kind) -> None:
    """A worker died in the middle of a trial after the study had its models; the rerun, which has nothing left to
    train, fails the dead worker's trial once its heartbeat is stale (here after 2 s) instead of leaving it
    RUNNING."""
    from optuna_nas.heartbeat import Heartbeat

    storage = _storage(kind, tmp_path)
    beat = ["--heartbeat-interval", "1", "--grace-period", "2"]
    assert main(_args(tmp_path, storage, "--n-trials", "2", *beat)) == 0
    study = optuna.load_study(study_name="grow", storage=open_storage(storage, Heartbeat(1, 2)))
    orphan = study.ask()  # what a worker killed mid-trial leaves: a RUNNING trial with a heartbeat that stops
    study._storage.record_heartbeat(orphan._trial_id)
    assert main(_args(tmp_path, storage, "--n-trials", "2", *beat)) == 0
    states = [t.state for t in optuna.load_study(study_name="grow", storage=open_storage(storage)).get_trials()]
    assert optuna.trial.TrialState.RUNNING not in states
    assert states[orphan.number] == optuna.trial.TrialState.FAIL


def test_randgrow_search_takes_the_heartbeat_flags(tmp_path) -> None:
    from optuna_nas.cli import build_parser

    args = build_parser().parse_args(_args(tmp_path, "sqlite:///x.db", "--heartbeat-interval", "5",
                                           "--grace-period", "20"))
    assert (args.heartbeat_interval, args.grace_period) == (5, 20)
