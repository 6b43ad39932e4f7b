"""Fault injection: ``optuna-nas run`` workers SIGKILLed at random points, on SQLite, a journal file and PostgreSQL.

Each scenario runs a small grid (2 architectures x 2 seeds, 3 epochs each, synthetic data) with two worker processes
on one storage and one artifact directory. Every worker is tests/study/_faulty_worker.py, which patches the library
in its own process to SIGKILL itself, with a seeded probability, at the scenario's points: inside an epoch, inside a
checkpoint write, around the final weights' upload, between trials. A supervisor (a user rerunning the command)
starts a replacement whenever a worker dies by SIGKILL, until the grid is done; the kills of a scenario are capped
(kill tokens shared by its workers, and ``--probability 0`` for replacements once the cap is reached), so that no
grid point fails more often than the heartbeat's retries allow.

After each scenario: every grid point has exactly one COMPLETE trial (duplicates that gave way are PRUNED with
``duplicate_of`` and do not count) with its whole learning curve, no trial is left RUNNING, every COMPLETE trial has
a ``weights.pt`` artifact that loads with ``weights_only=True``, and no worker printed a traceback. The counts
(kills, points, lost, duplicated, resumed-from-epoch) and where each worker died are printed (``pytest -s``) and are
in every assertion's message.
"""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
from optuna.artifacts import get_all_artifact_meta
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from optuna_nas.artifacts import find_artifact, open_artifact_store
from optuna_nas.retrain import WEIGHTS_FILE
from optuna_nas.storage import open_storage

from _studies import TINY_RETRAIN, write_study

WORKER = Path(__file__).with_name("_faulty_worker.py")
STUDY = "faults"
ROWS = [{"name": "darts_v2", "retrain": {"architecture": "DARTS_V2"}},
        {"name": "darts_v1", "retrain": {"architecture": "DARTS_V1"}}]
SEEDS = [0, 1]
POINTS = {(row["name"], seed) for row in ROWS for seed in SEEDS}
EPOCHS = 3
N_WORKERS = 2
# Kills per scenario, so a point fails at most 3 times: a dead worker's trial is retried 3 times (Heartbeat.max_retry),
# then the point is given up (grid.MAX_FAILURES) and would be lost by design, not by a fault.
MAX_KILLS = 3
TIME_LIMIT = 120.0  # seconds per scenario; a scenario takes 15-40 s on two cores
HEARTBEAT = ["--heartbeat-interval", "1", "--grace-period", "3"]

# The probability of a kill per pass of an armed point. Epochs and checkpoint writes are passed 12 times or more per
# scenario, the final upload and the gap after a trial about 4 times: the seeds below make a first kill certain.
PROBABILITIES = {"epoch": 0.3, "checkpoint-write": 0.3, "upload": 0.6, "between-trials": 0.6}


def one_point_each(first_seed: int) -> list[Any]:
    """A scenario per kill point, each with its own seed."""
    return [pytest.param((point,), first_seed + i, probability, id=point)
            for i, (point, probability) in enumerate(PROBABILITIES.items())]


@dataclass
class Outcome:
    """What a scenario left: the workers' exits, where they died, the study's trials."""

    name: str
    storage: BaseStorage
    artifact_dir: Path
    exits: list[tuple[int, Path]]  # (returncode, log) of every worker, in the order they ended
    kills: list[str]  # where each killed worker died (its kill token)
    trials: list[FrozenTrial]
    seconds: float
    timed_out: bool

    @property
    def complete(self) -> list[FrozenTrial]:
        return [t for t in self.trials if t.state == TrialState.COMPLETE]

    def per_point(self) -> Counter[tuple[str, int]]:
        return Counter((t.params["configuration"], t.params["seed"]) for t in self.complete
                       if "duplicate_of" not in t.user_attrs)

    def summary(self) -> str:
        per_point = self.per_point()
        lost = sorted(p for p in POINTS if per_point[p] == 0)
        duplicated = sorted(p for p, n in per_point.items() if n > 1)
        resumed = [f"trial {t.number} from epoch {t.user_attrs['resumed_from_epoch']}" for t in self.complete
                   if "resumed_from_epoch" in t.user_attrs]
        states = Counter(t.state.name for t in self.trials)
        kills = sum(rc == -signal.SIGKILL for rc, _ in self.exits)
        limit = " (TIME LIMIT)" if self.timed_out else ""
        lines = [f"[faults] {self.name}: kills {kills}, points {len(POINTS)}, lost {_listed(lost)}, "
                 f"duplicated {_listed(duplicated)}, resumed-from-epoch {_listed(resumed)}; "
                 f"trials {dict(sorted(states.items()))}; workers {len(self.exits)}; {self.seconds:.1f} s{limit}"]
        lines += [f"[faults]   {kill}" for kill in self.kills]
        return "\n".join(lines)

    def trial_table(self) -> str:
        """One line per trial: what a failure needs to be read."""
        lines = []
        for t in self.trials:
            attrs = {k: t.user_attrs[k] for k in ("worker", "epochs_done", "resumed_from_epoch", "duplicate_of")
                     if k in t.user_attrs}
            retried = t.system_attrs.get("failed_trial")
            lines.append(f"  trial {t.number} {t.state.name} {trial_point(t)} {attrs}"
                         f"{f' retry of trial {retried}' if retried is not None else ''}")
        return "\n".join(["trials:", *lines])

    def logs(self, tail: int = 4000) -> str:
        return "\n".join(f"--- worker log {log.name} (exit {rc}) ---\n{log.read_text(errors='replace')[-tail:]}"
                         for rc, log in self.exits)


