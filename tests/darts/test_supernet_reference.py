"""The search super-network and the discrete CIFAR network compute what the original DARTS / PC-DARTS code computes:
the same logits and the same gradients (every weight, α, and PC-DARTS's edge-normalisation logits), in float64, after
the same weights and architecture parameters are copied into both. Our networks run in both memory layouts
(contiguous and ``torch.channels_last``, the library's default); the original only knows the contiguous one.

The original code is loaded by ``benchmarks/reference_code.py`` (the benchmark's loader, which isolates the two
folders' same-named modules); skipped where ``../shared/reference`` (the original code, not part of this project)
is absent.

Name mapping, original -> ours (everything else keeps its name: ``stem.*``, ``classifier.*``, a
``FactorizedReduce``'s ``conv_1`` / ``conv_2`` / ``bn``, ``auxiliary_head.*``):

* ``ReLUConvBN`` preprocessing: ``cells.i.preprocessP.op.j`` -> ``cells.i.preprocessP.j`` (ours is the Sequential);
* search edges: ``cells.i._ops.e._ops.k`` -> ``cells.i.edges.e.ops.k`` (k: the same PRIMITIVES order; our ``none``
  is an unused placeholder); inside a separable / dilated convolution the original's leading ReLU is index 0 and
  ours has none (the edge computes it once), so ``.op.j`` -> ``.(j - 1)``; pooling + BatchNorm and
  ``FactorizedReduce`` keep their inner names;
* discrete cells: ``cells.i._ops.k.op.j`` -> ``cells.i.ops.k.body.(j - 1)`` (our ReLU is ``ops.k.activation``);
  ``stem.0`` / ``stem.1`` -> ``stem.conv`` / ``stem.bn``;
* architecture: ``alphas_normal`` / ``alphas_reduce`` -> the same names; PC-DARTS's ``betas_normal`` /
  ``betas_reduce`` (edge normalisation) -> ``gammas_normal`` / ``gammas_reduce``.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch
from torch import nn

from optuna_nas.darts.genotypes import BUILTIN_GENOTYPES
from optuna_nas.darts.model import network_cifar
from optuna_nas.darts.space import DARTS_SPACE, ActivationMode
from optuna_nas.darts.supernet import SearchNetwork, SuperNetConfig

REFERENCE = Path(__file__).resolve().parents[3] / "shared" / "reference"
LOADER = Path(__file__).resolve().parents[2] / "benchmarks" / "reference_code.py"
RTOL = 1e-10  # of the largest magnitude of each compared tensor, float64
LAYOUTS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}

pytestmark = pytest.mark.skipif(
    not all((REFERENCE / name / "model_search.py").is_file() for name in ("darts", "pcdarts")),
    reason="the reference DARTS / PC-DARTS code (../shared/reference) is not here",
)

Rule = tuple[str, str | Callable[[re.Match[str]], str]]
_COMMON: list[Rule] = [
    (r"cells\.(\d+)\.preprocess([01])\.op\.(.+)", r"cells.\1.preprocess\2.\3"),
    (r"(stem|classifier|auxiliary_head|cells\.\d+\.preprocess0)\..+", r"\g<0>"),
]
SEARCH_RULES: list[Rule] = [
    (r"cells\.(\d+)\._ops\.(\d+)\._ops\.(\d+)\.op\.(\d+)\.(.+)",
     lambda m: f"cells.{m[1]}.edges.{m[2]}.ops.{m[3]}.{int(m[4]) - 1}.{m[5]}"),
    (r"cells\.(\d+)\._ops\.(\d+)\._ops\.(.+)", r"cells.\1.edges.\2.ops.\3"),
    *_COMMON,
]
DISCRETE_RULES: list[Rule] = [
    (r"cells\.(\d+)\._ops\.(\d+)\.op\.(\d+)\.(.+)", lambda m: f"cells.{m[1]}.ops.{m[2]}.body.{int(m[3]) - 1}.{m[4]}"),
    (r"cells\.(\d+)\._ops\.(.+)", r"cells.\1.ops.\2"),
    (r"stem\.0\.(.+)", r"stem.conv.\1"),
    (r"stem\.1\.(.+)", r"stem.bn.\1"),
    *_COMMON,
]


def _loader() -> ModuleType:
    name = "_optuna_nas_benchmarks_reference_code"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, LOADER)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up while the file executes
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture(scope="module")
def darts() -> Any:
    return _loader().load_reference(REFERENCE / "darts")


@pytest.fixture(scope="module")
def pcdarts() -> Any:
    return _loader().load_reference(REFERENCE / "pcdarts")


@contextmanager
def float64() -> Iterator[None]:
    """Build in float64: parameters, the original's plain-tensor α and random inputs all take the default dtype."""
    dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(dtype)


