"""The cluster recipes in cluster/ start optuna-nas with flags that exist and values the parser accepts."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import yaml

from optuna_nas.cli import build_parser

CLUSTER = Path(__file__).resolve().parents[1] / "cluster"


def _placeholders(words: list[str]) -> list[str]:
    """Shell and Kubernetes variables as the values they stand for."""
    return [re.sub(r"\$\{?\(?(\w+)[^)}]*[)}]?", "postgresql://u:p@h/d", w) if "$" in w else w for w in words]


def test_the_slurm_array_script_runs_a_real_command() -> None:
    text = (CLUSTER / "slurm-array.sbatch").read_text(encoding="utf-8")
    commands = [shlex.split(line)[1:] for line in text.splitlines() if line.startswith("srun optuna-nas ")]
    assert len(commands) == 1 and "#SBATCH --array=0-7" in text
    args = build_parser().parse_args(_placeholders(commands[0])[1:])
    assert args.command == "run" and args.grace_period > args.heartbeat_interval


def test_the_kubernetes_job_runs_a_real_command() -> None:
    job = yaml.safe_load((CLUSTER / "kubernetes-job.yaml").read_text(encoding="utf-8"))
    assert job["kind"] == "Job" and job["spec"]["parallelism"] >= 2
    (container,) = job["spec"]["template"]["spec"]["containers"]
    command = container["command"]
    assert command[0] == "optuna-nas"
    args = build_parser().parse_args(_placeholders([str(w) for w in command[1:]]))
    assert args.command == "run" and args.artifact_store.startswith("s3://")
    assert {e["name"] for e in container["env"]} >= {"OPTUNA_NAS_STORAGE", "AWS_ACCESS_KEY_ID"}
