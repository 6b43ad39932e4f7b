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

Every mistake (unknown key, operator or activation, wrong type, impossible value) is reported as
``FILE: KEY: reason`` before anything is written to storage.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from .darts.modes import ActivationMode
from .darts.search import SearchSettings
from .errors import NasError
from .ops import check_activation
from .search_space import load_search_space
from .train import TrainSettings

STUDY_DIR = Path(__file__).resolve().parent.parent / "studies"
OBJECTIVES = ("search", "search_retrain", "retrain", "randgrow")
SAMPLERS = ("grid", "tpe", "random")
PRUNERS = ("none", "median", "hyperband")
DEFAULT_METRIC = {"search": ("maximize", "val_acc"), "search_retrain": ("minimize", "test_error"),
                  "retrain": ("minimize", "test_error"), "randgrow": ("minimize", "test_error")}

_TOP_KEYS = {"name", "description", "objective", "sampler", "pruner", "directions", "metric_names", "dataset",
             "search_dataset", "data_root", "space", "search", "retrain", "randgrow", "configurations", "seeds",
             "sweep", "n_trials", "presets"}
_CONFIG_KEYS = {"name", "description", "space", "search", "retrain", "randgrow"}
# keys of each stage beyond the settings dataclass they fill
_SEARCH_EXTRA = {"channels": 16, "layers": 8, "partial_channels": 1, "activation_mode": "factorized",
                 "config_a_from": "", "config_a_genotype": "", "recompute_cells": False}
_RETRAIN_EXTRA = {"channels": 36, "layers": 20, "imagenet": False, "auxiliary": True, "activation": "",
                  "architecture": ""}
# cells_per_block / channels: None takes the RandGrow space file's N and F
_RANDGROW_KEYS = {"space": "randgrow_macro", "n_models": 100, "cells_per_block": None, "channels": None,
                  "cost": "params", "val_portion": 0.1, "seed": 0, "epochs": 160, "cycles": 2,
                  "initial_epochs": 600, "batch_size": 32, "lr": 0.025, "function_preserving": False,
                  "cutout": True}


def _defaults(cls: type) -> dict[str, Any]:
    return {f.name: getattr(cls(), f.name) for f in fields(cls)}


STAGE_KEYS: dict[str, dict[str, Any]] = {
    "search": {**_defaults(SearchSettings), **_SEARCH_EXTRA},
    "retrain": {**_defaults(TrainSettings), **_RETRAIN_EXTRA},
    "randgrow": dict(_RANDGROW_KEYS),
}


@dataclass(frozen=True)
class Configuration:
    """One row of the study's table: the stages' settings after the row's overrides."""

    name: str
    search: dict[str, Any]
    retrain: dict[str, Any]
    randgrow: dict[str, Any]
    space: str
    description: str = ""


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
    dataset: str
    search_dataset: str
    data_root: str | None
    configurations: list[Configuration]
    seeds: list[int]
    sweep: dict[str, Any] = field(default_factory=dict)
    n_trials: int | None = None
    preset: str | None = None

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

    def stage(self, cfg: Configuration, stage: str, params: dict[str, Any]) -> dict[str, Any]:
        """A stage's settings for one trial: the row's, then the trial's swept values (``stage.key``)."""
        merged = dict(getattr(cfg, stage))
        for path, value in params.items():
            head, _, key = path.partition(".")
            if head == stage and key:
                merged[key] = value
        return merged


def load_study_file(path_or_name: str, preset: str | None = None) -> StudySpec:
    """Read and validate a study file (a path, or a shipped name such as ``a_darts_table2``)."""
    path = Path(path_or_name)
    if not path.is_file() and (STUDY_DIR / f"{path_or_name}.yaml").is_file():
        path = STUDY_DIR / f"{path_or_name}.yaml"
    if not path.is_file():
        raise NasError(f"study file not found: {path_or_name}")
    source = str(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise NasError(f"{source}: malformed YAML{where}") from None
    return parse_study(data, source, preset)


def _fail(source: str, key: str, reason: str) -> NasError:
    return NasError(f"{source}: {key}: {reason}")


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in override.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _type_ok(value: Any, default: Any) -> bool:
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, int | float) and not isinstance(value, bool)
    if isinstance(default, tuple):
        return isinstance(value, list | tuple)
    if isinstance(default, str):
        return isinstance(value, str)
    return default is None and (value is None or isinstance(value, int | float))  # e.g. val_portion: None


