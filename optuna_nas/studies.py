"""Running a study file: an Optuna study on shared storage, any number of workers, resumable.

Each trial is one point of the grid (configuration x seed x swept values), or one sample of TPE / random
search. Workers are processes here (joblib) or the same command started on other machines against the
same storage URL and artifact directory. The rules that make it safe to stop, kill and rerun:

* a grid point with a COMPLETE (or PRUNED) trial is never run again; a worker only enqueues points that
  have no running or waiting trial, and a trial that finds its point already taken by an earlier trial
  stops at once as PRUNED with the user attr ``duplicate_of`` (two workers that raced for a point);
* a worker that dies stops beating: after the grace period its trial is marked FAIL and queued again with
  the same parameters (Optuna's heartbeat and ``RetryHeartbeatStaleTrialCallback``), and the retried trial
  resumes from the run's epoch checkpoint in the artifact store;
* workers keep polling while points run elsewhere, so a dead worker's trial is taken over without a rerun;
* a point that failed ``MAX_FAILURES`` times (e.g. a diverging configuration) is given up, not looped on.

Searches shared by several rows of a table (A-DARTS Table 2: "factorized" searched once, retrained as is,
with ReLU and with SELU; Config-A freezing the factorized search's activations) run once per seed as
trials of the sibling study ``NAME-searches``, and every trial that needs one reuses it.
"""

from __future__ import annotations

import os
import platform
import random
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import fail_stale_trials
from optuna.storages._heartbeat import get_heartbeat_thread
from optuna.trial import FrozenTrial, TrialState

from .artifacts import DEFAULT_ARTIFACT_DIR, discard_checkpoint, open_artifact_store
from .darts.search import SearchSettings
from .data import ImageDataset, load_dataset
from .errors import NasError, TrainingDiverged
from .genotypes import Genotype
from .objectives import DartsSearchJob, DartsSearchObjective, RetrainJob, RetrainObjective, upload_genotype
from .randgrow.sampler import get_proposal
from .randgrow_study import best_grown_model, growth_search
from .storage import Heartbeat, load_or_create_study, open_storage, study_token
from .study_file import Configuration, StudySpec
from .train import TrainSettings
from .workers import limit_threads, run_workers, split_evenly

MAX_FAILURES = 3
SPEC_ATTR = "optuna_nas:study_file"
DONE_STATES = (TrialState.COMPLETE, TrialState.PRUNED)


@dataclass
class RunOptions:
    storage: str
    artifact_dir: Path = DEFAULT_ARTIFACT_DIR
    study_name: str | None = None  # default: the file's name (+ "-PRESET" for a preset)
    n_workers: int = 1
    n_trials: int | None = None  # new trials this command runs at most (default: the whole grid)
    devices: tuple[str, ...] = ("auto",)
    heartbeat: Heartbeat = field(default_factory=Heartbeat)
    verbose: bool = True


def study_name_of(spec: StudySpec, options: RunOptions) -> str:
    if options.study_name:
        return options.study_name
    return f"{spec.name}-{spec.preset}" if spec.preset else spec.name


def fail_stale(study: optuna.Study) -> None:
    """Optuna's ``fail_stale_trials`` (experimental, and exactly what a worker needs), without the warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        fail_stale_trials(study)


def point_key(params: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted(params.items()))


def trial_params(trial: FrozenTrial) -> dict[str, Any]:
    """A trial's parameters; an enqueued trial that has not started yet holds them as fixed params."""
    return dict(trial.params or trial.system_attrs.get("fixed_params") or {})


# ---------------------------------------------------------------- datasets, once per process

_DATASETS: dict[tuple[str, str | None], ImageDataset] = {}


def dataset(spec: str, root: str | None) -> ImageDataset:
    if (spec, root) not in _DATASETS:
        _DATASETS[(spec, root)] = load_dataset(spec, root)
    return _DATASETS[(spec, root)]


# ---------------------------------------------------------------- the trial


def _split(stage: dict[str, Any], cls: type) -> tuple[Any, dict[str, Any]]:
    """A stage's settings dataclass (``SearchSettings`` / ``TrainSettings``) and the stage's other keys."""
    names = set(cls.__dataclass_fields__)
    settings = cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in stage.items() if k in names})
    return settings, {k: v for k, v in stage.items() if k not in names}


