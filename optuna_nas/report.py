"""Paper-style tables and plots from a study: one row per configuration, mean ± std over seeds.

Works on every study optuna-nas writes: study-file studies (rows are the ``configuration`` param),
single runs of ``search darts`` / ``retrain`` (one row), and RandGrow growth studies (two objectives:
the table is the lower convex hull of (cost, validation error), the plot the Pareto front with the hull).
"""

from __future__ import annotations

import csv
import io
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from .errors import NasError
from .randgrow.hull import lower_hull
from .study.spec import SPEC_ATTR


@dataclass
class Row:
    configuration: str
    values: list[float]
    params: list[float]
    flops: list[float]
    search_hours: list[float]  # wall clock, on ``search_device``
    search_device: str
    test_errors: list[float]  # recorded beside the value when the study scores on held-out data

    @staticmethod
    def _mean(xs: list[float]) -> float | None:
        return statistics.fmean(xs) if xs else None

    @staticmethod
    def _std(xs: list[float]) -> float:
        return statistics.stdev(xs) if len(xs) > 1 else 0.0

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def std(self) -> float:
        return self._std(self.values)

    def as_dict(self, metric: str) -> dict[str, Any]:
        params, flops, hours = self._mean(self.params), self._mean(self.flops), self._mean(self.search_hours)
        out: dict[str, Any] = {"configuration": self.configuration, "runs": len(self.values),
                               f"{metric}_mean": round(self.mean, 4), f"{metric}_std": round(self.std, 4)}
        if metric != "test_error":
            test = self._mean(self.test_errors)
            out["test_error_mean"] = None if test is None else round(test, 4)
            out["test_error_std"] = None if test is None else round(self._std(self.test_errors), 4)
        out.update({"params_m": None if params is None else round(params / 1e6, 4),
                    "flops_m": None if flops is None else round(flops / 1e6, 3),
                    "search_hours": None if hours is None else round(hours, 5), "search_device": self.search_device})
        return out


