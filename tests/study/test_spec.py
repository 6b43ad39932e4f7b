"""Study files: every shipped one validates, grids have the paper's shape, and mistakes name file, key, reason."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from optuna_nas.errors import NasError
from optuna_nas.resources import shipped_names
from optuna_nas.study.spec import load_study_file

SHIPPED = shipped_names("studies")


def test_the_paper_tables_are_shipped() -> None:
    assert set(SHIPPED) >= {"a_darts_table1", "a_darts_table2", "a_darts_table4_imagenet",
                                         "randgrow_table1"}


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_study_and_its_tiny_preset_validate(name: str) -> None:
    spec = load_study_file(name)
    tiny = load_study_file(name, "tiny")
    assert spec.description and spec.grid()
    assert tiny.preset == "tiny" and len(tiny.grid()) <= len(spec.grid())


def test_table2_has_14_configurations_times_3_seeds_with_shared_searches() -> None:
    spec = load_study_file("a_darts_table2")
    assert len(spec.configurations) == 14 and spec.seeds == [0, 1, 2] and len(spec.grid()) == 42
    config_a = spec.configuration("config_a")
    assert str(config_a.search.activation_mode) == "config_a" and config_a.config_a_from == "factorized"
    # the rows that retrain the factorized search with fixed activations search exactly as "factorized" does
    assert spec.configuration("factorized->selu").search == spec.configuration("factorized").search
    assert spec.configuration("factorized->selu").retrain.activation == "selu"
    # the paper's settings by default
    relu = spec.configuration("relu")
    assert relu.retrain.settings.epochs == 600 and relu.search.settings.epochs == 25
    assert relu.search.channels == 16 and relu.retrain.channels == 36


def _write(tmp_path: Path, data: dict) -> str:
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


BASE = {"name": "s", "objective": "search_retrain", "dataset": "synthetic", "space": "darts",
        "configurations": [{"name": "a", "search": {"activation_mode": "fixed:relu"}}]}


@pytest.mark.parametrize(("change", "key", "reason"), [
    ({"colour": 1}, "colour", "unknown key"),
    ({"objective": "evolve"}, "objective", "unknown objective"),
    ({"search": {"epochs": "ten"}}, "search.epochs", "must be a int"),
    ({"search": {"epoch": 3}}, "search.epoch", "unknown key"),
    ({"search": {"epochs": 0}}, "search", "epochs"),
    ({"retrain": {"drop_path_prob": 1.5}}, "retrain", "drop path"),
    ({"configurations": [{"name": "a", "search": {"activation_mode": "fixed:relu9"}}]}, "activation_mode",
     "unknown activation"),
    ({"configurations": [{"name": "a", "retrain": {"activation": "tanhh"}}]}, "retrain.activation",
     "unknown activation"),
    ({"configurations": [{"name": "a", "space": "nowhere"}]}, "space", "not found"),
    ({"configurations": [{"name": "a"}, {"name": "a"}]}, "configurations", "unique"),
    ({"configurations": [{"name": "a", "search": {"activation_mode": "config_a", "config_a_from": "b"}}]},
     "config_a_from", "another configuration"),
    ({"seeds": [0, "1"]}, "seeds", "integers"),
    ({"sweep": {"retrain.lrr": [0.1]}}, "sweep.retrain.lrr", "stage setting"),
    ({"sweep": {"retrain.lr": {"low": 0.1, "high": 0.2}}}, "sweep.retrain.lr", "needs a list"),
    ({"sampler": "tpe"}, "n_trials", "needs n_trials"),
    ({"directions": ["maximize"]}, "directions", "minimize"),
])
def test_mistakes_name_file_key_and_reason(tmp_path: Path, change: dict, key: str, reason: str) -> None:
    path = _write(tmp_path, {**BASE, **change})
    with pytest.raises(NasError) as info:
        load_study_file(path)
    message = str(info.value)
    assert message.startswith(path) and key in message and reason in message


def test_unknown_preset_and_malformed_yaml(tmp_path: Path) -> None:
    with pytest.raises(NasError, match="no preset 'huge'"):
        load_study_file(_write(tmp_path, BASE), "huge")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(NasError, match="malformed YAML"):
        load_study_file(str(bad))
    with pytest.raises(NasError, match="study file not found"):
        load_study_file(str(tmp_path / "missing.yaml"))


def test_presets_merge_into_stages_and_sweeps_multiply_the_grid(tmp_path: Path) -> None:
    data = {**BASE, "search": {"epochs": 9, "channels": 8}, "seeds": [0, 1],
            "sweep": {"retrain.lr": [0.01, 0.03]},
            "presets": {"fast": {"search": {"epochs": 1}}}}
    spec = load_study_file(_write(tmp_path, data), "fast")
    assert spec.configurations[0].search.settings.epochs == 1 and spec.configurations[0].search.channels == 8
    grid = spec.grid()
    assert len(grid) == 4 and {p["retrain.lr"] for p in grid} == {0.01, 0.03}
    assert spec.stage(spec.configurations[0], "retrain", grid[1]).settings.lr == grid[1]["retrain.lr"]


def test_a_preset_shrinks_every_row_and_may_set_single_rows(tmp_path: Path) -> None:
    data = {**BASE, "configurations": [{"name": "a", "search": {"epochs": 50, "activation_mode": "fixed:relu"}},
                                       {"name": "b", "search": {"epochs": 50, "activation_mode": "fixed:selu"}}],
            "presets": {"tiny": {"search": {"epochs": 1}, "configurations": {"b": {"search": {"epochs": 2}}}}}}
    spec = load_study_file(_write(tmp_path, data), "tiny")
    assert [c.search.settings.epochs for c in spec.configurations] == [1, 2]
    assert [c.search.settings.epochs for c in load_study_file(_write(tmp_path, data)).configurations] == [50, 50]
    data["presets"]["tiny"]["configurations"] = {"c": {"search": {"epochs": 2}}}
    with pytest.raises(NasError, match="presets.tiny.configurations.c: no configuration"):
        load_study_file(_write(tmp_path, data), "tiny")


def test_dry_run_of_table2_lists_42_trials_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from optuna_nas.cli import main

    db = tmp_path / "never.db"
    assert main(["run", "a_darts_table2", "--dry-run", "--json", "--storage", f"sqlite:///{db}"]) == 0
    points = json.loads(capsys.readouterr().out)
    assert len(points) == 42 and len({p["configuration"] for p in points}) == 14
    assert {p["seed"] for p in points} == {0, 1, 2} and {p["state"] for p in points} == {"pending"}
    assert not db.exists()