class StudyObjective:
    """The objective every trial of a study file runs; the stages follow ``spec.objective``."""

    def __init__(self, spec: StudySpec, options: RunOptions, study_name: str, device: str) -> None:
        self.spec = spec
        self.options = options
        self.study_name = study_name
        self.device = device
        self.searches: optuna.Study | None = None

    # -- parameters
    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        spec = self.spec
        params: dict[str, Any] = {"configuration": trial.suggest_categorical(
            "configuration", [c.name for c in spec.configurations])}
        if spec.sampler == "grid":  # an int range: a later file may add seeds to the same study
            params["seed"] = trial.suggest_int("seed", min(spec.seeds), max(spec.seeds))
        else:
            params["seed"] = trial.suggest_categorical("seed", spec.seeds)
        for path, values in spec.sweep.items():
            if isinstance(values, list):
                params[path] = trial.suggest_categorical(path, values)
            elif isinstance(values["low"], int) and isinstance(values["high"], int) and not values.get("log"):
                params[path] = trial.suggest_int(path, values["low"], values["high"], step=values.get("step", 1))
            else:
                params[path] = trial.suggest_float(path, values["low"], values["high"], log=values.get("log", False),
                                                   step=values.get("step"))
        return params

    def _check_duplicate(self, trial: optuna.Trial, params: dict[str, Any]) -> None:
        """Two workers that raced for one grid point: the later trial gives way."""
        if self.spec.sampler != "grid":
            return
        for other in trial.study.get_trials(deepcopy=False):
            if other.number == trial.number or "duplicate_of" in other.user_attrs or trial_params(other) != params:
                continue
            taken = other.state in DONE_STATES or (
                other.state in (TrialState.RUNNING, TrialState.WAITING) and other.number < trial.number)
            if taken:
                trial.set_user_attr("duplicate_of", other.number)
                raise optuna.TrialPruned(f"grid point already taken by trial {other.number}")

    def __call__(self, trial: optuna.Trial) -> float:
        params = self.suggest(trial)
        self._check_duplicate(trial, params)
        cfg = self.spec.configuration(params["configuration"])
        seed = int(params["seed"])
        trial.set_user_attr("configuration", cfg.name)
        trial.set_user_attr("worker", f"{platform.node()}:{os.getpid()}")
        kind = self.spec.objective
        if kind == "search":
            objective = self._search_objective(cfg, seed, params)
            return float(objective.search(trial, objective.run_key(self._scope(trial.study))).history[-1]["val_acc"])
        if kind == "search_retrain":
            search = self.ensure_search(cfg, seed, params)
            genotype = Genotype.from_dict(search.user_attrs["genotype"])
            for name, value in search.user_attrs.items():
                if name.startswith("search_"):
                    trial.set_user_attr(name, value)
            trial.set_user_attr("search_trial", search.number)
            trial.set_user_attr("search_val_acc", search.value)
            return self._retrain(trial, cfg, seed, params, genotype)
        if kind == "retrain":
            return self._retrain(trial, cfg, seed, params, None)
        return self._randgrow(trial, cfg, seed, params)

    def _scope(self, study: optuna.Study) -> str:
        return f"{self.study_name}:{study_token(study)}"

    # -- DARTS search, in this trial or reused from the searches study
    def _search_objective(self, cfg: Configuration, seed: int, params: dict[str, Any],
                          config_a: Genotype | None = None) -> DartsSearchObjective:
        stage = self.spec.stage(cfg, "search", params)
        retrain = self.spec.stage(cfg, "retrain", params)
        settings, extra = _split(stage, SearchSettings)
        settings = replace(settings, seed=seed)
        job = DartsSearchJob(dataset=self.spec.search_dataset, data_root=self.spec.data_root, space=cfg.space,
                             activation_mode=extra.get("activation_mode"),
                             config_a_genotype=config_a or extra.get("config_a_genotype") or None,
                             partial_channels=extra.get("partial_channels"),
                             recompute_cells=bool(extra.get("recompute_cells", False)),
                             channels=extra.get("channels", 16), layers=extra.get("layers", 8),
                             retrain_channels=retrain.get("channels", 36), retrain_layers=retrain.get("layers", 20),
                             settings=settings, device=self.device, artifact_dir=self.options.artifact_dir,
                             verbose=self.options.verbose)
        return DartsSearchObjective(job, dataset(self.spec.search_dataset, self.spec.data_root))

    def _searches_study(self) -> optuna.Study:
        if self.searches is None:
            self.searches = load_or_create_study(self.options.storage, f"{self.study_name}-searches", ["maximize"],
                                                 ["val_acc"], heartbeat=self.options.heartbeat)
            # a shared search is never pruned: rows that reuse it would lose it (Optuna's default prunes)
            self.searches.pruner = optuna.pruners.NopPruner()
        return self.searches

    def ensure_search(self, cfg: Configuration, seed: int, params: dict[str, Any]) -> FrozenTrial:
        """The completed search this row and seed retrain from: found, waited for, or run now."""
        config_a = None
        source = self.spec.stage(cfg, "search", params).get("config_a_from")
        if source:  # Config-A: freeze the activations the source row's search of this seed found
            found = self.ensure_search(self.spec.configuration(source), seed, params)
            config_a = Genotype.from_dict(found.user_attrs["genotype"])
        searches = self._searches_study()
        objective = self._search_objective(cfg, seed, params, config_a)
        key = objective.run_key(self._scope(searches))
        announced = False
        while True:
            fail_stale(searches)
            mine = [t for t in searches.get_trials(deepcopy=False) if t.user_attrs.get("search_key") == key]
            done = [t for t in mine if t.state == TrialState.COMPLETE]
            if done:
                return done[0]
            if sum(t.state == TrialState.FAIL for t in mine) >= MAX_FAILURES:
                raise NasError(f"the search of {cfg.name!r} (seed {seed}) failed {MAX_FAILURES} times; see "
                               f"study {searches.study_name!r}")
            if any(t.state == TrialState.RUNNING for t in mine):
                if not announced and self.options.verbose:
                    print(f"[study] waiting for the search of {cfg.name!r} seed {seed}, running on another "
                          "worker", file=sys.stderr)
                    announced = True
                time.sleep(self.options.heartbeat.interval)
                continue
            self._run_search_trial(searches, key, cfg, seed, params, objective)

    def _run_search_trial(self, searches: optuna.Study, key: str, cfg: Configuration, seed: int,
                          params: dict[str, Any], objective: DartsSearchObjective) -> None:
        """Run one search trial of the searches study: ours, or a retried one a dead worker left waiting."""
        with warnings.catch_warnings():  # Optuna warns that heartbeats are meant for optimize(): we beat below
            warnings.simplefilter("ignore", UserWarning)
            trial = searches.ask()  # pops a waiting (retried) trial first, as study.optimize would
        if "search_key" in trial.user_attrs:
            other = trial.user_attrs
            if other["search_key"] != key:  # someone else's retried search: run it with its own settings
                cfg = self.spec.configuration(other["configuration"])
                seed, params = int(other["seed"]), dict(other.get("params", {}))
                source = self.spec.stage(cfg, "search", params).get("config_a_from")
                config_a = (Genotype.from_dict(self.ensure_search(self.spec.configuration(source), seed, params)
                                               .user_attrs["genotype"]) if source else None)
                objective = self._search_objective(cfg, seed, params, config_a)
                key = other["search_key"]
        else:
            for name, value in {"search_key": key, "configuration": cfg.name, "seed": seed, "params": params,
                                "activation_mode": str(objective.config.activation_mode)}.items():
                trial.set_user_attr(name, value)
        heartbeat = get_heartbeat_thread(trial._trial_id, searches._storage)
        heartbeat.start()
        try:
            value = objective.search(trial, key).history[-1]["val_acc"]
        except BaseException:  # Ctrl-C included: the search is failed, never complete; it resumes when rerun
            searches.tell(trial, state=TrialState.FAIL)
            raise
        finally:
            heartbeat.join()
        searches.tell(trial, float(value))
        discard_checkpoint(open_artifact_store(self.options.artifact_dir), searches, f"search-{key}")

    # -- retraining
    def _retrain(self, trial: optuna.Trial, cfg: Configuration, seed: int, params: dict[str, Any],
                 genotype: Genotype | Any | None) -> float:
        objective = self.retrain_objective(cfg, seed, params, genotype)
        if isinstance(objective.architecture, Genotype):  # as retrained: with the row's activation, if any
            upload_genotype(trial, self.options.artifact_dir, objective.architecture)
        return objective.train(trial, seed)

    def retrain_objective(self, cfg: Configuration, seed: int, params: dict[str, Any],
                          genotype: Genotype | Any | None) -> RetrainObjective:
        stage = self.spec.stage(cfg, "retrain", params)
        settings, extra = _split(stage, TrainSettings)
        architecture = genotype if genotype is not None else extra["architecture"]
        job = RetrainJob(architecture=architecture, dataset=self.spec.dataset, data_root=self.spec.data_root,
                         channels=extra.get("channels", 36), layers=extra.get("layers", 20),
                         imagenet=bool(extra.get("imagenet", False)), auxiliary=bool(extra.get("auxiliary", True)),
                         activation=extra.get("activation") or None, seed=seed, settings=settings,
                         device=self.device, artifact_dir=self.options.artifact_dir, verbose=self.options.verbose)
        return RetrainObjective(job, dataset(self.spec.dataset, self.spec.data_root))

    def validate(self) -> None:
        """Build what every row's trials will build (super-network, architecture, RandGrow space), so an
        impossible setting is one line now, not a failed trial later. Raises ``NasError`` naming the row."""
        seed = self.spec.seeds[0]
        for cfg in self.spec.configurations:
            try:
                search = self.spec.stage(cfg, "search", {})
                if self.spec.objective in ("search", "search_retrain") and not search.get("config_a_from"):
                    self._search_objective(cfg, seed, {})
                if self.spec.objective == "retrain":
                    self.retrain_objective(cfg, seed, {}, None)
                if self.spec.objective == "randgrow":
                    growth_search(self, self.spec.stage(cfg, "randgrow", {}))
            except NasError as exc:
                raise NasError(f"{self.spec.source}: configurations[{cfg.name}]: {exc}") from None

    # -- RandGrow: grow (shared by rows with the same search), then train the best model as a final model
    def _randgrow(self, trial: optuna.Trial, cfg: Configuration, seed: int, params: dict[str, Any]) -> float:
        grow = self.spec.stage(cfg, "randgrow", params)
        best, sub_study = best_grown_model(self, grow)
        trial.set_user_attr("search_study", sub_study.study_name)
        trial.set_user_attr("parent", best.number)
        trial.set_user_attr("search_val_error", best.values[0])
        hours = sum((t.duration.total_seconds() for t in sub_study.get_trials(deepcopy=False)
                     if t.duration is not None), 0.0) / 3600.0
        unit = "gpu" if "cuda" in str(best.user_attrs.get("device", self.device)) else "cpu"
        trial.set_user_attr(f"search_{unit}_hours", round(hours, 5))
        proposal = get_proposal(best)
        if proposal is None:
            raise NasError(f"trial {best.number} of {sub_study.study_name!r} has no RandGrow architecture")
        return self._retrain(trial, cfg, seed, params, proposal.architecture)


