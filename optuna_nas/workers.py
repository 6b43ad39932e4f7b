"""Local worker processes (joblib) that share one Optuna storage.

Every worker opens the storage itself, so the same code runs one worker here or one per machine against
PostgreSQL / MySQL or a journal file on a shared filesystem.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import torch
from joblib import Parallel, delayed
from joblib.externals.loky.process_executor import TerminatedWorkerError

from .errors import NasError


def worker_devices(devices: str, n_workers: int | None, cuda_count: int | None = None) -> list[str]:
    """The device of each local worker: one worker per visible CUDA device by default, each pinned to its own;
    on a machine without GPUs one CPU worker (or ``n_workers`` of them). ``devices`` is ``auto`` or a
    comma-separated list (``cuda:0,cuda:2``, ``cpu``) that workers take in turn. ``cuda_count`` defaults to
    the visible devices (a parameter so the placement is testable without GPUs)."""
    cuda_count = torch.cuda.device_count() if cuda_count is None else cuda_count
    names = [d.strip() for d in devices.split(",") if d.strip()] or ["auto"]
    if names == ["auto"]:
        names = [f"cuda:{i}" for i in range(cuda_count)] or ["cpu"]
    for name in names:
        if name == "auto":
            raise NasError("--devices: 'auto' stands alone (one worker per visible GPU); or list devices")
        if name.startswith("cuda"):
            index = name.partition(":")[2] or "0"
            if not index.isdigit() or int(index) >= cuda_count:
                seen = f"only {cuda_count} CUDA device(s) are visible" if cuda_count else "CUDA is not available"
                raise NasError(f"device {name!r} requested but {seen}")
        elif name not in ("cpu", "mps"):
            raise NasError(f"--devices: unknown device {name!r}; use auto, cpu or cuda:N")
    if n_workers is None:
        n_workers = len(names) if names[0] != "cpu" else 1
    if n_workers < 1:
        raise NasError(f"--n-workers must be at least 1, got {n_workers}")
    return [names[i % len(names)] for i in range(n_workers)]


def pin_device(device: str) -> None:
    """Make ``device`` this process's current CUDA device, so nothing lands on cuda:0 by default."""
    if device.startswith("cuda"):
        torch.cuda.set_device(torch.device(device))


def split_evenly(total: int, parts: int) -> list[int]:
    """``total`` items over ``parts`` workers, the first ones taking one more; no empty shares."""
    base, extra = divmod(max(total, 0), parts)
    return [n for n in (base + (i < extra) for i in range(parts)) if n > 0]


def threads_per_worker(n_workers: int) -> int:
    """CPU threads each worker's torch may use: the machine's cores shared, never oversubscribed
    (two workers spinning OpenMP threads on the same cores are many times slower than one each)."""
    return max(1, (os.cpu_count() or 1) // max(n_workers, 1))


def run_workers(worker: Callable[..., Any], jobs: Sequence[tuple[Any, ...]], n_workers: int) -> list[Any]:
    """``worker(*job)`` for every job: in this process for one worker (Ctrl-C reaches the trial, which
    Optuna records as failed), otherwise in ``n_workers`` joblib processes."""
    if n_workers <= 1 or len(jobs) <= 1:
        return [worker(*job) for job in jobs]
    try:
        return list(Parallel(n_jobs=min(n_workers, len(jobs)), backend="loky")(delayed(worker)(*job) for job in jobs))
    except TerminatedWorkerError as exc:  # killed (OOM killer, SIGKILL): joblib stops the others with it
        cause = str(exc).splitlines()[-1] if str(exc) else "no exit code"
        raise NasError(f"a worker process died ({cause.strip()}); its running trial is retried with its "
                       "checkpoint once its heartbeat goes stale: rerun the same command") from None


def limit_threads(n_workers: int) -> None:
    if n_workers > 1:
        torch.set_num_threads(threads_per_worker(n_workers))
