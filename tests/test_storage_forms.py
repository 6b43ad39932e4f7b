"""Every storage form the optuna CLI and optuna-dashboard take, and object-store artifacts: written by optuna-nas,
read by Optuna's own tools, shared by workers."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna
import pytest
from optuna.artifacts import get_all_artifact_meta

from optuna_nas.cli import main
from optuna_nas.errors import NasError
from optuna_nas.storage import for_optuna_tools, open_storage, storage_kind

from _studies import write_study
from services import _free_port, _serve, _stop

TINY = ["--dataset", "synthetic", "--epochs", "1", "--channels", "4", "--layers", "3", "--quiet"]


def _optuna(*args: str) -> str:
    exe = shutil.which("optuna") or str(Path(sys.executable).with_name("optuna"))
    return subprocess.run([exe, *args], capture_output=True, text=True, check=True, timeout=120).stdout


@pytest.mark.parametrize(("url", "kind"), [
    ("sqlite:///a.db", "rdb"), ("postgresql://u@h/d", "rdb"), ("journal:runs/a.log", "journal"),
    ("runs/new.log", "journal"), ("redis://127.0.0.1:6379/0", "redis"), ("grpc://127.0.0.1:13000", "grpc"),
])
def test_storage_kinds(url: str, kind: str) -> None:
    assert storage_kind(url)[0] == kind


def test_a_typo_is_not_taken_for_a_new_journal_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for url in ("notaurl", "sqlite:/missing-slashes.db"):
        with pytest.raises(NasError, match="is not a URL or a journal file"):
            open_storage(url)
    assert not any(tmp_path.iterdir())


def test_a_journal_file_given_as_a_plain_path_is_read_by_the_optuna_cli(tmp_path: Path) -> None:
    journal = tmp_path / "runs" / "study.log"
    assert main(["retrain", "DARTS_V2", "--storage", str(journal), "--study-name", "plain",
                 "--artifact-dir", str(tmp_path / "a"), *TINY]) == 0
    (trial,) = json.loads(_optuna("trials", "--storage", str(journal), "--study-name", "plain", "-f", "json"))
    assert trial["state"] == "COMPLETE" and trial["user_attrs"]["test_error"] >= 0
    assert for_optuna_tools(f"journal:{journal}") == str(journal)  # what the printed commands use


@pytest.mark.redis
def test_a_redis_journal_holds_a_study_two_workers_share(redis_url: str, tmp_path: Path) -> None:
    path = write_study(tmp_path, "redis-study", seeds=[0, 1, 2])
    command = [sys.executable, "-m", "optuna_nas", "run", path, "--storage", redis_url, "--artifact-dir",
               str(tmp_path / "a"), "--quiet", "--heartbeat-interval", "1", "--grace-period", "3"]
    workers = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for worker in workers:
        _, err = worker.communicate(timeout=300)
        assert worker.returncode == 0, err
    trials = json.loads(_optuna("trials", "--storage", redis_url, "--study-name", "redis-study", "-f", "json"))
    complete = [t for t in trials if t["state"] == "COMPLETE"]
    assert sorted(t["params"]["seed"] for t in complete) == [0, 1, 2]  # each point once


@pytest.mark.slow
def test_two_workers_through_the_grpc_storage_proxy(tmp_path: Path) -> None:
    pytest.importorskip("grpc", reason="grpcio missing: pip install -e '.[dev]'")
    port = _free_port()
    database = f"sqlite:///{tmp_path / 'behind-the-proxy.db'}"
    proxy = _serve([sys.executable, "-m", "optuna_nas", "storage-proxy", "--storage", database, "--port", str(port)],
                   port, "optuna-nas storage-proxy")
    try:
        path = write_study(tmp_path, "proxied", seeds=[0, 1, 2])
        command = [sys.executable, "-m", "optuna_nas", "run", path, "--storage", f"grpc://127.0.0.1:{port}",
                   "--artifact-dir", str(tmp_path / "a"), "--quiet", "--heartbeat-interval", "1",
                   "--grace-period", "3"]
        workers = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                   for _ in range(2)]
        for worker in workers:
            _, err = worker.communicate(timeout=300)
            assert worker.returncode == 0, err
    finally:
        _stop(proxy)
    study = optuna.load_study(study_name="proxied", storage=database)  # the database behind the proxy
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert sorted(t.params["seed"] for t in complete) == [0, 1, 2]
    # every trial names its worker, a trial that gave way to the other worker's copy of its point too
    assert all("worker" in t.user_attrs for t in study.trials)
    assert not [t for t in study.trials if t.state.name == "RUNNING"]


@pytest.mark.s3
def test_a_search_keeps_its_artifacts_in_the_bucket_and_the_printed_dashboard_shows_them(
        s3_bucket: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import boto3

    storage = f"sqlite:///{tmp_path / 'db.sqlite'}"
    store = f"s3://{s3_bucket}/runs/one"
    assert main(["search", "darts", "--storage", storage, "--study-name", "s3", "--artifact-store", store,
                 "--activation-mode", "fixed:relu", *TINY]) == 0
    printed = capsys.readouterr().out
    keys = [o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket=s3_bucket)["Contents"]]
    study = optuna.load_study(study_name="s3", storage=storage)
    metas = get_all_artifact_meta(study.trials[0], storage=study._storage)
    assert {m.filename for m in metas} >= {"supernet.pt", "cells.png", "genotype.json"}
    assert {f"runs/one/{m.artifact_id}" for m in metas} <= set(keys)  # under the prefix, in the bucket
    assert not (tmp_path / "optuna-nas-artifacts").exists()
    command = next(line.strip() for line in printed.splitlines() if "optuna-nas dashboard" in line)
    port = _free_port()
    args = command.split("(")[0].split()[1:] + ["--port", str(port)]
    server = _serve([sys.executable, "-m", "optuna_nas", *args], port, "optuna-nas dashboard")
    try:
        cells = next(m for m in metas if m.filename == "cells.png")
        url = f"http://127.0.0.1:{port}/artifacts/{study._study_id}/{study.trials[0]._trial_id}/{cells.artifact_id}"
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(url, timeout=10) as response:
                    served = response.read()
                break
            except OSError:
                assert time.monotonic() < deadline
                time.sleep(0.3)
        stored = boto3.client("s3").get_object(Bucket=s3_bucket, Key=f"runs/one/{cells.artifact_id}")["Body"].read()
        assert served == stored and served.startswith(b"\x89PNG")
    finally:
        _stop(server)


@pytest.mark.s3
def test_a_missing_bucket_is_one_line_before_anything_is_written(s3_bucket: str, tmp_path: Path) -> None:
    env = {**os.environ}
    done = subprocess.run([sys.executable, "-m", "optuna_nas", "search", "darts", "--storage",
                           f"sqlite:///{tmp_path / 'db.sqlite'}", "--artifact-store", "s3://no-such-bucket/x", *TINY],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "cannot use artifact store" in done.stderr
    assert not (tmp_path / "db.sqlite").exists()