def trial_point(trial: FrozenTrial) -> tuple[str, int] | None:
    params = trial.params or trial.system_attrs.get("fixed_params") or {}
    return (params["configuration"], params["seed"]) if params else None


def _listed(items: Sequence[object]) -> str:
    return f"{len(items)} {items}" if items else "0"


def run_scenario(storage_url: str, tmp_path: Path, name: str, points: tuple[str, ...], seed: int,
                 probability: float) -> Outcome:
    """Two faulty workers on the grid, each killed one replaced by a new one, until every worker exited."""
    study_file = write_study(tmp_path, STUDY, configurations=ROWS, seeds=SEEDS,
                             retrain={**TINY_RETRAIN, "epochs": EPOCHS})
    artifact_dir, tokens = tmp_path / "artifacts", tmp_path / "kill-tokens"
    tokens.mkdir()
    nas = ["run", study_file, "--storage", storage_url, "--artifact-dir", str(artifact_dir), *HEARTBEAT]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    running: list[tuple[subprocess.Popen[bytes], Path]] = []
    exits: list[tuple[int, Path]] = []

    def start_worker() -> None:
        index = len(running) + len(exits)
        kills = sum(rc == -signal.SIGKILL for rc, _ in exits)
        command = [sys.executable, str(WORKER), *(f"--kill-at={point}" for point in points),
                   "--seed", str(seed * 100 + index), "--probability", str(probability if kills < MAX_KILLS else 0),
                   "--tokens", str(tokens), "--max-kills", str(MAX_KILLS), "--", *nas]
        log = tmp_path / f"worker-{index}.log"
        with log.open("wb") as out:
            running.append((subprocess.Popen(command, env=env, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT),
                            log))

    start, timed_out = time.monotonic(), False
    try:
        for _ in range(N_WORKERS):
            start_worker()
        while running:
            if time.monotonic() - start > TIME_LIMIT:
                timed_out = True
                break
            for worker in list(running):
                returncode = worker[0].poll()
                if returncode is None:
                    continue
                running.remove(worker)
                exits.append((returncode, worker[1]))
                if returncode == -signal.SIGKILL:  # the user reruns the command
                    start_worker()
            time.sleep(0.1)
    finally:
        for proc, log in running:
            proc.kill()
            exits.append((proc.wait(), log))
    seconds = time.monotonic() - start
    kills = sorted(path.read_text().strip() or f"{path.name} claimed, no kill written" for path in tokens.iterdir())
    storage = open_storage(storage_url)  # opened once the workers are gone: the test takes no part in the race
    try:
        trials = optuna.load_study(study_name=STUDY, storage=storage).get_trials(deepcopy=False)
    except KeyError:  # no worker got as far as creating the study: the logs say why
        trials = []
    return Outcome(name, storage, artifact_dir, exits, kills, trials, seconds, timed_out)


def unloadable_weights(outcome: Outcome) -> list[str]:
    """Every COMPLETE trial's ``weights.pt`` artifacts that are missing or do not load (``weights_only=True``);
    a trial with none is named too."""
    store = open_artifact_store(outcome.artifact_dir)
    problems = []
    for trial in outcome.complete:
        found = [meta.artifact_id for meta in get_all_artifact_meta(trial, storage=outcome.storage)
                 if meta.filename == WEIGHTS_FILE]
        if not found:
            problems.append(f"trial {trial.number} has no {WEIGHTS_FILE}")
        used = find_artifact(trial, outcome.storage, WEIGHTS_FILE)  # what optuna-nas export --weights loads
        for artifact_id in found:
            try:
                with store.open_reader(artifact_id) as reader:
                    state = torch.load(io.BytesIO(reader.read()), map_location="cpu", weights_only=True)
                if not (isinstance(state, dict) and state and all(isinstance(v, torch.Tensor) for v in state.values())):
                    raise TypeError("not a state dict of tensors")
            except Exception as exc:
                problems.append(f"trial {trial.number}'s {WEIGHTS_FILE} {artifact_id} "
                                f"({'used by export' if artifact_id == used else 'not the one export uses'}, "
                                f"{len(found)} listed) does not load: {type(exc).__name__}")
    return problems


