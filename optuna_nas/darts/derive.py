"""Genotype derivation (DARTS Section 2.4, with A-DARTS's activations and PC-DARTS's γ).

For each intermediate node keep the two incoming edges whose strongest non-``none`` candidate is
strongest (edge strength multiplied by the edge-normalisation weight under PC-DARTS), listed strongest
first as the reference implementation lists them; each kept edge
takes that candidate's operator and, for parameterised operators, its activation: the edge's argmax β
(factorised), the fixed one, the frozen one (Config-A), or the candidate's own (non-factorised).

With operator groups, the family competes on an edge with its α share, softmax(α)[family] (times γ under
PC-DARTS, as any candidate), and the family member is each group's argmax: the same rule as A-DARTS's
activation group, whose β picks the activation but never scales the operator's strength. (Ranking by
the product weight instead would need the family's α to beat the best plain operator by Π|g| while the
groups are still near uniform, so searches would rarely keep a convolution.) The genotype stores the
concrete operator name (``dil_conv_5x5``), so discrete networks need nothing new.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .candidates import Candidate
from .genotypes import CELL_TYPES, Edge, Genotype
from .supernet import SearchNetwork


def derive_cell(
    alpha_weights: torch.Tensor,
    candidates: Sequence[Candidate],
    steps: int,
    edge_activations: Sequence[Sequence[str]],
    edge_weights: torch.Tensor | None = None,
    inputs_per_node: int = 2,
    allowed: torch.Tensor | None = None,
) -> tuple[Edge, ...]:
    """``alpha_weights`` is the weight of each candidate [edges, candidates] (softmax(α), or the product
    weights of a space with operator groups); ``edge_activations[e]`` lists what edge e computes (one
    name, or the whole group in non-factorised mode). ``allowed`` [edges, candidates], when given, says
    which candidates may win each edge (see ``group_argmax_mask``)."""
    strength = alpha_weights.detach().float().clone()
    if edge_weights is not None:
        strength = strength * edge_weights.detach().float().unsqueeze(1)
    if allowed is not None:  # after γ: -inf·γ would be NaN where γ underflows to 0
        strength = strength.masked_fill(~allowed.to(strength.device), float("-inf"))
    usable = [i for i, c in enumerate(candidates) if not c.is_none]
    kept: list[Edge] = []
    start = 0
    for node in range(steps):
        n_in = 2 + node
        rows = strength[start : start + n_in, usable]
        best_value, best_index = rows.max(dim=1)
        # strongest first, ties to the lower input index: the kept edges in DARTS's own order, so a derived
        # genotype equals the reference implementation's and its networks register parameters alike
        order = sorted(range(n_in), key=lambda j: (-float(best_value[j]), j))[:inputs_per_node]
        for j in order:
            cand = candidates[usable[int(best_index[j])]]
            acts = edge_activations[start + j]
            activation = None if cand.activation_index is None else acts[cand.activation_index]
            kept.append(Edge(cand.op, j, activation))
        start += n_in
    return tuple(kept)


def group_argmax_mask(candidates: Sequence[Candidate], group_weights: Sequence[torch.Tensor]) -> torch.Tensor | None:
    """[edges, candidates]: False for each grouped candidate that is not every group's argmax on that edge
    (None without groups). Ties within a group go to the first choice, as ``argmax`` breaks them."""
    if not group_weights:
        return None
    best = torch.stack([w.detach().argmax(dim=1) for w in group_weights], dim=1).cpu()  # [edges, groups]
    mask = torch.ones(best.shape[0], len(candidates), dtype=torch.bool)
    for i, cand in enumerate(candidates):
        if cand.choices:
            mask[:, i] = (best == torch.tensor(cand.choices)).all(dim=1)
    return mask


def derive_genotype(network: SearchNetwork) -> Genotype:
    config = network.config
    candidates, _ = config.edge_candidates()
    cells: dict[str, tuple[Edge, ...]] = {}
    argmax_acts: dict[str, tuple[str, ...]] = {}
    with torch.no_grad():
        for cell_type in CELL_TYPES:
            alpha, beta, gamma = network.architecture_weights(cell_type)
            groups = network.group_weights(cell_type)
            # a grouped operator's strength is its family's α share; the mask keeps only each group's argmax
            strength = alpha.index_select(1, network._slot_index) if groups else alpha
            per_edge = [config.edge_activation_names(cell_type, e) for e in range(config.edges_per_cell)]
            if beta is not None:  # factorised: the edge's activation is its argmax β
                names = config.space.activations
                per_edge = [(names[int(i)],) for i in beta.argmax(dim=1)]
            if not config.activation_mode.expands_activations:
                argmax_acts[cell_type] = tuple(acts[0] for acts in per_edge)
            cells[cell_type] = derive_cell(
                strength, candidates, config.space.steps, per_edge, gamma, config.space.inputs_per_node,
                group_argmax_mask(candidates, groups),
            )
    concat = tuple(range(2, 2 + config.space.steps))
    return Genotype(
        normal=cells["normal"],
        normal_concat=concat,
        reduce=cells["reduce"],
        reduce_concat=concat,
        edge_activations=argmax_acts or None,
    )
