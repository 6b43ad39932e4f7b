"""Bad input to `optuna-nas run`, with and without --dry-run: one line, exit 2, and nothing written anywhere (no
database file, no study, no trial)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from _studies import TINY_RETRAIN, TINY_SEARCH, write_study


def _negative_labels(tmp_path: Path) -> str:
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "neg.npz", x_train=rng.integers(0, 255, (8, 8, 8, 3), dtype=np.uint8),
             y_train=np.arange(8) % 3 - 1, x_test=rng.integers(0, 255, (4, 8, 8, 3), dtype=np.uint8),
             y_test=np.arange(4) % 3)
    return f"npz:{tmp_path / 'neg.npz'}"


CASES = {
    "unknown dataset": ({"dataset": "mnist"}, "unknown dataset 'mnist'"),
    "zero channels": ({"objective": "search_retrain", "space": "darts", "search": {**TINY_SEARCH, "channels": 0}},
                      "channels must be positive"),
    "bad pruner argument": ({"pruner": {"type": "median", "n_startup": 3}}, "pruner: "),
    "impossible split": ({"objective": "search_retrain", "space": "darts",
                          "search": {**TINY_SEARCH, "train_portion": 2.0}}, "train_portion"),
    "no rows": ({"configurations": []}, "configurations: must be a non-empty list"),
    "negative labels": ({"dataset": "NEGATIVE"}, "negative label -1"),
    "unknown space": ({"objective": "search", "space": "nowhere"}, "search space file not found: nowhere"),
}


def _run(tmp_path: Path, fields: dict, *extra: str) -> subprocess.CompletedProcess:
    fields = {k: (_negative_labels(tmp_path) if v == "NEGATIVE" else v) for k, v in fields.items()}
    path = write_study(tmp_path, "bad", retrain=dict(TINY_RETRAIN), **fields)
    return subprocess.run([sys.executable, "-m", "optuna_nas", "run", path, "--storage",
                           f"sqlite:///{tmp_path / 'db.sqlite'}", "--artifact-dir", str(tmp_path / "artifacts"),
                           "--quiet", *extra], capture_output=True, text=True, cwd=tmp_path, timeout=300)


@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "run"])
@pytest.mark.parametrize("case", list(CASES))
def test_bad_study_input_is_one_line_and_writes_nothing(tmp_path: Path, case: str, dry_run: bool) -> None:
    fields, message = CASES[case]
    done = _run(tmp_path, fields, *(["--dry-run"] if dry_run else []))
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and message in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "db.sqlite").exists() and not (tmp_path / "artifacts").exists()


def test_an_unusable_artifact_directory_is_refused_before_the_study_exists(tmp_path: Path) -> None:
    (tmp_path / "artifacts").write_text("a file, not a directory")
    done = _run(tmp_path, {})
    assert done.returncode == 2 and "cannot use artifact directory" in done.stderr
    assert done.stderr.count("\n") == 1 and not (tmp_path / "db.sqlite").exists()


@pytest.mark.parametrize("kind", ["study", "space"])
def test_a_file_that_is_not_utf8_is_one_line(tmp_path: Path, kind: str) -> None:
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes("name: caf\xe9\n".encode("latin-1"))
    command = ["run", str(bad)] if kind == "study" else ["info", "--space", str(bad)]
    done = subprocess.run([sys.executable, "-m", "optuna_nas", *command], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "not a UTF-8 text file" in done.stderr
