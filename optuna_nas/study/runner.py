"""Running a study file: an Optuna study on shared storage, any number of workers, resumable.

Each trial is one point of the grid (configuration x seed x swept values; see ``grid.py``), or one sample of
TPE / random search, and runs the file's stages (``stages.py``). Workers are processes here (joblib) or the
same command started on other machines against the same storage URL and artifact directory. What makes it
safe to stop, kill and rerun:

* a worker only enqueues points that have no running or waiting trial, and never reruns a done point;
* a worker that dies stops beating: after the grace period its trial is marked FAIL and queued again with
  the same parameters (Optuna's heartbeat and ``RetryHeartbeatStaleTrialCallback``), and the retried trial
  resumes from the run's epoch checkpoint in the artifact store;
* workers keep polling while points run elsewhere, so a dead worker's trial is taken over without a rerun.
"""

from __future__ import annotations

import os
import random
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from ..artifacts import DEFAULT_ARTIFACT_STORE, check_artifact_store, open_artifact_store
from ..data import MissingDataset, stand_in_dataset
from ..errors import NasError, TrainingDiverged, redact
from ..heartbeat import Heartbeat
from ..storage import load_or_create_study, load_study_by_name, study_token
from ..trials import TrialContext, discard_finished_checkpoint, fail_stale
from ..workers import limit_threads, pin_device, run_workers, split_evenly
from .grid import DONE_STATES, grid_state, point_key, point_status
from .spec import SPEC_ATTR, StudySpec
from .stages import StageContext, StudyObjective


@dataclass
class RunOptions:
    storage: str
    artifact_store: str = DEFAULT_ARTIFACT_STORE
    study_name: str | None = None  # default: the file's name (+ "-PRESET" for a preset)
    n_workers: int = 1
    n_trials: int | None = None  # new trials this command runs at most (default: the whole grid)
    devices: tuple[str, ...] = ("auto",)  # one per worker in turn (see workers.worker_devices)
    heartbeat: Heartbeat = field(default_factory=Heartbeat)
    verbose: bool = True

    def stage_context(self, spec: StudySpec, device: str) -> StageContext:
        return StageContext(self.storage, study_name_of(spec, self),
                            TrialContext(device=device, artifact_store=self.artifact_store, verbose=self.verbose),
                            self.heartbeat)


def study_name_of(spec: StudySpec, options: RunOptions) -> str:
    if options.study_name:
        return options.study_name
    return f"{spec.name}-{spec.preset}" if spec.preset else spec.name


def make_pruner(spec: StudySpec) -> optuna.pruners.BasePruner:
    options = {k: v for k, v in spec.pruner.items() if k != "type"}
    try:
        if spec.pruner["type"] == "median":
            return optuna.pruners.MedianPruner(**options)
        if spec.pruner["type"] == "hyperband":
            return optuna.pruners.HyperbandPruner(**options)
    except (TypeError, ValueError) as exc:
        raise NasError(f"{spec.source}: pruner: {exc}") from None
    return optuna.pruners.NopPruner()


def make_sampler(spec: StudySpec, seed: int) -> optuna.samplers.BaseSampler:
    # grid points are enqueued (fixed params), so the sampler only matters for TPE / random studies
    return optuna.samplers.TPESampler(seed=seed) if spec.sampler == "tpe" else optuna.samplers.RandomSampler(seed)


def open_study(spec: StudySpec, options: RunOptions, heartbeat: bool = True, seed: int = 0) -> optuna.Study:
    study = load_or_create_study(options.storage, study_name_of(spec, options), spec.directions, spec.metric_names,
                                 make_sampler(spec, seed), options.heartbeat if heartbeat else False)
    study.pruner = make_pruner(spec)
    return study


def discard_finished_checkpoints(artifact_store: str) -> Callable[[optuna.Study, FrozenTrial], None]:
    """A study callback: once a trial completed, its run's epoch checkpoint is no longer needed."""
    store = open_artifact_store(artifact_store)
    return lambda study, trial: discard_finished_checkpoint(store, study, trial)


def study_worker(spec: StudySpec, options: RunOptions, index: int, budget: int | None, n_workers: int) -> int:
    """One worker: run trials until the grid is done (or ``budget`` trials ran); returns how many it ran."""
    limit_threads(n_workers)
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # our own lines say what happens
    device = options.devices[index % len(options.devices)]
    pin_device(device)
    study = open_study(spec, options, seed=os.getpid())
    objective = StudyObjective(spec, options.stage_context(spec, device))
    if spec.sampler != "grid":
        target = spec.n_trials or 0
        remaining = target - len(study.get_trials(deepcopy=False, states=DONE_STATES))
        if remaining <= 0:
            return 0
        # the callback stops every worker once the study has its n_trials, whoever finished them
        callback = optuna.study.MaxTrialsCallback(target, states=DONE_STATES)
        before = len(study.get_trials(deepcopy=False))
        study.optimize(objective, n_trials=min(remaining, budget or remaining), catch=(TrainingDiverged,),
                       callbacks=[callback, discard_finished_checkpoints(options.artifact_store)])
        return len(study.get_trials(deepcopy=False)) - before
    rng = random.Random(f"{os.getpid()}-{index}-{time.time_ns()}")
    ran, waiting_said = 0, False
    while budget is None or ran < budget:
        fail_stale(study)
        trials = study.get_trials(deepcopy=False)
        state = grid_state(spec, trials)
        status = {key: point_status(ts) for key, ts in state.items()}
        pending = [key for key, s in status.items() if s in ("pending", "running", "waiting")]
        if not pending:
            break
        free = [key for key in pending if status[key] == "pending"]
        queued = any(t.state == TrialState.WAITING for t in trials)
        if not free and not queued:  # the rest runs elsewhere: stay to take over a trial whose worker dies
            if not waiting_said and options.verbose:
                print(f"[study] worker {index}: {len(pending)} trial(s) running on other workers; waiting",
                      file=sys.stderr)
                waiting_said = True
            time.sleep(options.heartbeat.interval)
            continue
        if not queued:
            study.enqueue_trial(dict(rng.choice(free)))
        study.optimize(objective, n_trials=1, catch=(TrainingDiverged,),
                       callbacks=[discard_finished_checkpoints(options.artifact_store)])
        ran += 1
    return ran


