"""Real external services for tests: PostgreSQL, headless Chromium and optuna-dashboard (a pytest plugin).

Loaded by ``pytest_plugins = ("services",)`` in conftest.py.  ``bash .ci/run`` provisions both services and exports
``OPTUNA_NAS_PGURL`` and ``OPTUNA_NAS_CHROMIUM``.  Without them, ``postgres_url`` starts a private cluster for the
session with .ci/postgres.sh (if /usr/lib/postgresql/*/bin/initdb exists) and ``chromium`` looks on PATH; a test whose
service is missing is skipped.

Fixtures: ``postgres_url`` (mark the test ``@pytest.mark.postgres``), ``chromium`` (``@pytest.mark.browser``),
``s3_bucket`` (a local S3 server, moto's; ``@pytest.mark.s3``) and ``redis_url`` (``@pytest.mark.redis``).
Helpers: ``serve_dashboard`` and ``render_dom``.

What optuna-dashboard 0.21 shows, by URL (``<id>`` is the storage's study id: ``study._study_id``, or
``optuna.storages.get_storage(url).get_study_id_from_name(name)``):

* ``/dashboard/``: the study list, with study names.
* ``/dashboard/studies/<id>``: "History": plots (history, Pareto front, importance, timeline), the best trial(s), the
  study's user attrs and the study's artifacts.  Metric names set with ``study.set_metric_names`` appear here (axis
  titles and objective selectors), and on ``/dashboard/studies/<id>/analytics``.
* ``/dashboard/studies/<id>/trials``: "Trials (List)": every trial number and state, plus the details of one selected
  trial (the first by default; ``?numbers=<trial number>`` selects another): values, params, timing, **user attrs**
  and **artifacts** (these need ``artifact_dir`` = the FileSystemArtifactStore's directory).  Values are shown
  unnamed: metric names are NOT in this DOM.
* ``/dashboard/studies/<id>/trialTable`` is routed but rendered empty (only the menu) here; ``/note`` shows the note.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import pytest

_POSTGRES_SH = Path(__file__).resolve().parents[1] / ".ci" / "postgres.sh"
_NO_POSTGRES = "PostgreSQL not available: set OPTUNA_NAS_PGURL (bash .ci/run starts one)"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _libpq_dsn(url: str) -> str:
    """libpq understands ``postgresql://`` but not SQLAlchemy's ``postgresql+psycopg2://``."""
    scheme, rest = url.split("://", 1)
    return scheme.split("+", 1)[0] + "://" + rest


def _with_database(url: str, name: str) -> str:
    """``url`` pointing at database ``name``, with the psycopg2 driver named: SQLAlchemy 2.1 maps a bare
    ``postgresql://`` to psycopg 3, which is not installed (only psycopg2-binary is, via the dev extra)."""
    parts = urlsplit(url)
    scheme = "postgresql+psycopg2" if parts.scheme in ("postgres", "postgresql") else parts.scheme
    return parts._replace(scheme=scheme, path="/" + name).geturl()


# ---------------------------------------------------------------------------------------------------------- PostgreSQL
@pytest.fixture(scope="session")
def _postgres_server() -> Iterator[str]:
    """URL of a database on a running server: ``OPTUNA_NAS_PGURL``, else a private cluster that this session starts
    with .ci/postgres.sh on a free port (and stops at the end), so concurrent sessions never share or stop one."""
    pytest.importorskip("psycopg2", reason="psycopg2 missing: pip install -e '.[dev]'")
    url = os.environ.get("OPTUNA_NAS_PGURL")
    if url:
        yield url
        return
    if not (_POSTGRES_SH.is_file() and any(Path("/usr/lib/postgresql").glob("*/bin/initdb"))):
        pytest.skip(_NO_POSTGRES)
    env = {**os.environ, "OPTUNA_NAS_PGPORT": str(_free_port())}
    cmd = ["bash", str(_POSTGRES_SH)]
    started = subprocess.run([*cmd, "start"], env=env, capture_output=True, text=True, timeout=120)
    try:
        if started.returncode != 0:
            pytest.skip(f"{_NO_POSTGRES}; .ci/postgres.sh start failed: {started.stderr.strip()[-500:]}")
        yield started.stdout.strip().splitlines()[-1]
    finally:
        subprocess.run([*cmd, "stop"], env=env, capture_output=True, timeout=120)


@pytest.fixture
def postgres_url(_postgres_server: str) -> Iterator[str]:
    """URL (``postgresql+psycopg2://...``) of a fresh, empty database, usable as an Optuna storage; dropped after
    the test."""
    import psycopg2

    name = "optuna_nas_" + uuid.uuid4().hex[:12]
    admin = psycopg2.connect(_libpq_dsn(_postgres_server), connect_timeout=10)
    admin.autocommit = True  # CREATE/DROP DATABASE cannot run inside a transaction
    try:
        with admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        yield _with_database(_postgres_server, name)
        with admin.cursor() as cur:
            # The test's SQLAlchemy pools may still hold connections, which would block DROP DATABASE.
            cur.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )
            cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
    finally:
        admin.close()


