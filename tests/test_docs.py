"""The README's examples keep working: every ``optuna-nas`` command line parses (its flags exist), and every
Python example runs."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from optuna_nas.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, re.S)


def _commands() -> list[str]:
    found = []
    for block in _blocks("bash"):
        for line in block.splitlines():
            for part in line.split("&&"):
                words = shlex.split(part, comments=True)
                if words and words[0] == "optuna-nas":
                    found.append(shlex.join(words))
    return found


COMMANDS = _commands()


def test_the_readme_shows_commands_of_every_kind() -> None:
    kinds = {shlex.split(c)[1] for c in COMMANDS}
    assert kinds >= {"search", "retrain", "run", "report", "export", "info"}


@pytest.mark.parametrize("command", COMMANDS)
def test_every_documented_command_parses(command: str) -> None:
    build_parser().parse_args(shlex.split(command)[1:])  # an unknown flag or choice exits with status 2


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(_blocks("python"))))
def test_every_python_example_runs(index: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    code = _blocks("python")[index]
    for line in code.splitlines():  # an example that reads what a command wrote says so: "# after: optuna-nas ..."
        if line.startswith("# after: optuna-nas "):
            assert main(shlex.split(line.removeprefix("# after: "))[1:] + ["--quiet"]) == 0
    exec(compile(code, f"README.md python example {index}", "exec"), {})  # noqa: S102 - the documented code
