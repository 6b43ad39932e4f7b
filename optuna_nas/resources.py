"""The files optuna-nas ships (search spaces, study files), found by name or by path.

Shipped files are package data (``optuna_nas/spaces/*.yaml``, ``optuna_nas/studies/*.yaml``) read through
``importlib.resources``, so an installed wheel finds them from any working directory. A path to an existing
file always wins over a shipped name, so a user's own ``a_darts.yaml`` is never shadowed.

Every failure is one :class:`NasError` line: not found (with the shipped names), unreadable, not UTF-8,
malformed YAML (with its line).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml

from .errors import NasError

if TYPE_CHECKING:  # importlib.abc.Traversable before Python 3.11
    from importlib.resources.abc import Traversable

Kind = Literal["spaces", "studies"]


@dataclass(frozen=True)
class YamlDocument:
    """A parsed YAML file and where it came from (a path, or the shipped file's location), for messages."""

    data: Any
    source: str
    stem: str  # the file name without ``.yaml``: the default name of what it defines


def _shipped_dir(kind: Kind) -> Traversable:
    return files("optuna_nas").joinpath(kind)


def shipped_names(kind: Kind, keep: Callable[[str], bool] = lambda name: True) -> list[str]:
    """The names of the shipped files of ``kind`` (sorted), those ``keep`` accepts."""
    return sorted(entry.name.removesuffix(".yaml") for entry in _shipped_dir(kind).iterdir()
                  if entry.name.endswith(".yaml") and keep(entry.name.removesuffix(".yaml")))


def shipped_file(kind: Kind, name: str) -> Traversable | None:
    """The shipped file ``name`` (without ``.yaml``) of ``kind``, or None."""
    if not name or "/" in name or "\\" in name or name.startswith("."):
        return None
    entry = _shipped_dir(kind).joinpath(f"{name}.yaml")
    return entry if entry.is_file() else None


def read_yaml(kind: Kind, name_or_path: str | Path, what: str,
              keep: Callable[[str], bool] = lambda name: True) -> YamlDocument:
    """Parse the YAML file at ``name_or_path``, or the shipped file of that name; ``what`` names it in errors
    ("search space", "study file"), ``keep`` filters the shipped names an error lists."""
    path = Path(name_or_path)
    entry: Path | Traversable | None = path if path.is_file() else shipped_file(kind, str(name_or_path))
    if entry is None:
        shipped = ", ".join(shipped_names(kind, keep)) or "none"
        raise NasError(f"{what} file not found: {name_or_path} (shipped: {shipped})")
    source = str(entry)
    try:
        text = entry.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise NasError(f"{source}: not a UTF-8 text file (byte {exc.start})") from None
    except OSError as exc:
        raise NasError(f"{source}: cannot read it ({exc.strerror or exc})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise NasError(f"{source}: malformed YAML{where}") from None
    return YamlDocument(data, source, entry.name.removesuffix(".yaml"))
