"""Genotypes: JSON, the published cells, cost against the original DARTS implementation."""

from __future__ import annotations

import json

import pytest
import torch

from optuna_nas.cost import count_multiply_adds, count_parameters
from optuna_nas.darts.genotypes import BUILTIN_GENOTYPES, Edge, Genotype, load_genotype
from optuna_nas.darts.model import network_cifar, network_imagenet
from optuna_nas.errors import NasError


def test_darts_v2_has_the_reference_parameter_count() -> None:
    """The original DARTS code reports 3,349,342 parameters for DARTS_V2 at C=36, 20 cells, CIFAR-10."""
    net = network_cifar(BUILTIN_GENOTYPES["DARTS_V2"], channels=36, layers=20, auxiliary=True)
    assert count_parameters(net) == 3_349_342
    assert count_parameters(net, exclude=()) > 3_349_342  # the auxiliary head exists, and is left out


def test_published_cells_have_their_papers_sizes() -> None:
    sizes = {n: count_parameters(network_cifar(BUILTIN_GENOTYPES[n], auxiliary=False)) / 1e6
             for n in ("DARTS_V1", "DARTS_V2", "PC_DARTS")}
    assert round(sizes["DARTS_V2"], 1) == 3.3 and round(sizes["PC_DARTS"], 1) == 3.6


def test_multiply_adds_count_convolutions() -> None:
    tiny = network_cifar(BUILTIN_GENOTYPES["DARTS_V2"], channels=4, layers=3, auxiliary=False)
    small = count_multiply_adds(tiny, (3, 16, 16))
    large = count_multiply_adds(tiny, (3, 32, 32))
    assert small > 0 and 3.5 < large / small <= 4.0  # conv work grows with the pixel count


def test_json_round_trip_keeps_ops_inputs_activations_and_edge_activations() -> None:
    g = BUILTIN_GENOTYPES["PC_DARTS"].with_activation("selu")
    g = Genotype.from_dict({**g.to_dict(), "edge_activations": {"normal": ["elu"] * 14, "reduce": ["relu"] * 14}})
    again = Genotype.from_json(g.to_json())
    assert again == g and again.edge_activations == g.edge_activations
    assert again.normal[0] == Edge("sep_conv_3x3", 1, "selu")
    assert again.normal[1] == Edge("skip_connect", 0, None)  # non-parameterised: no activation


def test_darts_style_lists_default_to_relu(tmp_path) -> None:
    path = tmp_path / "g.json"
    path.write_text(json.dumps({"genotype": {"normal": [["sep_conv_3x3", 0], ["skip_connect", 1]] * 4,
                                             "reduce": [["max_pool_3x3", 0], ["dil_conv_3x3", 1, "prelu"]] * 4}}))
    g = load_genotype(str(path))
    assert g.normal[0].effective_activation == "relu"
    assert g.reduce[1].activation == "prelu"
    assert g.normal_concat == (2, 3, 4, 5)


def test_activation_override_changes_edges_not_parameter_count() -> None:
    g = BUILTIN_GENOTYPES["DARTS_V2"]
    relu = network_cifar(g, channels=4, layers=3)
    selu = network_cifar(g.with_activation("selu"), channels=4, layers=3)
    assert count_parameters(relu) == count_parameters(selu)
    acts = {type(m).__name__ for m in selu.modules()}
    assert "SELU" in acts


@pytest.mark.parametrize(("data", "message"), [
    ({"normal": [["conv_4x4", 0]] * 8, "reduce": [["skip_connect", 0]] * 8}, "unknown operator"),
    ({"normal": [["sep_conv_3x3", 0, "gelu9"]] * 8, "reduce": [["skip_connect", 0]] * 8}, "unknown activation"),
    ({"normal": [["sep_conv_3x3", 3]] * 8, "reduce": [["skip_connect", 0]] * 8}, "reads node 3"),
    ({"normal": [["sep_conv_3x3", 0]] * 3, "reduce": [["skip_connect", 0]] * 8}, "two edges per node"),
    ({"normal": [["sep_conv_3x3", 0]] * 8}, "missing reduce"),
])
def test_bad_genotypes_are_refused_with_the_reason(data: dict, message: str) -> None:
    with pytest.raises(NasError, match=message):
        Genotype.from_dict(data)


def test_imagenet_network_runs_and_reports_mobile_scale_cost() -> None:
    net = network_imagenet(BUILTIN_GENOTYPES["DARTS_V2"], channels=48, layers=14, auxiliary=False)
    params = count_parameters(net)
    assert 4.5e6 < params < 4.9e6  # DARTS reports 4.7M in the mobile setting
    tiny = network_imagenet(BUILTIN_GENOTYPES["DARTS_V2"], channels=8, layers=3, num_classes=5)
    tiny.train()
    logits, aux = tiny(torch.randn(2, 3, 64, 64))
    assert logits.shape == aux.shape == (2, 5)