def _check_stage(section: Any, stage: str, where: str, source: str) -> dict[str, Any]:
    if section is None:
        return {}
    if not isinstance(section, dict):
        raise _fail(source, where, "must be a mapping")
    allowed = STAGE_KEYS[stage]
    for key, value in section.items():
        if key not in allowed:
            raise _fail(source, f"{where}.{key}", f"unknown key; allowed: {', '.join(sorted(allowed))}")
        if not _type_ok(value, allowed[key]):
            kind = type(allowed[key]).__name__ if allowed[key] is not None else "number or null"
            raise _fail(source, f"{where}.{key}", f"must be a {kind}, got {value!r}")
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
        preset_stages = {stage: override[stage] for stage in STAGE_KEYS if isinstance(override.get(stage), dict)}
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
    direction, metric = DEFAULT_METRIC[objective]
    directions = _str_list(data.get("directions", [direction]), "directions", source)
    metric_names = _str_list(data.get("metric_names", [metric]), "metric_names", source)
    if directions != [direction]:
        raise _fail(source, "directions", f"the {objective} objective returns one value to {direction}")
    if len(metric_names) != 1:
        raise _fail(source, "metric_names", "one name per direction")
    dataset = text("dataset", "cifar10")
    search_dataset = text("search_dataset", dataset)
    data_root = data.get("data_root")
    if data_root is not None and not isinstance(data_root, str):
        raise _fail(source, "data_root", "must be a path")
    space = text("space", "a_darts")

    bases = {stage: _check_stage(data.get(stage), stage, stage, source) for stage in STAGE_KEYS}
    raw_configs = data.get("configurations") or [{"name": "default"}]
    if not isinstance(raw_configs, list):
        raise _fail(source, "configurations", "must be a list of rows, each with a 'name'")
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
        stages = {stage: {**bases[stage], **_check_stage(raw.get(stage), stage, f"{where}.{stage}", source),
                          **preset_stages.get(stage, {}),
                          **_check_stage(row_preset.get(stage), stage, f"presets.{preset}.configurations."
                                         f"{raw['name']}.{stage}", source)} for stage in STAGE_KEYS}
        cfg_space = raw.get("space", space)
        configurations.append(Configuration(raw["name"], stages["search"], stages["retrain"],
                                            {**_RANDGROW_KEYS, **stages["randgrow"]},
                                            cfg_space, str(raw.get("description", ""))))
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
    sweep = data.get("sweep") or {}
    if not isinstance(sweep, dict):
        raise _fail(source, "sweep", "must map 'stage.key' to a list of values or a {low, high} range")
    for path, values in sweep.items():
        stage, _, key = str(path).partition(".")
        if stage not in STAGE_KEYS or key not in STAGE_KEYS[stage]:
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
                _check_stage({key: value}, stage, f"sweep.{path}", source)
    n_trials = data.get("n_trials")
    if n_trials is not None and (not isinstance(n_trials, int) or isinstance(n_trials, bool) or n_trials < 1):
        raise _fail(source, "n_trials", "must be a positive integer")
    if sampler != "grid" and n_trials is None:
        raise _fail(source, "n_trials", f"the {sampler} sampler needs n_trials")

    spec = StudySpec(source, name, str(data.get("description", "")).strip(), objective, sampler, pruner,
                     directions, metric_names, dataset, search_dataset, data_root, configurations, list(seeds),
                     dict(sweep), n_trials, preset)
    for cfg in configurations:
        _check_configuration(spec, cfg)
    return spec


def _check_configuration(spec: StudySpec, cfg: Configuration) -> None:
    """What the stages would reject at run time, found now: operators, activations, impossible values."""
    source, where = spec.source, f"configurations[{cfg.name}]"
    if spec.objective in ("search", "search_retrain"):
        try:
            space = load_search_space(cfg.space)
        except NasError as exc:
            raise _fail(source, f"{where}.space", str(exc)) from None
        search = cfg.search
        try:
            mode = ActivationMode.parse(str(search.get("activation_mode", space.activation_mode)))
        except NasError as exc:
            raise _fail(source, f"{where}.search.activation_mode", str(exc)) from None
        if mode.kind == "config_a":
            source_cfg = search.get("config_a_from")
            if spec.objective == "search_retrain" and source_cfg:
                if source_cfg not in [c.name for c in spec.configurations] or source_cfg == cfg.name:
                    raise _fail(source, f"{where}.search.config_a_from", f"must name another configuration, got "
                                f"{source_cfg!r}")
            elif not search.get("config_a_genotype"):
                raise _fail(source, f"{where}.search", "config_a needs config_a_from (a configuration whose "
                            "factorized search of the same seed gives the activations) or config_a_genotype")
        settings = {k: v for k, v in search.items() if k not in _SEARCH_EXTRA}
        _settings(SearchSettings, settings, source, f"{where}.search")
    if spec.objective in ("search_retrain", "retrain", "randgrow"):
        retrain = cfg.retrain
        if retrain.get("activation"):
            try:
                check_activation(retrain["activation"])
            except NasError as exc:
                raise _fail(source, f"{where}.retrain.activation", str(exc)) from None
        if spec.objective == "retrain" and not retrain.get("architecture"):
            raise _fail(source, f"{where}.retrain.architecture", "the retrain objective needs an architecture "
                        "(a built-in genotype name or a JSON file)")
        _settings(TrainSettings, {k: v for k, v in retrain.items() if k not in _RETRAIN_EXTRA}, source,
                  f"{where}.retrain")
    if spec.objective == "randgrow":
        grow = cfg.randgrow
        if grow["cost"] not in ("params", "flops"):
            raise _fail(source, f"{where}.randgrow.cost", "must be params or flops")
        if not 0.0 < grow["val_portion"] < 1.0:
            raise _fail(source, f"{where}.randgrow.val_portion", "must be between 0 and 1")
        for key in ("n_models", "cells_per_block", "channels", "epochs", "initial_epochs", "batch_size", "cycles"):
            if grow[key] is not None and grow[key] < 1:
                raise _fail(source, f"{where}.randgrow.{key}", "must be positive")
        if grow["channels"] is not None and grow["channels"] % 2:
            raise _fail(source, f"{where}.randgrow.channels", "must be even (reduction cells halve it)")


def _settings(cls: type, values: dict[str, Any], source: str, where: str) -> Any:
    try:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})
    except NasError as exc:
        raise _fail(source, where, str(exc)) from None
