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
