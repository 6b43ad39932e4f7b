"""Drawings of genotype cells and of architecture weights over a search: small, deterministic, legible PNGs."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib.pyplot as plt
import numpy as np
import pytest

from optuna_nas.darts.draw import (
    architecture_weights_figure,
    cell_text_boxes,
    draw_architecture_weights,
    draw_genotype,
    edge_label,
    edge_names,
)
from optuna_nas.darts.genotypes import BUILTIN_GENOTYPES, Edge, Genotype
from optuna_nas.errors import NasError
from optuna_nas.ops import DARTS_OPERATORS, PAPER_ACTIVATIONS
from optuna_nas.plotting import save_png, text_boxes

if TYPE_CHECKING:
    from matplotlib.figure import Figure

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
FACTORISED = Genotype(
    normal=(Edge("sep_conv_3x3", 0, "selu"), Edge("skip_connect", 1), Edge("dil_conv_5x5", 1, "swish"),
            Edge("sep_conv_5x5", 2, "elu"), Edge("max_pool_3x3", 0), Edge("sep_conv_3x3", 3, "prelu")),
    normal_concat=(2, 3, 4),
    reduce=(Edge("max_pool_3x3", 0), Edge("sep_conv_5x5", 1, "leaky_relu"), Edge("avg_pool_3x3", 2),
            Edge("sep_conv_3x3", 2, "relu6")),
    reduce_concat=(2, 3),
)


def _is_small_png(path: Path) -> bool:
    data = path.read_bytes()
    return data.startswith(PNG_SIGNATURE) and 5_000 < len(data) < 150_000


@pytest.mark.parametrize("genotype", [BUILTIN_GENOTYPES["DARTS_V2"], FACTORISED], ids=["darts_v2", "factorised"])
def test_a_genotype_draws_to_a_small_deterministic_png(tmp_path: Path, genotype: Genotype) -> None:
    first = draw_genotype(genotype, tmp_path / "cell.png", title="cells")
    assert first == tmp_path / "cell.png" and _is_small_png(first)
    second = draw_genotype(genotype, str(tmp_path / "again.png"), title="cells")
    assert second.read_bytes() == first.read_bytes()
    assert plt.get_fignums() == []  # nothing left open in pyplot


def test_edge_labels_name_the_activation_of_parameterised_operators_only() -> None:
    assert edge_label(Edge("sep_conv_3x3", 0, "selu")) == "sep_conv_3x3 · selu"
    assert edge_label(Edge("sep_conv_3x3", 0)) == "sep_conv_3x3 · relu"  # DARTS genotypes: ReLU
    assert edge_label(Edge("max_pool_3x3", 0, "selu")) == "max_pool_3x3"


def test_an_unwritable_path_is_one_clear_error(tmp_path: Path) -> None:
    for path in (tmp_path / "missing" / "cell.png", tmp_path):
        with pytest.raises(NasError, match="cannot write the drawing to") as info:
            draw_genotype(BUILTIN_GENOTYPES["DARTS_V2"], path)
        assert str(path) in str(info.value) and "\n" not in str(info.value)


# ---- no edge label hides another label or a node


def _intersect(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> bool:
    return min(a[2], b[2]) > max(a[0], b[0]) and min(a[3], b[3]) > max(a[1], b[1])


BUILTIN_CELLS = [BUILTIN_GENOTYPES[name] for name in ("DARTS_V1", "DARTS_V2", "PC_DARTS")]


@pytest.mark.parametrize("genotype", [*BUILTIN_CELLS, FACTORISED], ids=["v1", "v2", "pc_darts", "factorised"])
def test_edge_labels_overlap_no_other_label_and_no_node(genotype: Genotype) -> None:
    cells = cell_text_boxes(genotype, title="cells")
    assert set(cells) == {"normal cell", "reduction cell"}
    for name, (nodes, labels) in cells.items():
        edges, _ = genotype.cell(name == "reduction cell")
        assert len(labels) == len(edges) and len(nodes) == len(edges) // 2 + 3  # c_{k-2}, c_{k-1}, c_{k}
        for i, label in enumerate(labels):
            assert not any(_intersect(label, other) for other in labels[:i]), f"{name}: label {i} hides another"
            assert not any(_intersect(label, node) for node in nodes), f"{name}: label {i} hides a node"
    assert plt.get_fignums() == []


# ---- architecture weights over a search


DARTS_CANDIDATES = list(DARTS_OPERATORS)
ACTIVATIONS = ["relu", "selu", "swish"]


def _softmax(logits: np.ndarray) -> list[list[float]]:
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return (e / e.sum(axis=-1, keepdims=True)).tolist()


def _epochs(n_epochs: int, candidates: list[str], activations: list[str], beta: bool = False, gamma: bool = False,
            steps: int = 1, seed: int = 0) -> list[dict[str, Any]]:
    """Seeded random softmax rows in the input format, drifting towards skip_connect as DARTS collapses."""
    rng = np.random.default_rng(seed)
    n_edges = steps * (steps + 3) // 2
    drift = np.zeros(len(candidates))
    drift[candidates.index("skip_connect")] = 0.2

    def cell(epoch: int) -> dict[str, Any]:
        gammas = [w for node in range(steps) for w in _softmax(rng.normal(size=node + 2))]
        return {"alpha": _softmax(rng.normal(size=(n_edges, len(candidates))) + epoch * drift),
                "beta": _softmax(rng.normal(size=(n_edges, len(activations)))) if beta else None,
                "gamma": gammas if gamma else None}

    return [{"epoch": e, "normal": cell(e), "reduce": cell(e)} for e in range(n_epochs)]


WEIGHT_CASES = {  # name: (epochs, candidates, activations)
    "fixed": (_epochs(3, DARTS_CANDIDATES, []), DARTS_CANDIDATES, []),
    "factorised": (_epochs(3, DARTS_CANDIDATES, ACTIVATIONS, beta=True), DARTS_CANDIDATES, ACTIVATIONS),
    "pc_darts": (_epochs(3, DARTS_CANDIDATES, [], gamma=True), DARTS_CANDIDATES, []),
    "one_epoch": (_epochs(1, DARTS_CANDIDATES, ACTIVATIONS, beta=True, gamma=True), DARTS_CANDIDATES, ACTIVATIONS),
}
# A-DARTS's non-factorised mode: the 4 plain operators and 4 parameterised ones × 9 activations
SUPER_CANDIDATES = DARTS_CANDIDATES[:4] + [f"{op}@{act}" for op in DARTS_CANDIDATES[4:] for act in PAPER_ACTIVATIONS]


def test_edges_are_named_by_input_and_node_in_alpha_row_order() -> None:
    names = edge_names(14)
    assert names[:5] == ["$c_{k-2}$→0", "$c_{k-1}$→0", "$c_{k-2}$→1", "$c_{k-1}$→1", "0→1"]
    assert names[-5:] == ["$c_{k-2}$→3", "$c_{k-1}$→3", "0→3", "1→3", "2→3"]
    assert len(edge_names(2)) == 2 and len(edge_names(20)) == 20
    with pytest.raises(NasError, match="13 edges is no cell"):
        edge_names(13)


@pytest.mark.parametrize("case", list(WEIGHT_CASES))
def test_architecture_weights_draw_to_a_small_deterministic_png(tmp_path: Path, case: str) -> None:
    epochs, candidates, activations = WEIGHT_CASES[case]
    first = draw_architecture_weights(epochs, candidates, activations, tmp_path / "weights.png", title="trial 0")
    assert first == tmp_path / "weights.png" and _is_small_png(first)
    second = draw_architecture_weights(epochs, candidates, activations, str(tmp_path / "again.png"), title="trial 0")
    assert second.read_bytes() == first.read_bytes()
    assert plt.get_fignums() == []


def test_forty_candidates_over_fifty_epochs_stay_small_and_legible(tmp_path: Path) -> None:
    epochs = _epochs(50, SUPER_CANDIDATES, [], steps=4)
    assert len(SUPER_CANDIDATES) == 40 and len(epochs[0]["normal"]["alpha"]) == 14
    figure = architecture_weights_figure(epochs, SUPER_CANDIDATES, [])
    _assert_no_text_overlaps(figure)
    path = save_png(figure, tmp_path / "weights.png")
    assert path.read_bytes().startswith(PNG_SIGNATURE) and len(path.read_bytes()) < 300_000


def test_architecture_weight_labels_do_not_overlap() -> None:
    epochs = _epochs(1, DARTS_CANDIDATES, PAPER_ACTIVATIONS, beta=True, gamma=True, steps=2)  # the most to label
    figure = architecture_weights_figure(epochs, DARTS_CANDIDATES, PAPER_ACTIVATIONS, title="trial 0")
    titles = [text for text, _ in _assert_no_text_overlaps(figure)]
    assert "trial 0 · 1 epoch (heatmaps: epoch 0)" in titles  # the title counts the epochs
    assert {"softmax(α)", "softmax(β)", "γ"} <= {t.rpartition(" · ")[2] for t in titles}


def _assert_no_text_overlaps(figure: Figure) -> list[tuple[str, tuple[float, float, float, float]]]:
    boxes = text_boxes(figure)
    for i, (text, box) in enumerate(boxes):
        hit = [other for other, b in boxes[:i] if _intersect(box, b)]
        assert not hit, f"{text!r} overlaps {hit}"
    figure.clear()
    return boxes


def _with(epochs: list[dict[str, Any]], cell: str, **changes: Any) -> list[dict[str, Any]]:
    out = copy.deepcopy(epochs)
    out[-1][cell].update(changes)
    return out


FIXED = WEIGHT_CASES["fixed"][0]
BAD_WEIGHTS = {  # name: (epochs, activations, message)
    "no epochs": ([], [], "no epochs to draw"),
    "short alpha row": (_with(FIXED, "normal", alpha=[[0.5, 0.5]] * 2), [], "row 0 has 2 weights, expected 8"),
    "edge count": (_with(FIXED, "reduce", alpha=[[0.125] * 8] * 5), [], "has 5 rows, expected 2"),
    "no cell": ([{"epoch": 0, "normal": {"alpha": [[0.125] * 8] * 4}, "reduce": {"alpha": [[0.125] * 8] * 4}}], [],
                "4 edges is no cell"),
    "beta only later": (_with(FIXED, "normal", beta=[[0.5, 0.5]] * 2), ["relu", "selu"], "beta is present"),
    "beta row": (_with(WEIGHT_CASES["factorised"][0], "normal", beta=[[0.5, 0.5]] * 2), ACTIVATIONS,
                 "beta row 0 has 2 weights, expected 3 (one per activation)"),
    "gamma length": (_with(WEIGHT_CASES["pc_darts"][0], "reduce", gamma=[0.5] * 4), [], "gamma has 4 weights"),
    "not a number": (_with(FIXED, "normal", alpha=[["x"] * 8] * 2), [], "not a number"),
    "nan": (_with(FIXED, "normal", alpha=[[float("nan")] * 8] * 2), [], "not finite"),
    "missing cell": ([{"epoch": 0, "normal": FIXED[0]["normal"]}], [], "epoch 0 reduce"),
}


@pytest.mark.parametrize("case", list(BAD_WEIGHTS))
def test_bad_architecture_weights_are_one_clear_error(tmp_path: Path, case: str) -> None:
    epochs, activations, message = BAD_WEIGHTS[case]
    with pytest.raises(NasError, match=re.escape(message)) as info:
        draw_architecture_weights(epochs, DARTS_CANDIDATES, activations, tmp_path / "weights.png")
    assert "\n" not in str(info.value) and not (tmp_path / "weights.png").exists()


def test_architecture_weights_to_an_unwritable_path_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "missing" / "weights.png"
    with pytest.raises(NasError, match="cannot write the drawing to") as info:
        draw_architecture_weights(WEIGHT_CASES["fixed"][0], DARTS_CANDIDATES, [], path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)
