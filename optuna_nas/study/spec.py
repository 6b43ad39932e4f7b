"""Study files: one YAML file per experiment (a paper table, an ablation, a hyperparameter search).

A study file names an objective, a search space, the fixed hyperparameters of each stage, the rows
(``configurations``) and ``seeds`` a grid runs, optional ``sweep`` dimensions, the sampler and pruner,
and ``presets`` (``tiny`` makes every shipped study finish on a CPU in minutes)::

    name: a_darts_table2
    description: A-DARTS Table 2 ...          # becomes the study's note in optuna-dashboard
    objective: search_retrain                 # search | search_retrain | retrain | randgrow
    dataset: cifar10
    space: a_darts
    search: {epochs: 25, batch_size: 64, channels: 16, layers: 8}
    retrain: {epochs: 600, batch_size: 128, channels: 36, layers: 20}
    configurations:
      - {name: factorized, search: {activation_mode: factorized}}
      - {name: factorized->relu, search: {activation_mode: factorized}, retrain: {activation: relu}}
    seeds: [0, 1, 2]
    presets:
      tiny: {dataset: digits, search: {epochs: 1, channels: 4, layers: 3}}

**What a study scores.** A study that samples (TPE, random) or prunes never sees the test split: every
retraining trial reports, each epoch, and returns its error on ``retrain.val_portion`` of the training set
(default 0.1), held out and never trained on; the test error is recorded as a user attr and shown by
``report``. A grid without a pruner, the form of the papers' tables, reports the test error as the papers do
(``test_error``), unless its rows set ``val_portion``. Searches always score on their own validation half.

The stage sections fill the engines' settings (:data:`SECTIONS`): their keys and defaults are those of
:class:`~optuna_nas.darts.objective.SearchJob`, :class:`~optuna_nas.retrain.RetrainJob` and
:class:`~optuna_nas.randgrow.runner.GrowthSettings`. Every mistake (unknown key, operator or activation,
wrong type, impossible value) is reported as ``FILE: KEY: reason`` before anything is written to storage.
Shipped study files are package data, found by name (``a_darts_table2``).
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..darts.objective import SearchJob
from ..darts.space import load_search_space
from ..data import DataSource
from ..errors import NasError
from ..ops import check_activation
from ..randgrow.runner import GrowthSettings
from ..resources import read_yaml
from ..retrain import SELECTION_VAL_PORTION, RetrainJob
from .sections import Section

OBJECTIVES = ("search", "search_retrain", "retrain", "randgrow")
SAMPLERS = ("grid", "tpe", "random")
PRUNERS = ("none", "median", "hyperband")
RETRAINING = ("search_retrain", "retrain", "randgrow")  # objectives whose value is a retraining's error
SPEC_ATTR = "optuna_nas:study_file"  # the study user attr that ties a study to its file

# What each stage section fills. Seeds come from ``seeds``; a search reports the cost of the network its
# row retrains as, so it takes the shape from the ``retrain`` section.
SECTIONS: dict[str, Section] = {
    "search": Section(SearchJob, hidden=frozenset({"seed", "retrain_channels", "retrain_layers"}),
                      extra=(("config_a_from", str | None, None),)),
    "retrain": Section(RetrainJob, hidden=frozenset({"seed"})),
    "randgrow": Section(GrowthSettings),
}
STAGES = tuple(SECTIONS)
_TOP_KEYS = {"name", "description", "objective", "sampler", "pruner", "directions", "metric_names", "dataset",
             "search_dataset", "data_root", "space", *STAGES, "configurations", "seeds", "sweep", "n_trials",
             "presets"}
_CONFIG_KEYS = {"name", "description", "space", *STAGES}


@dataclass(frozen=True)
class Configuration:
    """One row of the study's table: each stage's settings after the row's overrides, as written (``sections``)
    and typed (:meth:`StudySpec.stage` applies a trial's swept values)."""

    name: str
    sections: dict[str, dict[str, Any]]
    description: str = ""

    @property
    def search(self) -> SearchJob:
        return SECTIONS["search"].build(self.sections["search"])

    @property
    def retrain(self) -> RetrainJob:
        return SECTIONS["retrain"].build(self.sections["retrain"])

    @property
    def randgrow(self) -> GrowthSettings:
        return SECTIONS["randgrow"].build(self.sections["randgrow"])

    @property
    def config_a_from(self) -> str | None:
        """Config-A: the row whose factorized search (of the same seed) gives the frozen activations."""
        return self.sections["search"].get("config_a_from")


@dataclass
class StudySpec:
    source: str
    name: str
    description: str
    objective: str
    sampler: str
    pruner: dict[str, Any]
    directions: list[str]
    metric_names: list[str]
    data: DataSource  # what retraining (and RandGrow) trains and tests on
    search_data: DataSource  # what searches run on (A-DARTS Table 4: CIFAR-10, then ImageNet)
    configurations: list[Configuration]
    seeds: list[int]
    sweep: dict[str, Any] = field(default_factory=dict)
    n_trials: int | None = None
    preset: str | None = None

    @property
    def selects(self) -> bool:
        """Whether an optimiser or a pruner acts on the trials' values (TPE, random search, any pruner): then
        those values must not come from the test split."""
        return self.sampler != "grid" or self.pruner["type"] != "none"

    def configuration(self, name: str) -> Configuration:
        for cfg in self.configurations:
            if cfg.name == name:
                return cfg
        raise NasError(f"{self.source}: no configuration named {name!r}")

    def grid(self) -> list[dict[str, Any]]:
        """Every point of the grid: configuration x seed x swept values, in file order."""
        names = [c.name for c in self.configurations]
        keys = list(self.sweep)
        points = []
        for combo in itertools.product(names, self.seeds, *(self.sweep[k] for k in keys)):
            points.append({"configuration": combo[0], "seed": combo[1], **dict(zip(keys, combo[2:], strict=True))})
        return points

    def stage(self, cfg: Configuration, stage: str, params: dict[str, Any]) -> Any:
        """A stage's typed settings for one trial: the row's, then the trial's swept values (``stage.key``)."""
        merged = dict(cfg.sections[stage])
        for path, value in params.items():
            head, _, key = path.partition(".")
            if head == stage and key:
                merged[key] = value
        try:
            return SECTIONS[stage].build(merged)
        except NasError as exc:
            raise NasError(f"{self.source}: configurations[{cfg.name}].{stage}: {exc}") from None


def load_study_file(path_or_name: str | Path, preset: str | None = None) -> StudySpec:
    """Read and validate a study file (a path, or a shipped name such as ``a_darts_table2``)."""
    document = read_yaml("studies", path_or_name, "study")
    return parse_study(document.data, document.source, preset)


def _fail(source: str, key: str, reason: str) -> NasError:
    return NasError(f"{source}: {key}: {reason}")


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in override.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _check_section(section: Any, stage: str, where: str, source: str) -> dict[str, Any]:
    if section is None:
        return {}
    if not isinstance(section, dict):
        raise _fail(source, where, "must be a mapping")
    problem = SECTIONS[stage].check(section)
    if problem:
        raise NasError(f"{source}: {where}.{problem}")
    return dict(section)


def _str_list(value: Any, key: str, source: str) -> list[str]:
    if not (isinstance(value, list) and value and all(isinstance(v, str) for v in value)):
        raise _fail(source, key, "must be a non-empty list of strings")
    return list(value)


def parse_study(data: Any, source: str, preset: str | None = None) -> StudySpec:
    if not isinstance(data, dict):
        raise NasError(f"{source}: a study file must be a mapping")
    presets = data.get("presets") or {}
    if not isinstance(presets, dict):
        raise _fail(source, "presets", "must be a mapping of preset name to overrides")
    preset_stages: dict[str, Any] = {}
    row_overrides: dict[str, Any] = {}
    if preset is not None:
        if preset not in presets:
            raise _fail(source, "presets", f"no preset {preset!r}; this file has: {', '.join(presets) or 'none'}")
        override = presets[preset]
        if not isinstance(override, dict) or {"presets", "name"} & set(override):
            raise _fail(source, f"presets.{preset}", "must be a mapping without 'name' or 'presets'")
        # a preset's per-row settings: {row name: {stage: {...}}}, applied last (e.g. keep a row's N smaller)
        row_overrides = override.get("configurations") or {}
        if not isinstance(row_overrides, dict):
            raise _fail(source, f"presets.{preset}.configurations", "must map a configuration name to its stages")
        override = {k: v for k, v in override.items() if k != "configurations"}
        data = _merge(data, override)
        preset_stages = {stage: override[stage] for stage in STAGES if isinstance(override.get(stage), dict)}
    unknown = set(data) - _TOP_KEYS
    if unknown:
        raise _fail(source, sorted(unknown)[0], f"unknown key; allowed: {', '.join(sorted(_TOP_KEYS))}")

    def text(key: str, default: str | None = None) -> str:
        value = data.get(key, default)
        if not isinstance(value, str) or not value:
            raise _fail(source, key, "required, a non-empty string" if value is None else f"must be a string, got "
                        f"{value!r}")
        return value

    name = text("name")
    objective = text("objective", "search_retrain")
    if objective not in OBJECTIVES:
        raise _fail(source, "objective", f"unknown objective {objective!r}; use {', '.join(OBJECTIVES)}")
    sampler = text("sampler", "grid")
    if sampler not in SAMPLERS:
        raise _fail(source, "sampler", f"unknown sampler {sampler!r}; use {', '.join(SAMPLERS)}")
    pruner = data.get("pruner", "none")
    pruner = {"type": pruner} if isinstance(pruner, str) else pruner
    if not isinstance(pruner, dict) or pruner.get("type") not in PRUNERS:
        raise _fail(source, "pruner", f"must be one of {', '.join(PRUNERS)} or a mapping with 'type'")
    dataset = text("dataset", DataSource().spec)
    search_dataset = text("search_dataset", dataset)
    data_root = data.get("data_root")
    if data_root is not None and not isinstance(data_root, str):
        raise _fail(source, "data_root", "must be a path")
    space = text("space", SearchJob().space)

    bases = {stage: _check_section(data.get(stage), stage, stage, source) for stage in STAGES}
    raw_configs = data.get("configurations")
    if raw_configs is None:
        raw_configs = [{"name": "default"}]
    if not isinstance(raw_configs, list) or not raw_configs:
        raise _fail(source, "configurations", "must be a non-empty list of rows, each with a 'name'")
    configurations: list[Configuration] = []
    for i, raw in enumerate(raw_configs):
        where = f"configurations[{i}]"
        if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
            raise _fail(source, where, "must be a mapping with a string 'name'")
        extra = set(raw) - _CONFIG_KEYS
        if extra:
            allowed = ", ".join(sorted(_CONFIG_KEYS))
            raise _fail(source, f"{where}.{sorted(extra)[0]}", f"unknown key; allowed: {allowed}")
        # a preset's stage settings win over the row's own (a tiny preset shrinks every row), and its
        # per-row settings win over both
        row_preset = row_overrides.get(raw["name"]) or {}
        sections = {stage: {**bases[stage], **_check_section(raw.get(stage), stage, f"{where}.{stage}", source),
                            **preset_stages.get(stage, {}),
                            **_check_section(row_preset.get(stage), stage, f"presets.{preset}.configurations."
                                             f"{raw['name']}.{stage}", source)} for stage in STAGES}
        row_space = raw.get("space", space)
        if not isinstance(row_space, str):
            raise _fail(source, f"{where}.space", f"must be a string, got {row_space!r}")
        sections["search"] = {"space": row_space, **sections["search"]}
        configurations.append(Configuration(raw["name"], sections, str(raw.get("description", ""))))
    names = [c.name for c in configurations]
    if len(set(names)) != len(names):
        raise _fail(source, "configurations", "names must be unique")
    for row in set(row_overrides) - set(names):
        raise _fail(source, f"presets.{preset}.configurations.{row}", "no configuration of that name")

    seeds = data.get("seeds", [0])
    if not (isinstance(seeds, list) and seeds and all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)):
        raise _fail(source, "seeds", "must be a non-empty list of integers")
    if len(set(seeds)) != len(seeds):
        raise _fail(source, "seeds", "must be distinct")
    sweep = _check_sweep(data.get("sweep") or {}, sampler, source)
    n_trials = data.get("n_trials")
    if n_trials is not None and (not isinstance(n_trials, int) or isinstance(n_trials, bool) or n_trials < 1):
        raise _fail(source, "n_trials", "must be a positive integer")
    if sampler != "grid" and n_trials is None:
        raise _fail(source, "n_trials", f"the {sampler} sampler needs n_trials")

    selects = sampler != "grid" or pruner["type"] != "none"
    if objective in RETRAINING:
        configurations = _held_out(configurations, selects, sweep, source)
    direction, metric = _metric(objective, configurations)
    directions = _str_list(data.get("directions", [direction]), "directions", source)
    metric_names = _str_list(data.get("metric_names", [metric]), "metric_names", source)
    if directions != [direction]:
        raise _fail(source, "directions", f"the {objective} objective returns one value to {direction}")
    if metric_names != [metric]:
        raise _fail(source, "metric_names", f"the {objective} objective of this file returns {metric}")

    spec = StudySpec(source, name, str(data.get("description", "")).strip(), objective, sampler, pruner,
                     directions, metric_names, DataSource(dataset, data_root), DataSource(search_dataset, data_root),
                     configurations, list(seeds), sweep, n_trials, preset)
    for cfg in configurations:
        _check_configuration(spec, cfg)
    return spec