def _rename(name: str, rules: list[Rule]) -> str:
    for pattern, replacement in rules:
        match = re.fullmatch(pattern, name)
        if match:
            return replacement(match) if callable(replacement) else match.expand(replacement)
    raise AssertionError(f"no mapping for the original's {name}")


def _copy_state(ours: nn.Module, theirs: nn.Module, rules: list[Rule], skip: set[str]) -> dict[str, str]:
    """Map every parameter and buffer of ``theirs`` onto ours (a bijection, equal shapes), give our BatchNorm
    affine parameters and biases non-trivial values, and copy ours into theirs. Returns original -> our name."""
    our_state = {k: v for k, v in ours.state_dict(keep_vars=True).items() if k not in skip}
    their_state = theirs.state_dict(keep_vars=True)
    mapping = {name: _rename(name, rules) for name in their_state}
    assert sorted(mapping.values()) == sorted(our_state), set(mapping.values()) ^ set(our_state)
    with torch.no_grad():
        for name, p in ours.named_parameters():
            if name not in skip and p.dim() == 1:  # BatchNorm weight / bias (1 and 0 at init), linear biases
                p.add_(0.2 * torch.randn_like(p))
        for theirs_name, our_name in mapping.items():
            source, target = our_state[our_name], their_state[theirs_name]
            assert source.shape == target.shape, (theirs_name, our_name, source.shape, target.shape)
            target.copy_(source)
    return mapping


def _mismatch(name: str, ours: torch.Tensor | None, theirs: torch.Tensor | None) -> list[str]:
    if ours is None or theirs is None:
        return [] if ours is None and theirs is None else [f"{name}: one side is None"]
    ours, theirs = ours.detach().double(), theirs.detach().double()
    if ours.shape != theirs.shape:
        return [f"{name}: shape {tuple(ours.shape)} != {tuple(theirs.shape)}"]
    error, scale = (ours - theirs).abs().max().item(), theirs.abs().max().item()
    if error <= RTOL * scale:
        return []
    return [f"{name}: max |ours - original| = {error:.3g} (max |original| {scale:.3g})"]


def _compare(ours: nn.Module, theirs: nn.Module, mapping: dict[str, str], arch: dict[str, str],
             outputs: list[tuple[str, torch.Tensor | None, torch.Tensor | None]]) -> list[str]:
    """Outputs, every mapped parameter's gradient, the BatchNorm running statistics, the architecture parameters'
    gradients; the mismatches, described."""
    errors = [e for name, o, t in outputs for e in _mismatch(name, o, t)]
    our_state, their_state = ours.state_dict(keep_vars=True), theirs.state_dict(keep_vars=True)
    for theirs_name, our_name in mapping.items():
        o, t = our_state[our_name], their_state[theirs_name]
        if isinstance(t, nn.Parameter):
            errors += _mismatch(f"grad {our_name}", o.grad, t.grad)
        # num_batches_tracked is not compared: BatchNorm reads it only when momentum is None, and a search edge
        # runs each operator's last BatchNorm as F.batch_norm (supernet._weighted), which leaves it at 0
        elif not our_name.endswith("num_batches_tracked"):
            errors += _mismatch(f"buffer {our_name}", o, t)
    for theirs_name, our_name in arch.items():
        errors += _mismatch(f"grad {our_name}", getattr(ours, our_name).grad, getattr(theirs, theirs_name).grad)
    return errors


