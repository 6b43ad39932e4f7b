"""The stages of a study file's trial: search, retrain, grow, chained by the file's ``objective``.

* ``search``: one DARTS-family search is the trial.
* ``search_retrain``: the row's search (shared, see below), then its genotype retrained from scratch.
* ``retrain``: the row's architecture retrained from scratch.
* ``randgrow``: the row's RandGrow search grown (shared), then its best model trained as a final model.

**Shared searches.** Rows of a table that search alike share one search per seed (A-DARTS Table 2:
"factorized" is searched once, retrained as found, with ReLU and with SELU; Config-A freezes the
activations the same seed's factorized search found). A shared search runs as a trial of the sibling
study ``NAME-searches``; every trial that needs it finds it there, waits while another worker runs it, or
runs it. RandGrow rows with the same search settings grow one study ``NAME-grow-…`` together.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from ..artifacts import open_artifact_store
from ..darts.genotypes import Genotype
from ..darts.objective import DartsSearchObjective, SearchJob
from ..data import DataSource, ImageDataset
from ..errors import NasError, TrainingDiverged
from ..heartbeat import Heartbeat
from ..randgrow.runner import GrowthSettings, RandGrowSearch, run_randgrow
from ..randgrow.sampler import get_proposal
from ..retrain import AnyArchitecture, RetrainJob, RetrainObjective
from ..storage import load_or_create_study, run_key, study_token
from ..train import resolve_device
from ..trials import TrialContext, discard_finished_checkpoint, fail_stale, say_why_it_failed
from .grid import MAX_FAILURES, give_way_if_taken, suggest_point
from .spec import Configuration, StudySpec


@dataclass(frozen=True)
class StageContext:
    """Where a study's stages run: its storage and study name, how trials beat, and the trials' context."""

    storage: str
    study_name: str
    trial: TrialContext = field(default_factory=TrialContext)
    heartbeat: Heartbeat = field(default_factory=Heartbeat)


class StudyObjective:
    """The objective every trial of a study file runs; the stages follow ``spec.objective``."""

    def __init__(self, spec: StudySpec, context: StageContext,
                 datasets: Mapping[DataSource, ImageDataset] | None = None) -> None:
        self.spec = spec
        self.context = context
        self.datasets = dict(datasets or {})  # given (a dry run's stand-ins), else loaded when first needed
        self.searches: optuna.Study | None = None

    def _data(self, source: DataSource) -> ImageDataset:
        if source not in self.datasets:
            self.datasets[source] = source.load()
        return self.datasets[source]

    def __call__(self, trial: optuna.Trial) -> float:
        try:
            return self._run(trial)
        except TrainingDiverged as exc:  # the study goes on; the point is tried again, MAX_FAILURES times at most
            say_why_it_failed(trial, exc, "study")
            raise

    def _run(self, trial: optuna.Trial) -> float:
        trial.set_user_attr("worker", f"{platform.node()}:{os.getpid()}")  # also on a trial that gives way
        params = suggest_point(self.spec, trial)
        if self.spec.sampler == "grid":
            give_way_if_taken(trial, params)
        cfg = self.spec.configuration(params["configuration"])
        seed = int(params["seed"])
        trial.set_user_attr("configuration", cfg.name)
        kind = self.spec.objective
        if kind == "search":
            objective = self.search_objective(cfg, seed, params)
            return float(objective.search(trial, objective.run_key(self._scope(trial.study))).history[-1]["val_acc"])
        if kind == "search_retrain":
            search = self.ensure_search(cfg, seed, params)
            genotype = Genotype.from_dict(search.user_attrs["genotype"])
            for name, value in search.user_attrs.items():
                if name.startswith("search_"):
                    trial.set_user_attr(name, value)
            trial.set_user_attr("search_trial", search.number)
            trial.set_user_attr("search_val_acc", search.value)
            return self.retrain(trial, cfg, seed, params, genotype)
        if kind == "retrain":
            return self.retrain(trial, cfg, seed, params, None)
        return self.randgrow(trial, cfg, seed, params)

    def _scope(self, study: optuna.Study) -> str:
        return f"{self.context.study_name}:{study_token(study)}"

    def validate(self) -> None:
        """Build what every row's trials will build (super-network, architecture, RandGrow space), so an
        impossible setting is one line now, not a failed trial later. Raises ``NasError`` naming the row."""
        seed = self.spec.seeds[0]
        for cfg in self.spec.configurations:
            try:
                if self.spec.objective in ("search", "search_retrain") and not cfg.config_a_from:
                    self.search_objective(cfg, seed, {})
                if self.spec.objective == "retrain":
                    self.retrain_objective(cfg, seed, {}, None)
                if self.spec.objective == "randgrow":
                    self.growth_search(self.spec.stage(cfg, "randgrow", {}))
            except NasError as exc:
                raise NasError(f"{self.spec.source}: configurations[{cfg.name}]: {exc}") from None

    # ---------------------------------------------------------------- search stage

    def search_objective(self, cfg: Configuration, seed: int, params: dict[str, Any],
                         config_a: Genotype | None = None) -> DartsSearchObjective:
        job: SearchJob = self.spec.stage(cfg, "search", params)
        retrain: RetrainJob = self.spec.stage(cfg, "retrain", params)
        job = replace(job, settings=replace(job.settings, seed=seed), retrain_channels=retrain.channels,
                      retrain_layers=retrain.layers, config_a_genotype=config_a or job.config_a_genotype)
        return DartsSearchObjective(job, self._data(self.spec.search_data), self.context.trial)

    def _searches_study(self) -> optuna.Study:
        if self.searches is None:
            self.searches = load_or_create_study(self.context.storage, f"{self.context.study_name}-searches",
                                                 ["maximize"], ["val_acc"], heartbeat=self.context.heartbeat)
            # a shared search is never pruned: rows that reuse it would lose it (Optuna's default prunes)
            self.searches.pruner = optuna.pruners.NopPruner()
        return self.searches

    def _config_a_source(self, cfg: Configuration, seed: int, params: dict[str, Any]) -> Genotype | None:
        """Config-A: the genotype of the source row's search of this seed (run first if need be)."""
        source = cfg.config_a_from
        if not source:
            return None
        found = self.ensure_search(self.spec.configuration(source), seed, params)
        return Genotype.from_dict(found.user_attrs["genotype"])

    def ensure_search(self, cfg: Configuration, seed: int, params: dict[str, Any]) -> FrozenTrial:
        """The completed search this row and seed retrain from: found, waited for, or run now."""
        searches = self._searches_study()
        objective = self.search_objective(cfg, seed, params, self._config_a_source(cfg, seed, params))
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
                if not announced and self.context.trial.verbose:
                    print(f"[study] waiting for the search of {cfg.name!r} seed {seed}, running on another "
                          "worker", file=sys.stderr)
                    announced = True
                time.sleep(self.context.heartbeat.interval)
                continue
            self._run_search_trial(searches, key, cfg, seed, params, objective)

    def _run_search_trial(self, searches: optuna.Study, key: str, cfg: Configuration, seed: int,
                          params: dict[str, Any], objective: DartsSearchObjective) -> None:
        """Run one trial of the searches study: ours, or a retried one a dead worker left waiting (Optuna's
        ``optimize`` runs a waiting trial first, and beats and fails trials as every study trial)."""

        def search(trial: optuna.Trial) -> float:
            run, run_objective = key, objective
            other = trial.user_attrs
            if "search_key" in other and other["search_key"] != key:  # someone else's retried search
                other_cfg = self.spec.configuration(other["configuration"])
                other_seed, other_params = int(other["seed"]), dict(other.get("swept", {}))
                run_objective = self.search_objective(other_cfg, other_seed, other_params,
                                                      self._config_a_source(other_cfg, other_seed, other_params))
                run = other["search_key"]
            elif "search_key" not in other:
                swept = {path: value for path, value in params.items() if "." in path}  # the sweep's values
                for name, value in {"search_key": key, "configuration": cfg.name, "seed": seed, "swept": swept,
                                    "activation_mode": str(objective.config.activation_mode)}.items():
                    trial.set_user_attr(name, value)
            return float(run_objective.search(trial, run).history[-1]["val_acc"])

        # Ctrl-C or an error fails the search trial (never complete) and is re-raised; a rerun resumes it
        searches.optimize(search, n_trials=1, catch=())
        finished = searches.get_trials(deepcopy=False)[-1]
        discard_finished_checkpoint(open_artifact_store(self.context.trial.artifact_store), searches, finished)

    # ---------------------------------------------------------------- retrain stage

    def retrain_objective(self, cfg: Configuration, seed: int, params: dict[str, Any],
                          architecture: AnyArchitecture | None) -> RetrainObjective:
        job: RetrainJob = self.spec.stage(cfg, "retrain", params)
        job = replace(job, seed=seed, architecture=architecture if architecture is not None else job.architecture)
        if self.spec.selects and job.val_portion is None:  # the spec sets it; this guards the rule itself
            raise NasError(f"{self.spec.source}: a study that samples or prunes must not score on the test split")
        return RetrainObjective(job, self._data(self.spec.data), self.context.trial)

    def retrain(self, trial: optuna.Trial, cfg: Configuration, seed: int, params: dict[str, Any],
                architecture: AnyArchitecture | None) -> float:
        return self.retrain_objective(cfg, seed, params, architecture).train(trial, seed)

    # ---------------------------------------------------------------- growth stage

    def growth_search(self, grow: GrowthSettings) -> RandGrowSearch:
        """The row's RandGrow search study, named from its settings: rows with the same search share it."""
        space = grow.resolved_space()
        settings = {k: v for k, v in asdict(grow).items() if not (k == "mode" and v is None)}
        key = run_key(self.context.study_name, {"space": space.name, "mode": space.mode, "n": space.cells_per_block,
                                                "f": space.channels, "operations": list(space.operations),
                                                **settings})
        name = (f"{self.context.study_name}-grow-{space.mode}-N{space.cells_per_block}-F{space.channels}-"
                f"{key[:6]}")
        return RandGrowSearch.from_settings(self.context.storage, name, grow, self.spec.search_data,
                                            self.context.trial, self.context.heartbeat)

    def randgrow(self, trial: optuna.Trial, cfg: Configuration, seed: int, params: dict[str, Any]) -> float:
        """Grow the row's search study to ``n_models`` models (or find it grown), then train its lowest
        validation error model from scratch: the paper retrains "the best models obtained via the search
        procedure (in terms of validation error)"."""
        search = self.growth_search(self.spec.stage(cfg, "randgrow", params))
        sub_study = run_randgrow(search, n_workers=1, wait_for_others=False)  # the study's workers take over
        complete = sub_study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        best = min(complete, key=lambda t: (t.values[0], t.number))
        trial.set_user_attr("search_study", sub_study.study_name)
        trial.set_user_attr("parent", best.number)
        trial.set_user_attr("search_val_error", best.values[0])
        hours = sum((t.duration.total_seconds() for t in sub_study.get_trials(deepcopy=False)
                     if t.duration is not None), 0.0) / 3600.0
        trial.set_user_attr("search_wall_hours", round(hours, 5))  # summed over the growth trials
        trial.set_user_attr("search_device", str(resolve_device(self.context.trial.device)))
        proposal = get_proposal(best)
        if proposal is None:
            raise NasError(f"trial {best.number} of {sub_study.study_name!r} has no RandGrow architecture")
        return self.retrain(trial, cfg, seed, params, proposal.architecture)