def _held_out(configurations: list[Configuration], selects: bool, sweep: dict[str, Any],
              source: str) -> list[Configuration]:
    """The rule that nothing an optimiser or pruner sees comes from the test split: when the study samples or
    prunes, every retraining scores on ``val_portion`` of the training set (default ``SELECTION_VAL_PORTION``),
    held out. A paper grid without a pruner reports test error, as the papers do, unless it sets a share."""
    if selects and "retrain.val_portion" in sweep:
        raise _fail(source, "sweep.retrain.val_portion", "a study that samples or prunes compares trials on one "
                    "held-out split; sweep something else")
    out = []
    for cfg in configurations:
        retrain = cfg.sections["retrain"]
        if selects and "val_portion" in retrain and retrain["val_portion"] is None:
            raise _fail(source, f"configurations[{cfg.name}].retrain.val_portion", "a study that samples or prunes "
                        "scores retraining on data held out of the training set, never on the test split; "
                        f"set a share such as {SELECTION_VAL_PORTION} (or leave it out)")
        if selects and retrain.get("val_portion") is None:
            retrain = {**retrain, "val_portion": SELECTION_VAL_PORTION}
        out.append(replace(cfg, sections={**cfg.sections, "retrain": retrain}))
    held_out = {cfg.sections["retrain"].get("val_portion") is not None for cfg in out}
    if len(held_out) > 1:
        raise _fail(source, "configurations", "some rows set retrain.val_portion and others do not: one study "
                    "reports one metric, so either every row scores on a held-out share or none does")
    return out


