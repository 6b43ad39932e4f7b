"""Genotype derivation on hand-set architecture weights."""

from __future__ import annotations

import pytest
import torch

from optuna_nas.darts.candidates import Candidate
from optuna_nas.darts.derive import derive_cell, derive_genotype, group_argmax_mask
from optuna_nas.darts.genotypes import Edge, Genotype
from optuna_nas.darts.model import network_cifar
from optuna_nas.darts.space import ActivationMode, SearchSpace
from optuna_nas.darts.supernet import SearchNetwork, SuperNetConfig

from _tiny import tiny_network

OPS = ["none", "max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3", "sep_conv_5x5",
       "dil_conv_3x3", "dil_conv_5x5"]
CANDIDATES = [Candidate(op, 0 if "conv" in op else None) for op in OPS]


def _weights(spec: dict[int, tuple[str, float]]) -> torch.Tensor:
    """14 edges, uniform-ish small weights except the edges named in ``spec``."""
    w = torch.full((14, 8), 0.05)
    for edge, (op, value) in spec.items():
        w[edge, OPS.index(op)] = value
    return w


def test_two_strongest_edges_per_node_by_best_non_none_operator() -> None:
    # node 2: edges 0,1; node 3: edges 2,3,4; node 4: edges 5..8; node 5: edges 9..13
    w = _weights({0: ("sep_conv_3x3", 0.6), 1: ("none", 0.99), 2: ("skip_connect", 0.5), 4: ("dil_conv_5x5", 0.7),
                  6: ("max_pool_3x3", 0.3), 8: ("sep_conv_5x5", 0.4), 9: ("avg_pool_3x3", 0.2),
                  13: ("dil_conv_3x3", 0.9)})
    acts = [("selu",)] * 14
    cell = derive_cell(w, CANDIDATES, 4, acts)
    assert cell == (  # per node, the stronger edge first (as DARTS lists them)
        Edge("sep_conv_3x3", 0, "selu"), Edge("max_pool_3x3", 1, None),  # 'none' never wins an edge
        Edge("dil_conv_5x5", 2, "selu"), Edge("skip_connect", 0, None),
        Edge("sep_conv_5x5", 3, "selu"), Edge("max_pool_3x3", 1, None),
        Edge("dil_conv_3x3", 4, "selu"), Edge("avg_pool_3x3", 0, None),
    )


def test_edge_normalisation_weights_change_which_edges_win() -> None:
    w = torch.tensor([[0.0] * 4 + [0.6, 0, 0, 0], [0.0] * 5 + [0.5, 0, 0]])  # one node, two edges
    plain = derive_cell(w, CANDIDATES, 1, [("relu",)] * 2, inputs_per_node=1)
    gamma = torch.tensor([0.2, 0.8])  # PC-DARTS: strength × edge weight
    normalised = derive_cell(w, CANDIDATES, 1, [("relu",)] * 2, gamma, inputs_per_node=1)
    assert plain == (Edge("sep_conv_3x3", 0, "relu"),)
    assert normalised == (Edge("sep_conv_5x5", 1, "relu"),)


def test_factorised_network_takes_each_edges_argmax_beta() -> None:
    net = tiny_network("factorized")
    with torch.no_grad():
        net.alphas_normal.zero_()
        net.alphas_normal[:, 4] = 5.0  # sep_conv_3x3 everywhere
        net.betas_normal.zero_()
        net.betas_normal[:, 7] = 3.0  # selu everywhere ...
        net.betas_normal[0, 2] = 9.0  # ... but leaky_relu on edge 0
    genotype = derive_genotype(net)
    assert all(e.op == "sep_conv_3x3" for e in genotype.normal)
    assert genotype.normal[0] == Edge("sep_conv_3x3", 0, "leaky_relu")
    assert {e.activation for e in genotype.normal[1:]} == {"selu"}
    assert genotype.edge_activations["normal"][:2] == ("leaky_relu", "selu")  # every edge, for Config-A


def test_non_factorised_network_takes_the_winning_super_operators_activation() -> None:
    net = tiny_network("non_factorized")
    names = net.config.candidate_names()
    with torch.no_grad():
        net.alphas_reduce.zero_()
        net.alphas_reduce[:, names.index("dil_conv_3x3@celu")] = 4.0
    genotype = derive_genotype(net)
    assert set(genotype.reduce) <= {Edge("dil_conv_3x3", i, "celu") for i in range(6)}
    assert genotype.edge_activations is None


def test_fixed_mode_records_the_fixed_activation() -> None:
    genotype = derive_genotype(tiny_network("fixed:swish"))
    assert {e.activation for e in genotype.normal + genotype.reduce} <= {"swish", None}


# ---------------------------------------------------------------- operator groups

GROUPED = SearchSpace("grouped", operators=("none", "max_pool_3x3", "skip_connect"),
                      operator_groups={"conv": ["sep_conv", "dil_conv", "conv"], "kernel": ["3x3", "5x5"]},
                      operator_template="{conv}_{kernel}", activations=("relu", "selu"), activation_mode="factorized")
FAMILY = 3  # the family's α column: after none, max_pool_3x3, skip_connect