# ----------------------------------------------------------------------------------------------- S3 (moto) and Redis
def _serve(command: list[str], port: int, what: str) -> subprocess.Popen:
    """Start a local server on ``port`` (127.0.0.1) and wait until it accepts connections."""
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while True:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return proc
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            log.seek(0)
            raise RuntimeError(f"{what} did not come up on port {port}: {log.read().decode(errors='replace')[-1000:]}")
        time.sleep(0.1)


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="session")
def _s3_server() -> Iterator[str]:
    """An S3-compatible HTTP server on 127.0.0.1 (moto's standalone ``moto_server``, from the dev extras)."""
    pytest.importorskip("boto3", reason="boto3 missing: pip install -e '.[dev]'")
    exe = shutil.which("moto_server") or str(Path(sys.executable).with_name("moto_server"))
    if not os.access(exe, os.X_OK):
        pytest.skip("moto_server not available: pip install -e '.[dev]' (moto[server])")
    port = _free_port()
    proc = _serve([exe, "-H", "127.0.0.1", "-p", str(port)], port, "moto_server")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        _stop(proc)


S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture
def s3_bucket(_s3_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh bucket on the local S3 server; the standard AWS variables point boto3 (in this process and in its
    children) at it. Returns the bucket's name."""
    import boto3

    for key, value in {**S3_ENV, "AWS_ENDPOINT_URL": _s3_server}.items():
        monkeypatch.setenv(key, value)
    name = "nas-" + uuid.uuid4().hex[:12]
    boto3.client("s3").create_bucket(Bucket=name)
    return name


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A private, empty Redis server on 127.0.0.1 (Debian's redis-server), gone after the test."""
    pytest.importorskip("redis", reason="redis missing: pip install -e '.[dev]'")
    exe = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not os.access(exe, os.X_OK):
        pytest.skip("redis-server not available: apt-get install redis-server (bash .ci/run does)")
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="optuna-nas-redis-") as data:
        proc = _serve([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                       "--dir", data], port, "redis-server")
        try:
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            _stop(proc)


# ------------------------------------------------------------------------------------------------------------ Chromium
@pytest.fixture(scope="session")
def chromium() -> str:
    """Path of a headless-capable Chromium/Chrome binary."""
    path = os.environ.get("OPTUNA_NAS_CHROMIUM") or next(
        (p for name in ("chromium", "chromium-browser", "google-chrome") if (p := shutil.which(name))), None
    )
    if not path or not os.access(path, os.X_OK):
        pytest.skip("Chromium not available: set OPTUNA_NAS_CHROMIUM or apt-get install chromium (bash .ci/run does)")
    return path


def render_dom(chromium: str, url: str, wait_ms: int = 8000) -> str:
    """The DOM of ``url`` after its JavaScript ran, serialised as HTML.

    ``--dump-dom`` alone dumps at the load event, before a single-page app has fetched its data (the dashboard
    would show only "Loading...").  ``--virtual-time-budget`` makes Chromium run virtual time, which pauses while
    network fetches are pending, until ``wait_ms`` of page time has passed: timers and fetches chained on them
    complete, in about the wall time of Chromium's start-up (the budget hardly matters).  ``--no-sandbox`` is needed
    as root.  Each call gets its own profile directory: with a shared one, a second concurrent Chromium (another test
    run as the same user) exits 21 without output ("Failed to create a ProcessSingleton").
    """
    with tempfile.TemporaryDirectory(prefix="optuna-nas-chromium-") as profile:
        args = [
            chromium,
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--mute-audio",
            f"--user-data-dir={profile}",
            "--window-size=1280,1024",
            f"--virtual-time-budget={wait_ms}",
            "--dump-dom",
            url,
        ]
        done = subprocess.run(args, capture_output=True, text=True, timeout=wait_ms / 1000 + 90)
    if done.returncode != 0 or not done.stdout.strip():
        raise RuntimeError(f"chromium exited {done.returncode} for {url}: {done.stderr.strip()[-2000:]}")
    return done.stdout


# ----------------------------------------------------------------------------------------------------- optuna-dashboard
def _answers(url: str) -> bool:
    """True once ``url`` answers 200; a server still starting refuses or times out."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


@contextmanager
def serve_dashboard(storage_url: str, artifact_dir: str | os.PathLike[str] | None = None) -> Iterator[str]:
    """Run optuna-dashboard on ``storage_url`` on a free local port; yields its base URL (``http://127.0.0.1:PORT``,
    pages under ``/dashboard/``).  The server is terminated on exit."""
    # The console script next to this interpreter runs in the same environment (and skips pyenv's shim).
    exe = Path(sys.executable).with_name("optuna-dashboard")
    port = _free_port()
    cmd = [str(exe) if exe.exists() else "optuna-dashboard", storage_url, "--host", "127.0.0.1", "--port", str(port)]
    if artifact_dir is not None:
        cmd += ["--artifact-dir", os.fspath(artifact_dir)]
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryFile() as log:  # a file, not a pipe, so a chatty server never blocks on a full pipe
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 60
            while not _answers(base + "/api/studies"):
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    output = log.read().decode(errors="replace")[-2000:]
                    raise RuntimeError(f"optuna-dashboard did not come up on {base} (exit {proc.poll()}): {output}")
                time.sleep(0.2)
            yield base
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