def _metric(objective: str, configurations: list[Configuration]) -> tuple[str, str]:
    """The study's direction and metric name: what its trials return and report every epoch."""
    if objective == "search":
        return "maximize", "val_acc"
    held_out = configurations[0].sections["retrain"].get("val_portion") is not None
    return "minimize", "val_error" if held_out else "test_error"


def _check_sweep(sweep: Any, sampler: str, source: str) -> dict[str, Any]:
    if not isinstance(sweep, dict):
        raise _fail(source, "sweep", "must map 'stage.key' to a list of values or a {low, high} range")
    for path, values in sweep.items():
        stage, _, key = str(path).partition(".")
        if stage not in SECTIONS or key not in SECTIONS[stage].keys:
            raise _fail(source, f"sweep.{path}", "must name a stage setting, e.g. retrain.lr or search.arch_lr")
        if isinstance(values, dict):
            if sampler == "grid":
                raise _fail(source, f"sweep.{path}", "the grid sampler needs a list of values, not a range")
            if not {"low", "high"} <= set(values) or set(values) - {"low", "high", "log", "step"}:
                raise _fail(source, f"sweep.{path}", "a range is {low, high[, log][, step]}")
            if not values["low"] < values["high"]:
                raise _fail(source, f"sweep.{path}", "low must be below high")
        elif not (isinstance(values, list) and values):
            raise _fail(source, f"sweep.{path}", "must be a non-empty list of values or a {low, high} range")
        else:
            for value in values:
                problem = SECTIONS[stage].check({key: value})
                if problem:
                    raise NasError(f"{source}: sweep.{stage}.{problem}")
    return dict(sweep)