def _grouped(mode: str = "factorized", k: int = 1) -> SearchNetwork:
    torch.manual_seed(0)
    return SearchNetwork(SuperNetConfig(GROUPED, ActivationMode.parse(mode), channels=4, layers=3, num_classes=4,
                                        partial_channels=k))


@pytest.mark.parametrize(("mode", "k"), [("factorized", 1), ("fixed:relu", 2), ("non_factorized", 1)])
def test_grouped_edges_take_the_argmax_of_each_group(mode: str, k: int) -> None:
    net = _grouped(mode, k)
    with torch.no_grad():
        for cell in ("normal", "reduce"):
            getattr(net, f"alphas_{cell}").zero_()
            getattr(net, f"alphas_{cell}")[:, FAMILY:] = 6.0  # the family everywhere (every activation slot)
            getattr(net, f"group_logits_{cell}_conv").copy_(torch.tensor([0.0, 2.0, 1.0]))  # dil_conv
            getattr(net, f"group_logits_{cell}_kernel").copy_(torch.tensor([0.0, 1.0]))  # 5x5
        net.group_logits_normal_conv[0] = torch.tensor([0.0, 1.0, 3.0])  # edge 0: conv ...
        net.group_logits_normal_kernel[0] = torch.tensor([2.0, 0.0])  # ... 3x3
    genotype = derive_genotype(net)
    # node 0 keeps both its inputs (in strength order): the edge from input 0 is the conv_3x3
    first, second = genotype.normal[:2]
    from_input_0, from_input_1 = (first, second) if first.input == 0 else (second, first)
    assert (from_input_0.op, from_input_1.input) == ("conv_3x3", 1)
    assert {e.op for e in genotype.normal if e is not from_input_0} == {e.op for e in genotype.reduce} == \
        {"dil_conv_5x5"}
    assert all(e.activation in ("relu", "selu") for e in genotype.normal + genotype.reduce)


def test_a_grouped_family_competes_with_its_alpha_share_and_groups_pick_the_member() -> None:
    """As A-DARTS's β picks an activation without scaling the operator: the family wins an edge by its α
    slot, however flat its groups, and each group's argmax names the member."""
    net = _grouped("fixed:relu")
    with torch.no_grad():
        net.alphas_normal.zero_()
        net.alphas_normal[:, 2] = 1.0  # skip_connect
        net.alphas_normal[:, FAMILY] = 1.2  # the family slot beats skip even while its groups are uniform
        net.group_logits_normal_conv.zero_()
        net.group_logits_normal_kernel.zero_()
    assert {e.op for e in derive_genotype(net).normal} == {"sep_conv_3x3"}  # ties go to the first choice
    with torch.no_grad():
        net.group_logits_normal_conv[:, 1] = 0.3
        net.group_logits_normal_kernel[:, 1] = 0.3
    assert {e.op for e in derive_genotype(net).normal} == {"dil_conv_5x5"}
    with torch.no_grad():
        net.alphas_normal[:, FAMILY] = 0.8  # below skip: the family loses, however peaked its groups
        net.group_logits_normal_conv[:, 0] = 20.0
    assert {e.op for e in derive_genotype(net).normal} == {"skip_connect"}


def test_only_the_argmax_combination_can_win_even_against_a_stronger_product() -> None:
    grouped = GROUPED.grouped_operator_choices()
    cands = [Candidate("skip_connect", None)] + [Candidate(op, 0, idx) for op, idx in grouped]
    # one node, two input edges; edge 0's group argmaxes are dil_conv and 3x3, edge 1's sep_conv and 5x5
    groups = [torch.tensor([[0.2, 0.5, 0.3], [0.5, 0.2, 0.3]]), torch.tensor([[0.6, 0.4], [0.1, 0.9]])]
    mask = group_argmax_mask(cands, groups)
    assert mask is not None and mask.tolist() == [[True, False, False, True, False, False, False],
                                                  [True, False, True, False, False, False, False]]
    # a (hypothetical) stronger sep_conv_5x5 on edge 0 cannot win it
    weights = torch.tensor([[0.0, 0.0, 0.9, 0.1, 0.0, 0.0, 0.0], [0.05, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]])
    (edge,) = derive_cell(weights, cands, 1, [("relu",)] * 2, inputs_per_node=1, allowed=mask)
    assert edge == Edge("dil_conv_3x3", 0, "relu")
    assert group_argmax_mask(cands[:1], []) is None


def test_genotype_of_a_grouped_space_builds_a_discrete_network() -> None:
    net = _grouped()
    with torch.no_grad():
        for cell in ("normal", "reduce"):
            getattr(net, f"alphas_{cell}")[:, FAMILY] = 5.0
            getattr(net, f"group_logits_{cell}_kernel")[:, 1] = 5.0
        net.group_logits_normal_conv[:, 2] = 5.0  # conv_5x5 in normal cells
        net.group_logits_reduce_conv[:, 1] = 5.0  # dil_conv_5x5 in reduction cells
    genotype = Genotype.from_json(derive_genotype(net).to_json())
    assert {e.op for e in genotype.normal} == {"conv_5x5"} and {e.op for e in genotype.reduce} == {"dil_conv_5x5"}
    model = network_cifar(genotype, channels=4, num_classes=4, layers=3, auxiliary=False)
    assert model(torch.randn(2, 3, 8, 8)).shape == (2, 4)