def trials_run_twice(outcome: Outcome) -> dict[int, list[str]]:
    """Trials that more than one worker ran (each worker announces the trials it starts): a trial is one attempt, so
    two workers must never pop the same queued trial."""
    runs: dict[int, list[str]] = {}
    for _, log in outcome.exits:
        for match in re.finditer(r"\[faulty-worker\] pid (\d+) runs trial (\d+)", log.read_text(errors="replace")):
            runs.setdefault(int(match[2]), []).append(f"pid {match[1]} ({log.name})")
    return {number: pids for number, pids in sorted(runs.items()) if len(pids) > 1}


def findings(outcome: Outcome) -> list[str]:
    """Everything the scenario left wrong, one line each."""
    found = []
    if outcome.timed_out:
        found.append(f"the workers did not finish within {TIME_LIMIT:.0f} s")
    for number, pids in trials_run_twice(outcome).items():
        found.append(f"trial {number} was run by {len(pids)} workers at once: {', '.join(pids)}")
    bad_exits = [f"{log.name} exited {rc}" for rc, log in outcome.exits if rc not in (0, -signal.SIGKILL)]
    found += bad_exits
    found += [f"{log.name} printed a traceback" for _, log in outcome.exits
              if "Traceback" in log.read_text(errors="replace")]
    kills = sum(rc == -signal.SIGKILL for rc, _ in outcome.exits)
    if kills != len(outcome.kills):
        found.append(f"{kills} workers died by SIGKILL, {len(outcome.kills)} killed themselves")
    if not 1 <= kills <= MAX_KILLS:
        found.append(f"{kills} kills, not 1 to {MAX_KILLS} (change the probability or the seed)")
    running = [t.number for t in outcome.trials if t.state == TrialState.RUNNING]
    if running:
        found.append(f"trials {running} left RUNNING after every worker exited")
    per_point = outcome.per_point()
    found += [f"grid point {point} has {per_point[point]} COMPLETE trials" for point in sorted(POINTS)
              if per_point[point] != 1]
    found += [f"trial {t.number} COMPLETE although it gave way to trial {t.user_attrs['duplicate_of']}"
              for t in outcome.complete if "duplicate_of" in t.user_attrs]
    found += [f"trial {t.number} COMPLETE with the learning curve of epochs {sorted(t.intermediate_values)}"
              for t in outcome.complete if sorted(t.intermediate_values) != list(range(1, EPOCHS + 1))]
    found += unloadable_weights(outcome)
    return found


def check(outcome: Outcome) -> None:
    """Print the scenario's counts; fail with every finding, the counts, the trials and the workers' logs."""
    summary = outcome.summary()
    print(f"\n{summary}")
    found = findings(outcome)
    assert not found, "\n".join(["what the faults broke:", *(f"  {line}" for line in found), summary,
                                  outcome.trial_table(), outcome.logs()])


@pytest.mark.slow
@pytest.mark.parametrize("points, seed, probability", one_point_each(10))
def test_sqlite(tmp_path: Path, points: tuple[str, ...], seed: int, probability: float) -> None:
    check(run_scenario(f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path, f"sqlite {points[0]} seed {seed}", points,
                       seed, probability))


@pytest.mark.slow
@pytest.mark.parametrize("points, seed, probability", one_point_each(20))
def test_journal_file(tmp_path: Path, points: tuple[str, ...], seed: int, probability: float) -> None:
    check(run_scenario(f"journal:{tmp_path / 'journal.log'}", tmp_path, f"journal {points[0]} seed {seed}", points,
                       seed, probability))


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.parametrize("points, seed, probability", [
    pytest.param(("epoch", "upload"), 31, 0.3, id="epoch+upload"),
    pytest.param(("checkpoint-write", "between-trials"), 32, 0.3, id="checkpoint-write+between-trials"),
])
def test_postgresql(postgres_url: str, tmp_path: Path, points: tuple[str, ...], seed: int,
                    probability: float) -> None:
    check(run_scenario(postgres_url, tmp_path, f"postgresql {'+'.join(points)} seed {seed}", points, seed,
                       probability))
