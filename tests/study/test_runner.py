"""`optuna-nas run` end to end on tiny synthetic studies: search reuse, resume, report, export, optuna CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import torch
from optuna.artifacts import get_all_artifact_meta
from optuna.trial import TrialState

from optuna_nas import retrain as objectives
from optuna_nas.artifacts import current_checkpoint
from optuna_nas.cli import main
from optuna_nas.darts.genotypes import Genotype
from optuna_nas.retrain import load_architecture
from optuna_nas.study.spec import load_study_file
from optuna_nas.study.stages import StageContext, StudyObjective

from _studies import TINY_RETRAIN, TINY_SEARCH, interrupt_after_first_epoch, write_study

ROWS = [
    {"name": "factorized", "search": {"activation_mode": "factorized"}},
    {"name": "config_a", "search": {"activation_mode": "config_a", "config_a_from": "factorized"}},
    {"name": "factorized->relu", "search": {"activation_mode": "factorized"}, "retrain": {"activation": "relu"}},
]


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A search+retrain study of three Table-2 style rows, run once for the tests of this module."""
    tmp = tmp_path_factory.mktemp("study")
    path = write_study(tmp, "ablation", objective="search_retrain", space="a_darts", search=dict(TINY_SEARCH),
                       configurations=ROWS)
    storage = f"sqlite:///{tmp / 'study.db'}"
    artifacts = str(tmp / "artifacts")
    args = ["run", path, "--storage", storage, "--artifact-dir", artifacts, "--quiet"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # module fixtures run before the per-test single-thread fixture
    try:
        assert main(args) == 0
    finally:
        torch.set_num_threads(threads)
    return {"path": path, "storage": storage, "artifacts": artifacts, "name": "ablation", "args": json.dumps(args)}


def _study(finished: dict[str, str], suffix: str = "") -> optuna.Study:
    return optuna.load_study(study_name=finished["name"] + suffix, storage=finished["storage"])


def test_rows_that_share_a_search_reuse_it(finished: dict[str, str]) -> None:
    trials = {t.params["configuration"]: t for t in _study(finished).trials}
    assert set(trials) == {r["name"] for r in ROWS} and all(t.state == TrialState.COMPLETE for t in trials.values())
    searches = _study(finished, "-searches").get_trials(states=(TrialState.COMPLETE,))
    assert len(searches) == 2  # factorized once (reused by factorized->relu), config_a once
    assert trials["factorized->relu"].user_attrs["search_trial"] == trials["factorized"].user_attrs["search_trial"]
    relu = Genotype.from_dict(trials["factorized->relu"].user_attrs["genotype"])
    assert {e.effective_activation for e in relu.normal + relu.reduce} - {None} == {"relu"}
    # Config-A searched with β frozen to the activations the factorized search of the same seed found
    factorized = next(t for t in searches if t.user_attrs["activation_mode"] == "factorized")
    config_a = next(t for t in searches if t.user_attrs["activation_mode"] == "config_a")
    assert config_a.user_attrs["genotype"]["edge_activations"] == factorized.user_attrs["genotype"]["edge_activations"]


def test_trials_carry_what_the_dashboard_shows(finished: dict[str, str]) -> None:
    study = _study(finished)
    assert study.metric_names == ["test_error"]
    trial = study.trials[0]
    for attr in ("genotype", "params", "flops", "search_wall_hours", "search_device", "configuration",
                 "test_error"):
        assert attr in trial.user_attrs
    assert isinstance(trial.user_attrs["params"], int)  # the parameter count, never the sweep's values
    assert len(trial.intermediate_values) == TINY_RETRAIN["epochs"]
    assert trial.intermediate_values[TINY_RETRAIN["epochs"]] == trial.value
    assert trial.value == pytest.approx(trial.user_attrs["test_error"], abs=1e-3)
    files = {m.filename for m in get_all_artifact_meta(trial, storage=study._storage)}
    assert {"genotype.json", "cells.png", "weights.pt"} <= files
    search = _study(finished, "-searches").trials[0]
    assert search.user_attrs["swept"] == {}  # this study sweeps nothing: a search records only swept values
    from optuna_dashboard import get_note

    assert "test study ablation" in get_note(study)


def test_rerun_never_repeats_a_completed_point(finished: dict[str, str], capsys: pytest.CaptureFixture) -> None:
    before = len(_study(finished).trials)
    assert main(json.loads(finished["args"])) == 0
    assert len(_study(finished).trials) == before
    capsys.readouterr()
    assert main(["run", finished["path"], "--storage", finished["storage"], "--dry-run", "--json"]) == 0
    points = json.loads(capsys.readouterr().out)
    assert len(points) == 3 and {p["state"] for p in points} == {"complete"}
    assert {"configuration", "seed", "state", "trials"} <= set(points[0])


def test_report_and_export(finished: dict[str, str], capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    capsys.readouterr()
    assert main(["report", "--storage", finished["storage"], "--study-name", "ablation",
                 "--plots", str(tmp_path / "plots")]) == 0
    table = capsys.readouterr().out.splitlines()
    rows = [line for line in table if line.startswith("| ") and "±" in line and "mean" not in line]
    assert [r.split("|")[1].strip() for r in rows] == [r["name"] for r in ROWS]
    assert (tmp_path / "plots" / "per_configuration.png").stat().st_size > 1000
    assert main(["report", "--storage", finished["storage"], "--study-name", "ablation", "--format", "csv"]) == 0
    csv_lines = capsys.readouterr().out.strip().splitlines()
    assert csv_lines[0].startswith("configuration,runs,test_error_mean,test_error_std") and len(csv_lines) == 4
    out = tmp_path / "arch.json"
    assert main(["export", "--storage", finished["storage"], "--study-name", "ablation", "-o", str(out)]) == 0
    assert isinstance(load_architecture(str(out)), Genotype)
    assert main(["export", "--storage", finished["storage"], "--study-name", "nope", "-o", str(out)]) == 2


def test_the_optuna_cli_reads_the_study(finished: dict[str, str]) -> None:
    beside = Path(sys.executable).with_name("optuna")  # the one installed with this Python, else on PATH
    optuna_cli = str(beside) if beside.exists() else shutil.which("optuna")
    assert optuna_cli, "the optuna console script is not installed"
    for command in (["trials"], ["best-trials"], ["studies"]):
        args = [str(optuna_cli), *command, "--storage", finished["storage"], "--format", "json"]
        if command != ["studies"]:
            args += ["--study-name", "ablation"]
        out = subprocess.run(args, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        rows = json.loads(out.stdout)
        assert rows, command
    trials = json.loads(subprocess.run([str(optuna_cli), "trials", "--storage", finished["storage"], "--study-name",
                                        "ablation", "--format", "json"], capture_output=True, text=True,
                                       timeout=120).stdout)
    assert {t["params"]["configuration"] for t in trials} == {r["name"] for r in ROWS}


def test_ctrl_c_fails_the_trial_and_the_rerun_resumes_from_its_checkpoint(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_study(tmp_path, "interrupt", retrain={**TINY_RETRAIN, "epochs": 2})
    storage = f"sqlite:///{tmp_path / 'db.sqlite'}"
    args = ["run", path, "--storage", storage, "--artifact-dir", str(tmp_path / "a"), "--quiet"]
    real = interrupt_after_first_epoch(monkeypatch)
    assert main(args) == 130
    study = optuna.load_study(study_name="interrupt", storage=storage)
    assert [t.state for t in study.trials] == [TrialState.FAIL]  # never COMPLETE with a made-up value
    monkeypatch.setattr(objectives, "report_to_trial", real)
    assert main(args) == 0
    trials = optuna.load_study(study_name="interrupt", storage=storage).trials
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert trials[1].user_attrs["resumed_from_epoch"] == 1 and set(trials[1].intermediate_values) == {1, 2}


def test_a_truncated_checkpoint_costs_no_grid_point(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture) -> None:
    """Interrupted after its first epoch, then its checkpoint cut to 300 bytes: the rerun sets the file aside with
    one warning, retrains that point from scratch, runs the other point too, and exits 0."""
    path = write_study(tmp_path, "truncated", seeds=[0, 1], retrain={**TINY_RETRAIN, "epochs": 2})
    storage, artifacts = f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path / "a"
    args = ["run", path, "--storage", storage, "--artifact-dir", str(artifacts), "--quiet"]
    real = interrupt_after_first_epoch(monkeypatch)
    assert main(args) == 130
    monkeypatch.setattr(objectives, "report_to_trial", real)
    study = optuna.load_study(study_name="truncated", storage=storage)
    key = study.trials[0].user_attrs["checkpoint"]
    artifact = artifacts / str(current_checkpoint(study, key))
    artifact.write_bytes(artifact.read_bytes()[:300])
    capsys.readouterr()
    assert main(args) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "unreadable" in warnings[0] and "starts again from epoch 0" in warnings[0]
    trials = optuna.load_study(study_name="truncated", storage=storage).trials
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert sorted(t.params["seed"] for t in complete) == [0, 1]  # no point lost, none given up
    assert all("resumed_from_epoch" not in t.user_attrs for t in complete)
    assert (artifacts / f"corrupt-{artifact.name}").stat().st_size == 300 and not artifact.exists()  # kept aside


def test_a_changed_study_file_is_refused_before_anything_runs(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'db.sqlite'}"
    path = write_study(tmp_path, "changing")
    assert main(["run", path, "--storage", storage, "--artifact-dir", str(tmp_path / "a"), "--quiet"]) == 0
    write_study(tmp_path, "changing", configurations=[{"name": "other", "retrain": {"architecture": "DARTS_V1"}}])
    assert main(["run", path, "--storage", storage, "--artifact-dir", str(tmp_path / "a"), "--quiet"]) == 2
    assert len(optuna.load_study(study_name="changing", storage=storage).trials) == 1


def test_a_tpe_hyperparameter_study_stops_at_n_trials(tmp_path: Path) -> None:
    path = write_study(tmp_path, "lr-search", sampler="tpe", n_trials=3, pruner="median",
                       sweep={"retrain.lr": {"low": 0.005, "high": 0.1, "log": True}})
    storage = f"sqlite:///{tmp_path / 'db.sqlite'}"
    args = ["run", path, "--storage", storage, "--artifact-dir", str(tmp_path / "a"), "--quiet"]
    assert main(args) == 0 and main(args) == 0  # the rerun finds n_trials done
    trials = optuna.load_study(study_name="lr-search", storage=storage).trials
    assert len(trials) == 3 and len({t.params["retrain.lr"] for t in trials}) == 3
    assert all(0.005 <= t.params["retrain.lr"] <= 0.1 for t in trials)


def test_shared_searches_are_never_pruned(tmp_path: Path) -> None:
    """Optuna's default pruner would prune a search that several rows reuse; the searches study has none."""
    from optuna_nas.heartbeat import Heartbeat
    from optuna_nas.study.runner import RunOptions
    from optuna_nas.study.spec import load_study_file
    from optuna_nas.study.stages import StudyObjective

    spec = load_study_file(write_study(tmp_path, "pruned", objective="search_retrain", space="darts",
                                       search=dict(TINY_SEARCH), pruner="median"))
    options = RunOptions(storage=f"sqlite:///{tmp_path / 'db.sqlite'}", heartbeat=Heartbeat(1, 3))
    searches = StudyObjective(spec, options.stage_context(spec, "cpu"))._searches_study()
    assert isinstance(searches.pruner, optuna.pruners.NopPruner)


@pytest.mark.parametrize(("fields", "reason"), [
    ({"objective": "search_retrain", "space": "pc_darts", "search": {**TINY_SEARCH, "channels": 6},
      "configurations": [{"name": "pc", "search": {"activation_mode": "fixed:relu"}}]}, "partial-channels 4"),
    ({"configurations": [{"name": "bad", "retrain": {"architecture": "NO_SUCH_NET"}}]}, "NO_SUCH_NET"),
    ({"objective": "randgrow", "configurations": [{"name": "g", "randgrow": {"space": "nowhere"}}]}, "nowhere"),
])
def test_impossible_rows_fail_before_the_study_exists(tmp_path: Path, fields: dict, reason: str,
                                                      capsys: pytest.CaptureFixture) -> None:
    path = write_study(tmp_path, "impossible", **fields)
    storage = f"sqlite:///{tmp_path / 'db.sqlite'}"
    assert main(["run", path, "--storage", storage, "--artifact-dir", str(tmp_path / "a"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and path in err and reason in err
    assert not (tmp_path / "db.sqlite").exists()


def test_devices_that_are_not_there_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    path = write_study(tmp_path, "devices")
    storage = f"sqlite:///{tmp_path / 'db.sqlite'}"
    assert main(["run", path, "--storage", storage, "--devices", "cpu,cuda:1", "--quiet"]) == 2
    assert "CUDA is not available" in capsys.readouterr().err and not (tmp_path / "db.sqlite").exists()


def test_a_point_whose_only_trial_gave_way_still_runs(tmp_path: Path) -> None:
    """A duplicate (PRUNED with duplicate_of) does not count as the point's trial: the point runs once more."""
    path = write_study(tmp_path, "gave-way")
    storage = f"sqlite:///{tmp_path / 'db.sqlite'}"
    study = optuna.create_study(study_name="gave-way", storage=storage)
    dist = {"configuration": optuna.distributions.CategoricalDistribution(["darts_v2"]),
            "seed": optuna.distributions.IntDistribution(0, 0)}
    study.add_trial(optuna.trial.create_trial(state=TrialState.PRUNED, params={"configuration": "darts_v2", "seed": 0},
                                              distributions=dist, user_attrs={"duplicate_of": 7}))
    assert main(["run", path, "--storage", storage, "--artifact-dir", str(tmp_path / "a"), "--quiet"]) == 0
    states = [t.state for t in optuna.load_study(study_name="gave-way", storage=storage).trials]
    assert states == [TrialState.PRUNED, TrialState.COMPLETE]


def test_a_trial_that_gives_way_names_its_worker(tmp_path: Path) -> None:
    """Two workers raced for one grid point: the later trial is PRUNED as a duplicate, and still says which
    worker ran it (the dashboard and ``optuna trials`` show every trial's worker)."""
    spec = load_study_file(write_study(tmp_path, "raced"))
    storage = f"sqlite:///{tmp_path / 'db.sqlite'}"
    study = optuna.create_study(study_name="raced", storage=storage)
    point = {"configuration": "darts_v2", "seed": 0}
    dist = {"configuration": optuna.distributions.CategoricalDistribution(["darts_v2"]),
            "seed": optuna.distributions.IntDistribution(0, 0)}
    study.add_trial(optuna.trial.create_trial(state=TrialState.COMPLETE, value=0.5, params=point, distributions=dist))
    study.enqueue_trial(point)
    trial = study.ask()
    with pytest.raises(optuna.TrialPruned, match="already taken by trial 0"):
        StudyObjective(spec, StageContext(storage, "raced"))(trial)
    attrs = study.trials[trial.number].user_attrs
    assert attrs["duplicate_of"] == 0 and attrs["worker"].endswith(f":{os.getpid()}")
