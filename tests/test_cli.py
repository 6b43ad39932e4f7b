"""The optuna-nas command end to end: runs are Optuna trials the optuna CLI can read."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from optuna_nas.cli import main

TINY = ["--dataset", "synthetic", "--epochs", "1", "--channels", "4", "--layers", "3", "--quiet"]


def _optuna_trials(storage: str, study: str) -> list[dict]:
    optuna_cli = shutil.which("optuna") or str(Path(sys.executable).parent / "optuna")
    out = subprocess.run([optuna_cli, "trials", "--storage", storage, "--study-name", study,
                          "--format", "json"], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def test_search_darts_is_a_complete_trial_with_genotype_and_cost(tmp_path, capsys) -> None:
    storage = f"sqlite:///{tmp_path / 's.db'}"
    rc = main(["search", "darts", "--activation-mode", "factorized", "--storage", storage, "--study-name", "demo",
               "--artifact-dir", str(tmp_path / "artifacts"), "--output", str(tmp_path / "g.json"), *TINY])
    assert rc == 0
    (trial,) = _optuna_trials(storage, "demo")
    assert trial["state"] == "COMPLETE"
    assert trial["params"]["activation_mode"] == "factorized"
    attrs = trial["user_attrs"]
    acts = {e["activation"] for e in attrs["genotype"]["normal"] + attrs["genotype"]["reduce"]
            if "conv" in e["op"]}
    assert acts and acts <= {"relu", "relu6", "leaky_relu", "prelu", "rrelu", "elu", "celu", "selu", "swish"}
    assert attrs["params"] > 0 and attrs["flops"] > 0
    assert json.loads((tmp_path / "g.json").read_text())["genotype"] == attrs["genotype"]
    assert "trial 0" in capsys.readouterr().out


def test_retrain_reports_test_error_params_and_flops(tmp_path, capsys) -> None:
    storage = f"sqlite:///{tmp_path / 'r.db'}"
    rc = main(["retrain", "PC_DARTS", "--activation", "selu", "--batch-size", "32", "--storage", storage,
               "--artifact-dir", str(tmp_path / "artifacts"), "--json", *TINY])
    assert rc == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert 0.0 <= result["test_error"] <= 100.0 and result["params"] > 0 and result["flops"] > 0
    (trial,) = _optuna_trials(storage, "retrain")
    assert trial["params"]["activation_override"] == "selu"


def test_info_json(capsys) -> None:
    assert main(["info", "DARTS_V2", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["params"] == 3_349_342 and info["flops"] > 0
    assert main(["info", "--space", "a_darts", "--json"]) == 0
    assert f"{json.loads(capsys.readouterr().out)['architectures']:.1e}" == "9.3e+29"


@pytest.mark.parametrize(("args", "message"), [
    (["search", "darts", "--activation-mode", "fixed:gelu9"], "unknown activation 'gelu9'"),
    (["search", "darts", "--layers", "2"], "at least 3 cells"),
    (["search", "darts", "--dataset", "npz:/no/such.npz"], "dataset file not found"),
    (["search", "darts", "--space", "SPACE"], "unknown operator 'conv_4x4'"),
    (["search", "darts", "--storage", "notaurl"], "is not a URL"),
    (["retrain", "/no/genotype.json"], "no genotype"),
    (["retrain", "DARTS_V2", "--layers", "2"], "at least 3 cells"),
])
def test_bad_input_is_one_line_and_exit_2_and_stores_nothing(tmp_path, args, message) -> None:
    space = tmp_path / "space.yaml"
    space.write_text("operators: [none, conv_4x4]\n")
    args = [str(space) if a == "SPACE" else a for a in args]
    if "--storage" not in args:
        args += ["--storage", f"sqlite:///{tmp_path / 'x.db'}"]
    out = subprocess.run([sys.executable, "-m", "optuna_nas.cli", *args, "--dataset", "synthetic", "--epochs", "1"]
                         if "--dataset" not in args else [sys.executable, "-m", "optuna_nas.cli", *args],
                         capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and message in out.stderr
    assert not (tmp_path / "x.db").exists()  # checked before touching storage: no failed trial left behind


def test_interrupted_search_resumes_when_the_same_command_runs_again(tmp_path, monkeypatch, capsys) -> None:
    import optuna

    from optuna_nas.darts import objective as objectives

    storage = f"sqlite:///{tmp_path / 'i.db'}"
    args = ["search", "darts", "--activation-mode", "fixed:relu", "--storage", storage, "--study-name", "resume",
            "--artifact-dir", str(tmp_path / "artifacts"), "--dataset", "synthetic", "--epochs", "2", "--channels", "4",
            "--layers", "3"]
    report = objectives.report_to_trial

    def interrupt_after_first_epoch(trial, metric):
        def callback(epoch, metrics):
            if epoch == 1:
                raise KeyboardInterrupt
        return callback

    monkeypatch.setattr(objectives, "report_to_trial", interrupt_after_first_epoch)
    assert main(args) == 130
    study = optuna.load_study(study_name="resume", storage=storage)
    assert [t.state.name for t in study.trials] == ["FAIL"]  # never COMPLETE with a made-up value
    assert "rerun the same command" in capsys.readouterr().err

    monkeypatch.setattr(objectives, "report_to_trial", report)
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "resumed from" in err and "after epoch 1" in err
    assert "epoch 1/2" not in err.split("resumed from")[1]  # only epoch 2 ran again
    study = optuna.load_study(study_name="resume", storage=storage)
    assert [t.state.name for t in study.trials] == ["FAIL", "COMPLETE"]
    assert study.trials[1].intermediate_values.keys() == {1, 2}  # the restored epoch is reported again
