"""Derivation equals the reference implementations' rule, edge order included, over many random α draws, in every
activation mode: the original DARTS code's ``genotype()`` (and PC-DARTS's, with its edge normalisation) is fed the
same architecture weights. Skipped where ``../shared/reference`` (the original code, not part of this project) is
absent; the strongest-first order itself is tested without it in ``test_derive.py``."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

import pytest
import torch

from optuna_nas.darts.derive import derive_genotype
from optuna_nas.darts.genotypes import BUILTIN_GENOTYPES
from optuna_nas.darts.space import A_DARTS_SPACE, DARTS_SPACE, ActivationMode
from optuna_nas.darts.supernet import SearchNetwork, SuperNetConfig

REFERENCE = Path(__file__).resolve().parents[3] / "shared" / "reference"
_MODULES = ("operations", "genotypes", "model_search", "utils", "architect", "model")
DRAWS = 50

pytestmark = pytest.mark.skipif(not (REFERENCE / "darts" / "model_search.py").is_file(),
                                reason="the reference DARTS code (../shared/reference) is not here")


@contextmanager
def reference(name: str) -> Iterator[ModuleType]:
    """The reference ``model_search`` module of ``darts`` or ``pcdarts``; its sibling modules (``operations``,
    ``genotypes``) share their names between the two codes, so each import is isolated and undone."""
    saved = {m: sys.modules.pop(m) for m in _MODULES if m in sys.modules}
    sys.path.insert(0, str(REFERENCE / name))
    try:
        yield importlib.import_module("model_search")
    finally:
        sys.path.remove(str(REFERENCE / name))
        for m in _MODULES:
            sys.modules.pop(m, None)
        sys.modules.update(saved)


def _ours(space: object, mode: str, k: int = 1) -> SearchNetwork:
    return SearchNetwork(SuperNetConfig(space, ActivationMode.parse(mode), channels=4, layers=3, num_classes=4,
                                        partial_channels=k))


def _reference_genes(model_search: ModuleType, ref: torch.nn.Module, net: SearchNetwork, names: list[str],
                     pc: bool) -> dict[str, list]:
    """What the reference network's ``genotype()`` derives from ``net``'s architecture weights, with ``names``
    as its operator list (the reference's own PRIMITIVES for DARTS's space; our candidate names for 40
    super-operators, which only ``genotype()`` reads)."""
    with torch.no_grad():
        for cell in ("normal", "reduce"):
            setattr(ref, f"alphas_{cell}", getattr(net, f"alphas_{cell}").detach().clone())
            if pc:  # PC-DARTS calls its edge-normalisation logits betas; ours are γ
                getattr(ref, f"betas_{cell}").copy_(getattr(net, f"gammas_{cell}"))
    primitives = model_search.PRIMITIVES
    model_search.PRIMITIVES = names
    try:
        genotype = ref.genotype()
    finally:
        model_search.PRIMITIVES = primitives
    return {"normal": list(genotype.normal), "reduce": list(genotype.reduce)}


def _our_genes(net: SearchNetwork, expanded: bool) -> dict[str, list]:
    genotype = derive_genotype(net)
    return {cell: [(f"{e.op}@{e.activation}" if expanded and e.activation else e.op, e.input)
                   for e in getattr(genotype, cell)] for cell in ("normal", "reduce")}


@pytest.mark.parametrize(("mode", "space"), [("fixed:relu", DARTS_SPACE), ("fixed:selu", A_DARTS_SPACE),
                                             ("factorized", A_DARTS_SPACE), ("non_factorized", A_DARTS_SPACE)])
def test_darts_derivation_equals_the_reference_over_random_draws(mode: str, space: object) -> None:
    net = _ours(space, mode)
    names = net.config.candidate_names()
    with reference("darts") as model_search:
        ref = model_search.Network(4, 4, 3, torch.nn.CrossEntropyLoss())
        for draw in range(DRAWS):
            torch.manual_seed(draw)
            with torch.no_grad():
                for parameter in net.alpha_parameters() + net.beta_parameters():
                    parameter.normal_(0.0, 1.0)
            expected = _reference_genes(model_search, ref, net, names, False)
            assert _our_genes(net, mode == "non_factorized") == expected


@pytest.mark.parametrize("mode", ["fixed:relu", "factorized"])
def test_pc_darts_derivation_with_edge_normalisation_equals_the_reference(mode: str) -> None:
    net = _ours(A_DARTS_SPACE if mode == "factorized" else DARTS_SPACE, mode, k=2)
    names = net.config.candidate_names()
    with reference("pcdarts") as model_search:
        ref = model_search.Network(4, 4, 3, torch.nn.CrossEntropyLoss())
        for draw in range(DRAWS):
            torch.manual_seed(1000 + draw)
            with torch.no_grad():
                for parameter in net.alpha_parameters() + net.beta_parameters():
                    parameter.normal_(0.0, 1.0)
            assert _our_genes(net, False) == _reference_genes(model_search, ref, net, names, True)


def test_the_published_genotypes_are_the_references_own() -> None:
    with reference("darts") as model_search:
        published = sys.modules["genotypes"]
        for name in ("DARTS_V1", "DARTS_V2"):
            ours = BUILTIN_GENOTYPES[name]
            theirs = getattr(published, name)
            assert [(e.op, e.input) for e in ours.normal] == list(theirs.normal)
            assert [(e.op, e.input) for e in ours.reduce] == list(theirs.reduce)
        assert model_search is not None
    with reference("pcdarts"):
        theirs = sys.modules["genotypes"].PCDARTS
        assert [(e.op, e.input) for e in BUILTIN_GENOTYPES["PC_DARTS"].normal] == list(theirs.normal)
        assert [(e.op, e.input) for e in BUILTIN_GENOTYPES["PC_DARTS"].reduce] == list(theirs.reduce)
