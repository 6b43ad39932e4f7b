"""Where local workers run: one per visible GPU, each pinned to its own (placement tested with faked devices)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from optuna_nas.cli import main
from optuna_nas.errors import NasError
from optuna_nas.workers import worker_devices

from _studies import write_study


@pytest.mark.parametrize(("devices", "n_workers", "gpus", "placed"), [
    ("auto", None, 4, ["cuda:0", "cuda:1", "cuda:2", "cuda:3"]),  # one worker per GPU, each on its own
    ("auto", None, 0, ["cpu"]),  # a CPU machine keeps one worker
    ("auto", 2, 0, ["cpu", "cpu"]),
    ("auto", 6, 4, ["cuda:0", "cuda:1", "cuda:2", "cuda:3", "cuda:0", "cuda:1"]),
    ("auto", 2, 4, ["cuda:0", "cuda:1"]),
    ("cuda:1,cuda:3", None, 4, ["cuda:1", "cuda:3"]),
    ("cpu", None, 4, ["cpu"]),
    ("cpu,cuda:0", 3, 1, ["cpu", "cuda:0", "cpu"]),
])
def test_worker_placement(devices: str, n_workers: int | None, gpus: int, placed: list[str]) -> None:
    assert worker_devices(devices, n_workers, cuda_count=gpus) == placed


@pytest.mark.parametrize(("devices", "gpus", "message"), [
    ("cuda:1", 0, "CUDA is not available"), ("cuda:4", 4, "only 4 CUDA device"), ("tpu", 4, "unknown device"),
    ("auto,cuda:0", 2, "stands alone"),
])
def test_impossible_placements_are_one_line(devices: str, gpus: int, message: str) -> None:
    with pytest.raises(NasError, match=message):
        worker_devices(devices, None, cuda_count=gpus)


def _fake_gpus(monkeypatch: pytest.MonkeyPatch, count: int) -> None:
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)


def test_run_starts_one_worker_per_gpu_each_on_its_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from optuna_nas.study import runner

    _fake_gpus(monkeypatch, 3)
    started: list[tuple] = []
    monkeypatch.setattr(runner, "run_workers", lambda worker, jobs, n: started.extend(jobs) or [0] * len(jobs))
    path = write_study(tmp_path, "gpus")
    code = main(["run", path, "--storage", f"sqlite:///{tmp_path / 'db.sqlite'}", "--artifact-dir",
                 str(tmp_path / "a"), "--quiet"])
    assert code == 2  # the (faked) workers trained nothing, so the final table has no row to show
    assert [job[2] for job in started] == [0, 1, 2]  # three workers
    options = started[0][1]
    assert options.devices == ("cuda:0", "cuda:1", "cuda:2")
    assert [options.devices[job[2] % len(options.devices)] for job in started] == ["cuda:0", "cuda:1", "cuda:2"]


def test_randgrow_starts_one_worker_per_gpu_each_on_its_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from optuna_nas.randgrow import runner

    _fake_gpus(monkeypatch, 2)
    started: list[tuple] = []
    monkeypatch.setattr(runner, "run_workers", lambda worker, jobs, n: started.extend(jobs) or [0] * len(jobs))
    assert main(["search", "randgrow", "--dataset", "synthetic", "--storage", f"sqlite:///{tmp_path / 'db.sqlite'}",
                 "--artifact-dir", str(tmp_path / "a"), "--cells-per-block", "1", "--channels", "4", "--n-trials", "4",
                 "--quiet"]) == 0
    assert [search.context.device for search, _, _ in started] == ["cuda:0", "cuda:1"]
