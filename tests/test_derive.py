"""Genotype derivation on hand-set architecture weights."""

from __future__ import annotations

import torch

from optuna_nas.darts.derive import derive_cell, derive_genotype
from optuna_nas.darts.supernet import Candidate
from optuna_nas.genotypes import Edge

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
    assert cell == (
        Edge("sep_conv_3x3", 0, "selu"), Edge("max_pool_3x3", 1, None),  # 'none' never wins an edge
        Edge("skip_connect", 0, None), Edge("dil_conv_5x5", 2, "selu"),
        Edge("max_pool_3x3", 1, None), Edge("sep_conv_5x5", 3, "selu"),
        Edge("avg_pool_3x3", 0, None), Edge("dil_conv_3x3", 4, "selu"),
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