def finished_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Completed trials that count (a duplicate that gave way to another worker does not)."""
    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if "duplicate_of" not in t.user_attrs]


def _search_hours(trial: FrozenTrial) -> float | None:
    """Wall-clock search hours (older studies named them search_gpu_hours or search_cpu_hours)."""
    for name in ("search_wall_hours", "search_gpu_hours", "search_cpu_hours"):
        if name in trial.user_attrs:
            return float(trial.user_attrs[name])
    return None


def table_rows(study: optuna.Study) -> list[Row]:
    trials = finished_trials(study)
    order = list((study.user_attrs.get(SPEC_ATTR) or {}).get("configurations", []))
    groups: dict[str, list[FrozenTrial]] = {}
    for t in trials:
        name = str(t.params.get("configuration", t.user_attrs.get("configuration", "default")))
        groups.setdefault(name, []).append(t)
        if name not in order:
            order.append(name)
    rows = []
    for name in order:
        ts = groups.get(name)
        if not ts:
            continue
        devices = sorted({str(t.user_attrs["search_device"]) for t in ts if "search_device" in t.user_attrs})
        rows.append(Row(name, [float(t.value) for t in ts],  # type: ignore[arg-type]
                        [float(t.user_attrs["params"]) for t in ts if "params" in t.user_attrs],
                        [float(t.user_attrs["flops"]) for t in ts if "flops" in t.user_attrs],
                        [h for h in map(_search_hours, ts) if h is not None], ", ".join(devices),
                        [float(t.user_attrs["test_error"]) for t in ts if "test_error" in t.user_attrs]))
    return rows


def metric_name(study: optuna.Study) -> str:
    return (study.metric_names or ["value"])[0]


def format_table(study: optuna.Study, fmt: str = "markdown") -> str:
    """The study's table as Markdown (paper style, ``mean ± std``) or CSV (one number per cell). A study that
    scores on held-out data shows the test error beside its metric."""
    if len(study.directions) == 2:
        return _hull_table(study, fmt)
    rows = table_rows(study)
    if not rows:
        raise NasError(f"study {study.study_name!r} has no completed trials to report")
    metric = metric_name(study)
    if fmt == "csv":
        out = io.StringIO()
        dicts = [r.as_dict(metric) for r in rows]
        writer = csv.DictWriter(out, fieldnames=list(dicts[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(dicts)
        return out.getvalue()

    def show(value: float | None, digits: int) -> str:
        return "–" if value is None else f"{value:.{digits}f}"

    test_column = metric != "test_error"
    devices = ", ".join(sorted({r.search_device for r in rows if r.search_device})) or "device"
    lines = [f"| configuration | runs | {metric} (mean ± std) |" + (" test_error (mean ± std) |" if test_column else "")
             + f" params (M) | multiply-adds (M) | search (h, {devices}) |",
             "|---|---:|---:|" + ("---:|" if test_column else "") + "---:|---:|---:|"]
    for r in rows:
        d = r.as_dict(metric)
        test = ""
        if test_column:
            mean, std = d["test_error_mean"], d["test_error_std"]
            test = " – |" if mean is None else f" {mean:.2f} ± {std:.2f} |"
        lines.append(f"| {r.configuration} | {len(r.values)} | {r.mean:.2f} ± {r.std:.2f} |{test} "
                     f"{show(d['params_m'], 2)} | {show(d['flops_m'], 1)} | {show(d['search_hours'], 3)} |")
    return "\n".join(lines) + "\n"


def _hull_points(study: optuna.Study) -> tuple[list[FrozenTrial], list[FrozenTrial]]:
    complete = finished_trials(study)
    hull = [complete[i] for i in lower_hull([(t.values[1], t.values[0]) for t in complete])]
    return complete, hull


def _hull_table(study: optuna.Study, fmt: str) -> str:
    complete, hull = _hull_points(study)
    if not complete:
        raise NasError(f"study {study.study_name!r} has no completed trials to report")
    names = study.metric_names or ["val_error", "cost"]
    header = ["trial", "parent", "generation", names[1], names[0]]
    rows = [[t.number, t.user_attrs.get("parent"), t.user_attrs.get("generation", 0), int(t.values[1]),
             round(t.values[0], 3)] for t in hull]
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
        return out.getvalue()
    lines = [f"lower convex hull of ({names[1]}, {names[0]}), {len(complete)} models:", "",
             "| " + " | ".join(header) + " |", "|" + "---:|" * len(header)]
    lines += ["| " + " | ".join("–" if v is None else f"{v:,}" if isinstance(v, int) else str(v) for v in row) + " |"
              for row in rows]
    return "\n".join(lines) + "\n"


def save_plots(study: optuna.Study, directory: Path) -> list[Path]:
    """PNG plots: the metric per configuration (mean ± std), and cost against the metric per trial (with
    the lower convex hull for RandGrow studies). Returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    written = []
    if len(study.directions) == 2:
        complete, hull = _hull_points(study)
        names = study.metric_names or ["val_error", "cost"]
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.scatter([t.values[1] for t in complete], [t.values[0] for t in complete], s=14, label="models")
        ax.plot([t.values[1] for t in hull], [t.values[0] for t in hull], "r-o", ms=4, label="lower convex hull")
        ax.set_xlabel(names[1])
        ax.set_ylabel(f"{names[0]} (%)")
        ax.legend()
        ax.set_title(study.study_name)
        path = directory / "pareto.png"
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return [path]
    rows = table_rows(study)
    if not rows:
        raise NasError(f"study {study.study_name!r} has no completed trials to plot")
    metric = metric_name(study)
    fig, ax = plt.subplots(figsize=(max(5, 0.6 * len(rows) + 2), 4))
    ax.bar(range(len(rows)), [r.mean for r in rows], yerr=[r.std for r in rows], capsize=3)
    ax.set_xticks(range(len(rows)), [r.configuration for r in rows], rotation=45, ha="right")
    ax.set_ylabel(metric)
    ax.set_title(f"{study.study_name}: {metric} per configuration (mean ± std)")
    fig.tight_layout()
    path = directory / "per_configuration.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    written.append(path)
    trials = [t for t in finished_trials(study) if "params" in t.user_attrs]
    if trials:
        fig, ax = plt.subplots(figsize=(6, 4))
        for r in rows:
            ts = [t for t in trials if t.params.get("configuration", "default") == r.configuration]
            ax.scatter([t.user_attrs["params"] / 1e6 for t in ts], [t.value for t in ts], s=14, label=r.configuration)
        ax.set_xlabel("parameters (M)")
        ax.set_ylabel(metric)
        ax.legend(fontsize=6, ncol=2)
        path = directory / "pareto.png"
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written
