"""Drawings of genotype cells: small, deterministic PNGs."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pytest

from optuna_nas.darts.draw import draw_genotype, edge_label
from optuna_nas.darts.genotypes import BUILTIN_GENOTYPES, Edge, Genotype
from optuna_nas.errors import NasError

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
