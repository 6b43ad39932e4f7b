"""A study file's stage sections (``search:``, ``retrain:``, ``randgrow:``) as the engines' typed settings.

A section is a flat mapping of keys, but what it fills is a dataclass with nested settings (a
:class:`~optuna_nas.darts.objective.SearchJob` holds a :class:`~optuna_nas.darts.search.SearchSettings`).
The keys a section accepts, their types and their defaults are read from those dataclasses, so every
default lives once, in its dataclass, and a new setting needs no edit here. Sections are built into typed
values once per row when the file is read, and again with a trial's swept values by the same builder.
"""

from __future__ import annotations

import types
from dataclasses import MISSING, dataclass, fields, is_dataclass
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from ..darts.genotypes import Genotype
from ..darts.space import ActivationMode
from ..errors import NasError


@dataclass(frozen=True)
class Key:
    """One key of a section: where it goes in the dataclass tree, its type and its default."""

    path: tuple[str, ...]
    hint: Any
    default: Any


@dataclass(frozen=True)
class Section:
    """A section filling ``target``: every field (nested ones flattened) but ``hidden``, plus ``extra``
    keys the study runner reads itself (with their defaults)."""

    target: type
    hidden: frozenset[str] = frozenset()
    extra: tuple[tuple[str, Any, Any], ...] = ()  # (key, type hint, default)

    @property
    def keys(self) -> dict[str, Key]:
        found = {name: key for name, key in _flatten(self.target).items() if name not in self.hidden}
        found.update({name: Key((), hint, default) for name, hint, default in self.extra})
        return found

    def defaults(self) -> dict[str, Any]:
        return {name: key.default for name, key in self.keys.items()}

    def check(self, values: dict[str, Any]) -> str | None:
        """Why ``values`` cannot be this section (the first unknown or mistyped key), or None."""
        keys = self.keys
        for name, value in values.items():
            if name not in keys:
                return f"{name}: unknown key; allowed: {', '.join(sorted(keys))}"
            if not accepts(keys[name].hint, value):
                return f"{name}: must be a {describe(keys[name].hint)}, got {value!r}"
            if ActivationMode in _options(keys[name].hint) and isinstance(value, str):
                try:  # parsed here, so the error names its key
                    ActivationMode.parse(value)
                except NasError as exc:
                    return f"{name}: {exc}"
        return None

    def build(self, values: dict[str, Any]) -> Any:
        """The typed value of a (checked) section; extra keys are left out. Raises what the dataclasses raise
        for impossible values (a :class:`NasError` saying why)."""
        keys = self.keys
        tree: dict[str, Any] = {}
        for name, value in values.items():
            path = keys[name].path
            if not path:  # an extra key
                continue
            node = tree
            for part in path[:-1]:
                node = node.setdefault(part, {})
            node[path[-1]] = _convert(keys[name].hint, value)
        return _instantiate(self.target, tree)


def _flatten(cls: type) -> dict[str, Key]:
    hints = get_type_hints(cls)
    out: dict[str, Key] = {}
    for f in fields(cls):
        default = f.default if f.default is not MISSING else (
            f.default_factory() if f.default_factory is not MISSING else MISSING)
        if is_dataclass(default):  # nested settings: their keys are the section's keys
            for name, key in _flatten(type(default)).items():
                if name in out:
                    raise TypeError(f"{cls.__name__}: key {name!r} appears twice")  # a programming error
                out[name] = Key((f.name, *key.path), key.hint, key.default)
        else:
            out[f.name] = Key((f.name,), hints[f.name], default)
    return out


def _instantiate(cls: type, tree: dict[str, Any]) -> Any:
    kwargs = {}
    for f in fields(cls):
        if f.name in tree:
            value = tree[f.name]
            if isinstance(value, dict) and f.default_factory is not MISSING:
                value = _instantiate(type(f.default_factory()), value)
            kwargs[f.name] = value
    return cls(**kwargs)


def _options(hint: Any) -> tuple[Any, ...]:
    if get_origin(hint) in (Union, types.UnionType):
        return get_args(hint)
    return (hint,)


def accepts(hint: Any, value: Any) -> bool:
    """Whether YAML ``value`` can be a ``hint`` (numbers stay numbers, booleans stay booleans)."""
    for option in _options(hint):
        origin = get_origin(option)
        if option is type(None) and value is None:
            return True
        if option is bool and isinstance(value, bool):
            return True
        if isinstance(value, bool):
            continue
        if (option is int and isinstance(value, int)) or (option is float and isinstance(value, int | float)):
            return True
        if option in (str, ActivationMode, Genotype) and isinstance(value, str):
            return True  # text: a name, a mode, a file, parsed by the dataclass
        if (origin is tuple or option is tuple) and isinstance(value, list | tuple):
            return True
        if origin is Literal and value in get_args(option):
            return True
    return False


def describe(hint: Any) -> str:
    names = []
    for option in _options(hint):
        if option is type(None):
            names.append("null")
        elif get_origin(option) is tuple or option is tuple:
            names.append("list")
        elif get_origin(option) is Literal:
            names.append(" or ".join(repr(v) for v in get_args(option)))
        else:
            names.append(getattr(option, "__name__", str(option)))
    return " or ".join(dict.fromkeys("str" if n in ("ActivationMode", "Genotype") else n for n in names))


def _convert(hint: Any, value: Any) -> Any:
    if isinstance(value, list) and any(get_origin(o) is tuple or o is tuple for o in _options(hint)):
        return tuple(value)
    if isinstance(value, int) and not isinstance(value, bool) and float in _options(hint) \
            and int not in _options(hint):
        return float(value)
    return value