def validate_run(spec: StudySpec, options: RunOptions, dry_run: bool = False) -> list[str]:
    """Everything a run checks before it writes anything: the data, what every row's trials build (networks,
    architectures, RandGrow spaces), the pruner and the artifact store. A dry run checks the same, against
    a stand-in of the right shape for a downloadable dataset that is not here yet; it returns what it noted."""
    datasets, notes = {}, []
    for source in {spec.data, spec.search_data}:
        try:
            datasets[source] = source.load()
        except MissingDataset as exc:
            if not dry_run:
                raise
            datasets[source] = stand_in_dataset(source.spec)
            notes.append(f"{exc} (checked against its shape)")
    StudyObjective(spec, options.stage_context(spec, options.devices[0]), datasets).validate()
    make_pruner(spec)
    check_artifact_store(options.artifact_store)
    return notes


def prepare_study(spec: StudySpec, options: RunOptions) -> optuna.Study:
    """Validate everything (``validate_run``), then create (or check) the study, before any worker runs."""
    validate_run(spec, options)
    study = open_study(spec, options, heartbeat=False)
    identity = {"objective": spec.objective, "configurations": [c.name for c in spec.configurations],
                "sampler": spec.sampler, "sweep": spec.sweep, "preset": spec.preset}
    stored = study.user_attrs.get(SPEC_ATTR)
    if stored is None:
        study.set_user_attr(SPEC_ATTR, {**identity, "file": spec.source, "seeds": spec.seeds})
        _save_note(study, spec)
    else:
        changed = [k for k, v in identity.items() if stored.get(k) != v]
        if changed:
            raise NasError(f"study {study.study_name!r} was created from another version of {spec.source} "
                           f"({', '.join(changed)} differ); use --study-name for a new study")
        if stored.get("seeds") != spec.seeds:
            study.set_user_attr(SPEC_ATTR, {**stored, "seeds": sorted(set(stored.get("seeds", [])) | set(spec.seeds))})
    study_token(study)  # fixed now, before workers race to create it
    return study


def _save_note(study: optuna.Study, spec: StudySpec) -> None:
    """The file's description as the study's note in optuna-dashboard (Markdown)."""
    rows = "\n".join(f"| {c.name} | {c.description} |" for c in spec.configurations)
    body = (f"# {spec.name}\n\n{spec.description}\n\nObjective: `{spec.objective}`; sampler: `{spec.sampler}`; "
            f"seeds: {spec.seeds}; preset: {spec.preset or 'none'}; file: `{spec.source}`\n\n"
            f"| configuration | description |\n|---|---|\n{rows}\n")
    try:
        from optuna_dashboard import save_note
    except ImportError:  # the dashboard is a dependency, but a note is not worth failing a run over
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        save_note(study, body)


def run_study(spec: StudySpec, options: RunOptions) -> optuna.Study:
    """Run the study file until its grid is done (or ``n_trials`` new trials ran), with ``n_workers``."""
    if options.n_workers < 1:
        raise NasError(f"--n-workers must be at least 1, got {options.n_workers}")
    study = prepare_study(spec, options)
    total = len(spec.grid()) if spec.sampler == "grid" else spec.n_trials
    if options.verbose:
        done = sum(point_status(ts) in ("complete", "pruned")
                   for ts in grid_state(spec, study.get_trials(deepcopy=False)).values()) \
            if spec.sampler == "grid" else len(study.get_trials(deepcopy=False, states=DONE_STATES))
        print(redact(f"[study] {study.study_name}: {done}/{total} done; {options.n_workers} worker(s) on "
                     f"{options.storage}"), file=sys.stderr)
    if options.n_trials is not None:
        shares: list[int | None] = list(split_evenly(options.n_trials, options.n_workers))
    else:
        shares = [None] * options.n_workers
    jobs = [(spec, options, i, share, len(shares)) for i, share in enumerate(shares)]
    run_workers(study_worker, jobs, len(jobs))
    return open_study(spec, options, heartbeat=False)


def grid_status(spec: StudySpec, options: RunOptions) -> list[dict[str, Any]]:
    """What ``--dry-run`` shows: every grid point, its state and trial, without writing to storage."""
    trials: list[FrozenTrial] = []
    try:
        trials = load_study_by_name(options.storage, study_name_of(spec, options)).get_trials(deepcopy=False)
    except NasError as exc:
        if not str(exc).startswith("no study"):  # a wrong URL, say: not a study that is yet to run
            raise
    state = grid_state(spec, trials)
    out = []
    for point in spec.grid():
        ts = state[point_key(point)]
        live = [t.number for t in ts if "duplicate_of" not in t.user_attrs]
        out.append({**point, "state": point_status(ts), "trials": live})
    return out