def _check_configuration(spec: StudySpec, cfg: Configuration) -> None:
    """What the stages would reject at run time, found now: operators, activations, impossible values."""
    source, where = spec.source, f"configurations[{cfg.name}]"
    stages = {"search": ("search", "search_retrain"), "retrain": ("search_retrain", "retrain", "randgrow"),
              "randgrow": ("randgrow",)}
    typed: dict[str, Any] = {}
    for stage, objectives in stages.items():
        if spec.objective in objectives:
            try:
                typed[stage] = SECTIONS[stage].build(cfg.sections[stage])
            except NasError as exc:
                raise _fail(source, f"{where}.{stage}", str(exc)) from None
    if "search" in typed:
        job: SearchJob = typed["search"]
        try:
            space = load_search_space(job.space)
        except NasError as exc:
            raise _fail(source, f"{where}.space", str(exc)) from None
        if (job.activation_mode or space.activation_mode).freezes_activations:
            source_cfg = cfg.config_a_from
            if spec.objective == "search_retrain" and source_cfg:
                if source_cfg not in [c.name for c in spec.configurations] or source_cfg == cfg.name:
                    raise _fail(source, f"{where}.search.config_a_from", f"must name another configuration, got "
                                f"{source_cfg!r}")
            elif not job.config_a_genotype:
                raise _fail(source, f"{where}.search", "config_a needs config_a_from (a configuration whose "
                            "factorized search of the same seed gives the activations) or config_a_genotype")
    if "retrain" in typed:
        retrain: RetrainJob = typed["retrain"]
        if retrain.activation:
            try:
                check_activation(retrain.activation)
            except NasError as exc:
                raise _fail(source, f"{where}.retrain.activation", str(exc)) from None
        if spec.objective == "retrain" and "architecture" not in cfg.sections["retrain"]:
            raise _fail(source, f"{where}.retrain.architecture", "the retrain objective needs an architecture "
                        "(a built-in genotype name or a JSON file)")
    if "randgrow" in typed:
        try:
            typed["randgrow"].job()
        except NasError as exc:
            raise _fail(source, f"{where}.randgrow", str(exc)) from None
