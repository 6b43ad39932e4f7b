"""RandGrowSampler as an OptunaHub package: loaded the way OptunaHub users load it, its README's front matter
and example, and its example.py run at a tiny size."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import optuna
import optunahub
import pytest
import yaml

from optuna_nas.randgrow import RandGrowSampler

REGISTRY = Path(__file__).resolve().parents[2] / "optunahub-registry" / "package"
PACKAGE = REGISTRY / "samplers" / "randgrow"


@pytest.fixture(scope="module")
def hub_module():  # type: ignore[no-untyped-def]
    return optunahub.load_local_module("samplers/randgrow", registry_root=str(REGISTRY))


def test_the_package_has_optunahubs_layout_and_front_matter() -> None:
    assert {p.name for p in PACKAGE.iterdir()} >= {"__init__.py", "README.md", "LICENSE", "example.py",
                                                   "requirements.txt"}
    front = re.match(r"---\n(.*?)\n---\n", (PACKAGE / "README.md").read_text(encoding="utf-8"), re.S)
    assert front is not None
    meta = yaml.safe_load(front.group(1))
    assert set(meta) == {"author", "title", "description", "tags", "optuna_versions", "license"}
    assert "sampler" in meta["tags"] and meta["license"] == "MIT License"  # samplers/ packages must tag "sampler"
    assert meta["optuna_versions"] and all(isinstance(v, str) for v in meta["optuna_versions"])
    assert (PACKAGE / "LICENSE").read_text(encoding="utf-8").startswith("MIT License")
    assert (PACKAGE / "requirements.txt").read_text(encoding="utf-8").split() == ["optuna-nas"]


def test_optunahub_loads_the_projects_sampler(hub_module) -> None:  # type: ignore[no-untyped-def]
    assert hub_module.RandGrowSampler is RandGrowSampler
    assert hub_module.__name__ == "optunahub_registry.package.samplers.randgrow"


def test_the_readme_example_runs(hub_module, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    text = (PACKAGE / "README.md").read_text(encoding="utf-8")
    (code,) = re.findall(r"## Example\n\n```python\n(.*?)```", text, re.S)
    monkeypatch.setattr(optunahub, "load_module", lambda package, **kw: hub_module)
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)  # noqa: S102 - the documented example, verbatim
    assert scope["study"].trials[0].state == optuna.trial.TrialState.COMPLETE


def test_example_py_grows_a_search_at_a_tiny_size(hub_module, capsys: pytest.CaptureFixture) -> None:  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("randgrow_example", PACKAGE / "example.py")
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    study = example.run(hub_module, n_trials=3, epochs=1)
    trials = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(trials) == 3 and trials[0].user_attrs["parent"] is None
    assert all(t.user_attrs["parent"] is not None for t in trials[1:])  # children grow from completed models
    assert trials[1].values[1] > trials[0].values[1]  # growing adds parameters
    assert "validation error" in capsys.readouterr().out