# ---------------------------------------------------------------- grid state and workers


def _grid_state(spec: StudySpec, trials: list[FrozenTrial]) -> dict[tuple[tuple[str, Any], ...], list[FrozenTrial]]:
    by_point: dict[tuple[tuple[str, Any], ...], list[FrozenTrial]] = {point_key(p): [] for p in spec.grid()}
    for t in trials:
        params = trial_params(t)
        key = point_key(params) if params else None
        if key in by_point:
            by_point[key].append(t)
    return by_point


def point_status(trials: list[FrozenTrial]) -> str:
    """complete, pruned, running, waiting, failed (given up after MAX_FAILURES), or pending."""
    states = [t.state for t in trials if "duplicate_of" not in t.user_attrs]
    for state, name in ((TrialState.COMPLETE, "complete"), (TrialState.PRUNED, "pruned"),
                        (TrialState.RUNNING, "running"), (TrialState.WAITING, "waiting")):
        if state in states:
            return name
    return "failed" if states.count(TrialState.FAIL) >= MAX_FAILURES else "pending"


def make_pruner(spec: StudySpec) -> optuna.pruners.BasePruner:
    options = {k: v for k, v in spec.pruner.items() if k != "type"}
    try:
        if spec.pruner["type"] == "median":
            return optuna.pruners.MedianPruner(**options)
        if spec.pruner["type"] == "hyperband":
            return optuna.pruners.HyperbandPruner(**options)
    except TypeError as exc:
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