def _search_pair(code: Any, channels: int, k: int, layout: torch.memory_format,
                 perturb: bool = False) -> list[str]:
    """Ours and the original's search network, same weights and α (and γ = PC-DARTS's betas): one forward and
    backward of cross-entropy in training mode (BatchNorm on batch statistics); the mismatches."""
    with float64():
        torch.manual_seed(0)
        ours = SearchNetwork(SuperNetConfig(DARTS_SPACE, ActivationMode.parse("fixed:relu"), channels=channels,
                                            layers=5, num_classes=10, partial_channels=k))
        ours.train().to(memory_format=layout)
        theirs = _loader().OriginalSearch(code, channels, 10, 5).net.train()
        arch = {"alphas_normal": "alphas_normal", "alphas_reduce": "alphas_reduce"}
        if k > 1:
            arch |= {"betas_normal": "gammas_normal", "betas_reduce": "gammas_reduce"}
        mapping = _copy_state(ours, theirs, SEARCH_RULES, set(arch.values()))
        with torch.no_grad():
            for theirs_name, our_name in arch.items():
                getattr(ours, our_name).normal_(0.0, 1.0)  # far from uniform, so a swapped column shows
                getattr(theirs, theirs_name).copy_(getattr(ours, our_name))
            if perturb:  # the negative control: one weight of one separable convolution, by 1e-6 of itself
                theirs.cells[2]._ops[3]._ops[4].op[2].weight.view(-1)[0].mul_(1 + 1e-6)
        x, y = torch.randn(2, 3, 16, 16), torch.tensor([3, 7])
    criterion = nn.CrossEntropyLoss()
    logits = ours(x.contiguous(memory_format=layout))
    reference = theirs(x)
    criterion(logits, y).backward()
    criterion(reference, y).backward()
    return _compare(ours, theirs, mapping, arch, [("logits", logits, reference)])


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_darts_search_network_equals_the_original(darts: Any, layout: str) -> None:
    assert darts.kind == "darts"
    assert _search_pair(darts, 4, 1, LAYOUTS[layout]) == []


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_pc_darts_search_network_equals_the_original(pcdarts: Any, layout: str) -> None:
    assert pcdarts.kind == "pc_darts"  # the original hard-codes K=4 partial channels
    assert _search_pair(pcdarts, 8, 4, LAYOUTS[layout]) == []


def test_the_comparison_catches_one_perturbed_weight(darts: Any) -> None:
    errors = _search_pair(darts, 4, 1, torch.contiguous_format, perturb=True)
    assert any(e.startswith("logits") for e in errors)
    assert any("cells.2.edges.3.ops.4.1.weight" in e for e in errors)  # its own gradient differs too


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_darts_v2_network_equals_the_original_network_cifar(darts: Any, layout: str) -> None:
    """Training mode with the auxiliary head and drop path 0 (no randomness), CE + 0.4 CE_aux as the original
    train.py; then evaluation mode on the running statistics both networks have just updated. 32x32 input: the
    original auxiliary head needs its 8x8 map. 5 cells, not 3: with 3 the auxiliary head follows the last cell,
    and the original head's first ReLU (in place) rectifies that cell's output before the classifier reads it,
    so in training mode its logits differ from ours (which leave the cell output alone)."""
    memory_format = LAYOUTS[layout]
    with float64():
        torch.manual_seed(0)
        ours = network_cifar(BUILTIN_GENOTYPES["DARTS_V2"], channels=4, num_classes=10, layers=5, auxiliary=True)
        ours.train().to(memory_format=memory_format)
        ours.set_drop_path(0.0)
        theirs = _loader().OriginalRetrain(darts, 4, 10, 5, auxiliary=True, drop_path_prob=0.0).net.train()
        mapping = _copy_state(ours, theirs, DISCRETE_RULES, set())
        x, y = torch.randn(2, 3, 32, 32), torch.tensor([1, 8])
    criterion = nn.CrossEntropyLoss()
    logits, aux = ours(x.contiguous(memory_format=memory_format))
    reference, reference_aux = theirs(x)
    (criterion(logits, y) + 0.4 * criterion(aux, y)).backward()
    (criterion(reference, y) + 0.4 * criterion(reference_aux, y)).backward()
    assert _compare(ours, theirs, mapping, {}, [("logits", logits, reference), ("aux", aux, reference_aux)]) == []
    ours.eval()
    theirs.eval()
    with torch.no_grad():
        evaluated, (reference, none) = ours(x.contiguous(memory_format=memory_format)), theirs(x)
    assert none is None
    assert _mismatch("eval logits", evaluated, reference) == []