def discard_finished_checkpoints(artifact_dir: Path) -> Callable[[optuna.Study, FrozenTrial], None]:
    """A study callback: once a trial completed, its run's epoch checkpoint is no longer needed."""
    store = open_artifact_store(artifact_dir)

    def callback(study: optuna.Study, trial: FrozenTrial) -> None:
        if trial.state == TrialState.COMPLETE and trial.user_attrs.get("checkpoint"):
            discard_checkpoint(store, study, trial.user_attrs["checkpoint"])

    return callback


def study_worker(spec: StudySpec, options: RunOptions, index: int, budget: int | None, n_workers: int) -> int:
    """One worker: run trials until the grid is done (or ``budget`` trials ran); returns how many it ran."""
    limit_threads(n_workers)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    device = options.devices[index % len(options.devices)]
    study = open_study(spec, options, seed=os.getpid())
    objective = StudyObjective(spec, options, study.study_name, device)
    if spec.sampler != "grid":
        target = spec.n_trials or 0
        remaining = target - len(study.get_trials(deepcopy=False, states=DONE_STATES))
        if remaining <= 0:
            return 0
        # the callback stops every worker once the study has its n_trials, whoever finished them
        callback = optuna.study.MaxTrialsCallback(target, states=DONE_STATES)
        before = len(study.get_trials(deepcopy=False))
        study.optimize(objective, n_trials=min(remaining, budget or remaining), catch=(TrainingDiverged,),
                       callbacks=[callback, discard_finished_checkpoints(options.artifact_dir)])
        return len(study.get_trials(deepcopy=False)) - before
    rng = random.Random(f"{os.getpid()}-{index}-{time.time_ns()}")
    ran, waiting_said = 0, False
    while budget is None or ran < budget:
        fail_stale(study)
        trials = study.get_trials(deepcopy=False)
        state = _grid_state(spec, trials)
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
                       callbacks=[discard_finished_checkpoints(options.artifact_dir)])
        ran += 1
    return ran


def prepare_study(spec: StudySpec, options: RunOptions) -> optuna.Study:
    """Validate data and the first configuration, then create (or check) the study, before any worker runs."""
    for name in {spec.dataset, spec.search_dataset}:
        dataset(name, spec.data_root)
    StudyObjective(spec, options, study_name_of(spec, options), options.devices[0]).validate()
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
                   for ts in _grid_state(spec, study.get_trials(deepcopy=False)).values()) \
            if spec.sampler == "grid" else len(study.get_trials(deepcopy=False, states=DONE_STATES))
        print(f"[study] {study.study_name}: {done}/{total} done; {options.n_workers} worker(s) on "
              f"{options.storage}", file=sys.stderr)
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
    url = options.storage
    exists = not url.startswith("sqlite:///") or Path(url.removeprefix("sqlite:///")).is_file()
    if url.startswith("journal:"):
        exists = Path(url.removeprefix("journal:").removeprefix("//")).is_file()
    if exists:
        try:
            study = optuna.load_study(study_name=study_name_of(spec, options), storage=open_storage(url))
            trials = study.get_trials(deepcopy=False)
        except KeyError:
            trials = []
    state = _grid_state(spec, trials)
    out = []
    for point in spec.grid():
        ts = state[point_key(point)]
        live = [t.number for t in ts if "duplicate_of" not in t.user_attrs]
        out.append({**point, "state": point_status(ts), "trials": live})
    return out

