"""The DARTS search super-network with A-DARTS activation modes and PC-DARTS partial channels.

Architecture parameters, by name (never mixed up):

- ``alphas_*``  α: operator (candidate) logits, one row per edge;
- ``betas_*``   β: A-DARTS activation logits, one row per edge (``factorized`` mode only);
- ``gammas_*``  γ: PC-DARTS edge-normalisation logits, one per edge. PC-DARTS's own code calls these
  "betas"; here they are γ so they never collide with A-DARTS's β. γ is optimised with α.
- ``group_logits_<cell>_<group>``: one row per edge over the choices of an operator group (spaces with
  ``operator_groups``), optimised with α.

Operator groups (A-DARTS's factorisation applied to the operators): α has one column per plain
operator plus one *family* slot, and the grouped operator with choices (i, j, ...) weighs
``softmax(α)[family] · Π_g softmax(group_logits_g)[choice_g]``; the weights of the family's members sum
to the family slot's weight. Every grouped operator is computed, as DARTS computes every operator; the
factorisation cuts the architecture parameters of the family from Π|g| to 1 + Σ|g| per edge. In
``non_factorized`` mode the family slot is expanded per activation like any parameterised operator
(``{conv}_{kernel}@selu`` ...), and every grouped operator is computed once per activation.

Exact simplifications of DARTS's forward pass, chosen for speed and memory (each tested against the
computation it replaces, in float64):

- the ``none`` operator contributes ``w * 0`` to the edge sum, so it is skipped; its α still takes
  part in the softmax that weighs the other operators, so every gradient is unchanged;
- σ(x) is computed once per edge and shared by the parameterised operators (see ``optuna_nas.ops``),
  instead of one copy of ReLU(x) inside each of them; with a fixed σ, once per node for all its edges, and the
  β-mixtures of a node's edges in one call that shares their weight-free passes (``mixture.fused_mixtures``);
- in training, each node's pooling candidates (pooling, then a non-affine BatchNorm) are computed once for
  all the edges reading that node (:meth:`MixedEdge.mix`);
- a PC-DARTS node shuffles its channels once, not once per edge (:meth:`SearchCell.from_activated`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..errors import NasError
from ..layers import BatchNorm2d, batch_norm, cat_channels, pool_batch_norm, shuffled_cat
from ..ops import FactorizedReduce, ReLUConvBN, activation_share_key, create_activation, operation_spec
from .candidates import Candidate, alpha_candidates, candidate_names, edge_candidates
from .genotypes import CELL_TYPES
from .mixture import compiled_mixture, fusable, fused_mixture, fused_mixtures
from .space import ActivationMode, SearchSpace

# DARTS's search network: C=16 with 8 cells (PC-DARTS and A-DARTS search with the same).
SEARCH_CHANNELS, SEARCH_LAYERS = 16, 8


@dataclass(frozen=True)
class SuperNetConfig:
    space: SearchSpace
    activation_mode: ActivationMode
    channels: int = SEARCH_CHANNELS
    layers: int = SEARCH_LAYERS
    num_classes: int = 10
    in_channels: int = 3
    partial_channels: int = 1  # PC-DARTS K: 1/K of the channels go through the mixed operation
    edge_normalization: bool | None = None  # default: on exactly when partial_channels > 1 (PC-DARTS)
    stem_multiplier: int = 3
    recompute_cells: bool = False  # trade one extra forward pass for most of the activation memory
    compile_mixture: bool = False  # torch.compile the β-mixture's element-wise passes (mixture.compiled_mixture)
    # config_a: the frozen per-edge activation names, {"normal": [...], "reduce": [...]}
    frozen_activations: dict[str, tuple[str, ...]] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.layers < 3:
            raise NasError(f"a search network needs at least 3 cells (two are reductions), got {self.layers}")
        if self.channels < 1:
            raise NasError(f"channels must be positive, got {self.channels}")
        k = self.partial_channels
        if k < 1 or self.channels % k or (self.channels // k) % 2:
            raise NasError(
                f"--partial-channels {k} does not divide {self.channels} channels into an even share"
            )
        mode = self.activation_mode
        if mode.freezes_activations:
            acts = self.frozen_activations
            if not acts or any(len(acts.get(c, ())) != self.edges_per_cell for c in CELL_TYPES):
                raise NasError(
                    "config_a needs the activation of every search edge: pass a genotype written by a "
                    "factorized search (it records 'edge_activations')"
                )
        if mode.uses_activation_group and len(self.space.activations) < 1:
            raise NasError(f"{mode} needs an activation group")

    @property
    def edges_per_cell(self) -> int:
        steps = self.space.steps
        return steps * (steps + 3) // 2

    @property
    def use_edge_normalization(self) -> bool:
        return self.partial_channels > 1 if self.edge_normalization is None else self.edge_normalization

    def candidates(self) -> list[Candidate]:
        """The α row of an edge (see :func:`~optuna_nas.darts.candidates.alpha_candidates`)."""
        return alpha_candidates(self.space, self.activation_mode)

    def edge_candidates(self) -> tuple[list[Candidate], list[int]]:
        """What an edge computes and the α column of each (:func:`~optuna_nas.darts.candidates.edge_candidates`)."""
        return edge_candidates(self.space, self.activation_mode)

    def candidate_names(self) -> list[str]:
        return candidate_names(self.space, self.activation_mode)

    def edge_activation_names(self, cell_type: str, edge: int) -> tuple[str, ...]:
        """The activations an edge computes from its input."""
        mode = self.activation_mode
        if mode.fixed is not None:
            return (mode.fixed,)
        if mode.freezes_activations:
            return (self.frozen_activations[cell_type][edge],)  # type: ignore[index]
        return self.space.activations


_RECOMPUTE: ContextVar[bool] = ContextVar("recompute", default=True)


@contextmanager
def recomputation(enabled: bool) -> Iterator[None]:
    """Switch recomputation in backward (β-mixtures, ``recompute_cells``) on or off; it must be off where
    parameters are swapped in by ``functional_call`` (DARTS's unrolled step)."""
    token = _RECOMPUTE.set(enabled)
    try:
        yield
    finally:
        _RECOMPUTE.reset(token)


class EdgeActivation(nn.Module):
    """σ of one edge: one activation, a β-weighted mixture of the group (Eq. 2), or all of them."""

    def __init__(self, names: Sequence[str], mixture: bool, compiled: bool = False) -> None:
        super().__init__()
        self.names = tuple(names)
        self.mixture = mixture
        self.acts = nn.ModuleList(create_activation(n) for n in names)
        self.fused = mixture and fusable(self.acts)  # see mixture.py: same function, fewer passes
        self.compiled = compiled and self.fused

    def forward(self, x: torch.Tensor, beta_weights: torch.Tensor | None) -> list[torch.Tensor]:
        if not self.mixture:
            return [act(x) for act in self.acts]
        assert beta_weights is not None
        if torch.is_grad_enabled() and _RECOMPUTE.get() and not self.fused:
            # Recompute the mixture in the backward pass instead of keeping its intermediate tensors
            # alive: it then costs the memory of one activation per edge, like DARTS. (The fused mixture
            # needs no checkpoint: eager, it keeps its input and RReLU's slopes; compiled, its inputs.)
            return [checkpoint(self._mix, x, beta_weights, use_reentrant=False)]
        return [self._mix(x, beta_weights)]

    def _mix(self, x: torch.Tensor, beta_weights: torch.Tensor) -> torch.Tensor:
        if self.compiled:
            return compiled_mixture(x, beta_weights, self.acts)
        if self.fused:
            return fused_mixture(x, beta_weights, self.acts)
        mixed = beta_weights[0] * self.acts[0](x)
        for w, act in zip(beta_weights[1:], self.acts[1:], strict=True):
            mixed = mixed + w * act(x)
        return mixed


def _split_final_norm(op: nn.Module) -> tuple[nn.Module, nn.BatchNorm2d] | None:
    if isinstance(op, nn.Sequential) and isinstance(op[-1], nn.BatchNorm2d) and not op[-1].affine:
        return op[:-1], op[-1]
    return None


def _use_batch_stats(norm: nn.BatchNorm2d) -> bool:
    return norm.training or norm.running_mean is None


def _momentum(norm: nn.BatchNorm2d) -> float:
    return norm.momentum if norm.momentum is not None else 0.1


def _weighted(op: nn.Module, folded: tuple[nn.Module, nn.BatchNorm2d] | None, x: torch.Tensor,
              w: torch.Tensor) -> torch.Tensor:
    """``w * op(x)``. When ``op`` ends in a non-affine BatchNorm, ``w`` becomes that BatchNorm's scale:
    the same function, but autograd keeps no copy of the normalised output for ``w``'s gradient."""
    if folded is None:
        return w * op(x)
    body, norm = folded
    # .contiguous(): an expanded (stride-0) weight gives wrong gradients in channels-last CPU batch norm
    return _normalised(body, norm, x, w.expand(norm.num_features).contiguous())


def _normalised(body: nn.Module, norm: nn.BatchNorm2d, x: torch.Tensor, scale: torch.Tensor | None) -> torch.Tensor:
    """``norm(body(x))`` for a non-affine ``norm``, scaled by ``scale`` (per channel; None: 1). A pooling body is
    pooled again in backward instead of kept (layers/pooling.py)."""
    use_batch_stats, momentum = _use_batch_stats(norm), _momentum(norm)
    if len(body) == 1:
        pooled = pool_batch_norm(x, body[0], norm.running_mean, norm.running_var, scale, use_batch_stats, momentum,
                                 norm.eps)
        if pooled is not None:
            return pooled
    return batch_norm(body(x), norm.running_mean, norm.running_var, scale, None, use_batch_stats, momentum, norm.eps)


# What a cell's edges reading one node share: candidate index -> (its normalised pooling, the BatchNorm that made it)
SharedPools = dict[int, tuple[torch.Tensor, nn.BatchNorm2d]]


class MixedEdge(nn.Module):
    """One edge of the search cell: Σ_o softmax(α)_o · o(σ(x)) over its candidates, on 1/K of x."""

    def __init__(self, channels: int, stride: int, candidates: Sequence[Candidate],
                 activation: EdgeActivation, partial_channels: int) -> None:
        super().__init__()
        self.k = partial_channels
        self.stride = stride
        self.op_channels = channels // partial_channels
        self.candidates = tuple(candidates)
        self.activation = activation if any(c.activation_index is not None for c in candidates) else None
        ops = []
        for cand in candidates:
            if cand.is_none:
                ops.append(nn.Identity())  # placeholder keeps indices aligned with α; never called
                continue
            body = operation_spec(cand.op).factory(self.op_channels, stride, False)
            if "pool" in cand.op:  # DARTS normalises pooling outputs during search
                body = nn.Sequential(body, BatchNorm2d(self.op_channels, affine=False))
            ops.append(body)
        self.ops = nn.ModuleList(ops)
        # (body without its final BatchNorm, that BatchNorm) where the body ends in a non-affine BatchNorm
        self._folded = [_split_final_norm(op) for op in ops]
        # the pooling candidates: parameter-free, so equal on every edge that reads the same node at the same stride
        self._pools = [f is not None and len(f[0]) == 1 and "pool" in c.op
                       and next(f[0].parameters(), None) is None
                       for f, c in zip(self._folded, self.candidates, strict=True)]
        if self.k > 1 and stride > 1:
            self.bypass_pool = nn.MaxPool2d(2, 2, ceil_mode=True)
        # equal for edges whose σ are the same fixed function: a cell computes it once per node for them
        shares = self.activation is not None and not self.activation.mixture
        self.share_key = activation_share_key(list(self.activation.acts)) if shares else None

    def forward(self, x: torch.Tensor, op_weights: torch.Tensor, beta_weights: torch.Tensor | None) -> torch.Tensor:
        """``op_weights``: one weight per candidate this edge computes (softmax(α) without operator groups)."""
        part, bypass = self.split(x)
        mixed = self.mix(part, self.activate(part, beta_weights), op_weights)
        return mixed if bypass is None else shuffled_cat(mixed, self.bypassed(bypass), self.k)

    def split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(the 1/K of the channels the candidates see, the rest, which bypasses them; None when K = 1). The same
        for every edge of a cell: a cell splits each node once."""
        if self.k == 1:
            return x, None
        # split, not two slices: its backward is one cat in x's memory layout (a slice's is NCHW)
        part, bypass = torch.split(x, [self.op_channels, x.shape[1] - self.op_channels], dim=1)
        return part, bypass

    def bypassed(self, bypass: torch.Tensor) -> torch.Tensor:
        """The channels that bypass the candidates, at the edge's stride (PC-DARTS max-pools them)."""
        return self.bypass_pool(bypass) if self.stride > 1 else bypass

    def activate(self, part: torch.Tensor, beta_weights: torch.Tensor | None) -> list[torch.Tensor]:
        """σ(x) for the candidates that take it (one map per activation)."""
        return self.activation(part, beta_weights) if self.activation is not None else []

    def mix(self, x: torch.Tensor, activated: list[torch.Tensor], op_weights: torch.Tensor,
            shared: SharedPools | None = None) -> torch.Tensor:
        """The weighted sum of the candidates on ``x`` and ``activated`` (before PC-DARTS's shuffle).

        ``shared``: the pooling candidates already normalised by an edge reading the same node at the same
        stride, which this edge reuses (and adds its own to). In training, a pooling candidate with its
        non-affine BatchNorm is the same function of the same input on each such edge, so a cell pools and
        normalises each node once instead of once per edge. Their running statistics stay equal too (equal
        from the start, each batch the same update): the first edge's BatchNorm updates its own, the others copy
        them."""
        out: torch.Tensor | None = None
        for i, (w, cand, op) in enumerate(zip(op_weights, self.candidates, self.ops, strict=True)):
            if cand.is_none:
                continue
            inp = x if cand.activation_index is None else activated[cand.activation_index]
            folded = self._folded[i]
            if shared is not None and self._pools[i] and folded is not None and _use_batch_stats(folded[1]):
                body, norm = folded
                if i in shared:
                    normalised, first = shared[i]
                    if first.running_mean is not None and norm.running_mean is not None:
                        norm.running_mean.copy_(first.running_mean)
                        norm.running_var.copy_(first.running_var)
                else:
                    normalised = _normalised(body, norm, inp, None)
                    shared[i] = normalised, norm
                y = w * normalised
            else:
                y = _weighted(op, folded, inp, w)
            out = y if out is None else out + y
        assert out is not None
        return out


class SearchCell(nn.Module):
    def __init__(self, config: SuperNetConfig, c_prev_prev: int, c_prev: int, channels: int,
                 reduction: bool, reduction_prev: bool) -> None:
        super().__init__()
        self.reduction = reduction
        self.steps = config.space.steps
        self.k = config.partial_channels
        self.share_pools = True  # see MixedEdge.mix; off only to test against the per-edge computation
        cell_type = "reduce" if reduction else "normal"
        if reduction_prev:
            self.preprocess0: nn.Module = FactorizedReduce(c_prev_prev, channels, affine=False)
        else:
            self.preprocess0 = ReLUConvBN(c_prev_prev, channels, 1, 1, 0, affine=False)
        self.preprocess1 = ReLUConvBN(c_prev, channels, 1, 1, 0, affine=False)
        candidates, _ = config.edge_candidates()
        mixture = config.activation_mode.searches_beta
        edges = []
        for node in range(self.steps):
            for src in range(2 + node):
                stride = 2 if reduction and src < 2 else 1
                act = EdgeActivation(config.edge_activation_names(cell_type, len(edges)), mixture,
                                     config.compile_mixture)
                edges.append(MixedEdge(channels, stride, candidates, act, config.partial_channels))
        self.edges = nn.ModuleList(edges)

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, op_w: torch.Tensor,
                beta_w: torch.Tensor | None, edge_w: torch.Tensor | None) -> torch.Tensor:
        return self.from_activated(torch.relu(s0), torch.relu(s1), op_w, beta_w, edge_w)

    def from_activated(self, r0: torch.Tensor, r1: torch.Tensor, op_w: torch.Tensor,
                       beta_w: torch.Tensor | None, edge_w: torch.Tensor | None) -> torch.Tensor:
        """The cell on its inputs' ReLUs (see ``model.Cell.from_activated``)."""
        states = [self.preprocess0.after_relu(r0), self.preprocess1.after_relu(r1)]
        # each node split once (PC-DARTS; its bypass pooled once), and activated once for the edges with the
        # same fixed σ
        splits: dict[int, tuple[torch.Tensor, torch.Tensor | None]] = {}
        activated: dict[tuple[int, str], list[torch.Tensor]] = {}
        pools: dict[int, SharedPools] = {}  # each node's pooling candidates, normalised once for all its edges
        node_mixtures: dict[int, torch.Tensor] = {}  # edge -> its β-mixture, computed with the others of its node
        offset = 0
        for _ in range(self.steps):
            mixed: torch.Tensor | None = None
            rest: torch.Tensor | None = None
            for j, h in enumerate(states):
                e = offset + j
                edge = self.edges[e]
                if j not in splits:
                    part, bypass = edge.split(h)
                    splits[j] = part, None if bypass is None else edge.bypassed(bypass)
                part, bypass = splits[j]
                key = edge.share_key
                if e in node_mixtures:
                    acts = [node_mixtures.pop(e)]
                elif key is None and beta_w is not None and self._fused_node(j):
                    node_mixtures.update(self._node_mixtures(j, part, beta_w))
                    acts = [node_mixtures.pop(e)]
                elif key is None:
                    acts = edge.activate(part, None if beta_w is None else beta_w[e])
                elif (j, key) in activated:
                    acts = activated[j, key]
                else:
                    acts = activated[j, key] = edge.activate(part, None)
                # PC-DARTS sums γ_e·shuffle(cat(Σ_o w_o·o(x_e), bypass_e)) over a node's edges. Shuffle and cat
                # are linear, so that is shuffle(cat(Σ_e Σ_o γ_e·w_o·o(x_e), Σ_e γ_e·bypass_e)): γ_e joins the
                # operator weights (and so each candidate's folded BatchNorm scale), and a node shuffles once
                # instead of once per edge, with no full-width γ_e·map kept per edge for γ's gradient.
                w = op_w[e] if edge_w is None else op_w[e] * edge_w[e]
                # a node read by one edge only (the last before the output) keeps the folded form: nothing to share
                share = self.share_pools and self.steps - max(j - 1, 0) > 1
                y = edge.mix(part, acts, w, pools.setdefault(j, {}) if share else None)
                mixed = y if mixed is None else mixed + y
                if bypass is not None:
                    if edge_w is None:
                        rest = bypass if rest is None else rest + bypass
                    else:
                        rest = edge_w[e] * bypass if rest is None else torch.addcmul(rest, edge_w[e], bypass)
            offset += len(states)
            assert mixed is not None
            states.append(mixed if rest is None else shuffled_cat(mixed, rest, self.k))
        return cat_channels(states[2:])

    def _node_edges(self, node: int) -> list[int]:
        """The edges that read ``node`` (0, 1: the cell's inputs; 2...: its intermediate nodes), in order."""
        return [2 * step + step * (step - 1) // 2 + node for step in range(max(node - 1, 0), self.steps)]

    def _fused_node(self, node: int) -> bool:
        """True when every edge reading ``node`` has an eager fused β-mixture: they are computed together."""
        edges = [self.edges[e].activation for e in self._node_edges(node)]
        return all(a is not None and a.mixture and a.fused and not a.compiled for a in edges)

    def _node_mixtures(self, node: int, part: torch.Tensor, beta_w: torch.Tensor) -> dict[int, torch.Tensor]:
        """The β-mixtures of all the edges reading ``node`` on its (partial) map ``part``, in one call that shares
        their weight-free passes (mixture.fused_mixtures)."""
        edges = self._node_edges(node)
        mixed = fused_mixtures(part, [(beta_w[e], self.edges[e].activation.acts) for e in edges])
        return dict(zip(edges, mixed, strict=True))


class SearchNetwork(nn.Module):
    """DARTS's 8-cell search network (reductions at 1/3 and 2/3 of the depth) with its α, β, γ and group
    logits."""

    def __init__(self, config: SuperNetConfig) -> None:
        super().__init__()
        self.config = config
        steps, c = config.space.steps, config.channels
        c_curr = config.stem_multiplier * c
        self.stem = nn.Sequential(
            nn.Conv2d(config.in_channels, c_curr, 3, padding=1, bias=False), nn.BatchNorm2d(c_curr)
        )
        c_prev_prev, c_prev, c_curr = c_curr, c_curr, c
        cells, reduction_prev = [], False
        for i in range(config.layers):
            reduction = i in (config.layers // 3, 2 * config.layers // 3)
            if reduction:
                c_curr *= 2
            cells.append(SearchCell(config, c_prev_prev, c_prev, c_curr, reduction, reduction_prev))
            reduction_prev = reduction
            c_prev_prev, c_prev = c_prev, steps * c_curr
        self.cells = nn.ModuleList(cells)
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_prev, config.num_classes)
        # Memory saving: keep only each cell's inputs during the forward pass and recompute the cell in
        # backward (about one extra forward pass of time; BatchNorm running statistics then see each
        # batch twice, which only affects the search-time evaluation).
        self.recompute_cells = config.recompute_cells

        edges, n_cand = config.edges_per_cell, len(config.candidates())
        self.alphas_normal = nn.Parameter(1e-3 * torch.randn(edges, n_cand))
        self.alphas_reduce = nn.Parameter(1e-3 * torch.randn(edges, n_cand))
        if config.activation_mode.searches_beta:
            n_act = len(config.space.activations)
            self.betas_normal = nn.Parameter(1e-3 * torch.randn(edges, n_act))
            self.betas_reduce = nn.Parameter(1e-3 * torch.randn(edges, n_act))
        if config.use_edge_normalization:
            self.gammas_normal = nn.Parameter(1e-3 * torch.randn(edges))
            self.gammas_reduce = nn.Parameter(1e-3 * torch.randn(edges))
        # operator groups: created last, so spaces without groups draw exactly the random numbers they did
        self.group_names = tuple(g for g, _ in config.space.operator_groups)
        for cell_type in CELL_TYPES:
            for group, choices in config.space.operator_groups:
                logits = nn.Parameter(1e-3 * torch.randn(edges, len(choices)))
                setattr(self, f"group_logits_{cell_type}_{group}", logits)
        if self.group_names:
            # edge candidate -> its α column, and its choice per group (+1; column 0 is 1.0 for plain operators)
            cands, slots = config.edge_candidates()
            self.register_buffer("_slot_index", torch.tensor(slots), persistent=False)
            for g, group in enumerate(self.group_names):
                index = torch.tensor([c.choices[g] + 1 if c.choices else 0 for c in cands])
                self.register_buffer(f"_choice_index_{group}", index, persistent=False)

    # ---- parameter groups: each optimiser gets exactly its own
    def alpha_parameters(self) -> list[nn.Parameter]:
        """α, PC-DARTS's edge-normalisation γ (stepped with α as in PC-DARTS), and the operator-group logits
        (stepped with α: they split the family's α slot)."""
        names = ["alphas_normal", "alphas_reduce", "gammas_normal", "gammas_reduce"]
        names += [f"group_logits_{c}_{g}" for c in CELL_TYPES for g in self.group_names]
        return [getattr(self, n) for n in names if hasattr(self, n)]

    def beta_parameters(self) -> list[nn.Parameter]:
        return [getattr(self, n) for n in ("betas_normal", "betas_reduce") if hasattr(self, n)]

    def weight_parameters(self) -> list[nn.Parameter]:
        arch = {id(p) for p in self.alpha_parameters() + self.beta_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def architecture_weights(self, cell_type: str) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """softmax(α), softmax(β) and the per-node softmax of γ for one cell type."""
        alpha = F.softmax(getattr(self, f"alphas_{cell_type}"), dim=-1)
        beta = getattr(self, f"betas_{cell_type}", None)
        beta = None if beta is None else F.softmax(beta, dim=-1)
        gamma = getattr(self, f"gammas_{cell_type}", None)
        if gamma is not None:
            parts, start = [], 0
            for node in range(self.config.space.steps):
                parts.append(F.softmax(gamma[start : start + 2 + node], dim=-1))
                start += 2 + node
            gamma = torch.cat(parts)
        return alpha, beta, gamma

    @torch.no_grad()
    def architecture_summary(self, digits: int = 4) -> dict[str, dict[str, Any]]:
        """softmax(α) (one column per α slot, ``config.candidate_names()``), softmax(β) and γ of each cell type,
        as plain lists: what a search records per epoch to show how the architecture evolves."""
        def plain(weights: torch.Tensor | None) -> Any:
            return None if weights is None else torch.round(weights.float().cpu(), decimals=digits).tolist()

        summary = {}
        for cell_type in CELL_TYPES:
            alpha, beta, gamma = self.architecture_weights(cell_type)
            summary[cell_type] = {"alpha": plain(alpha), "beta": plain(beta), "gamma": plain(gamma)}
        return summary

    def group_weights(self, cell_type: str) -> list[torch.Tensor]:
        """softmax of each operator group's logits, [edges, choices], in group order (empty without groups)."""
        return [F.softmax(getattr(self, f"group_logits_{cell_type}_{g}"), dim=-1) for g in self.group_names]

    def candidate_weights(self, alpha: torch.Tensor, groups: Sequence[torch.Tensor]) -> torch.Tensor:
        """[edges, edge candidates]: a plain candidate's weight is its softmax(α); a grouped operator's is
        softmax(α)[family slot] · Π_g softmax(group g)[its choice]. Without groups, ``alpha`` itself."""
        if not groups:
            return alpha
        weights = alpha.index_select(1, self._slot_index)
        for group, w in zip(self.group_names, groups, strict=True):
            padded = torch.cat([w.new_ones(w.shape[0], 1), w], dim=1)
            weights = weights * padded.index_select(1, getattr(self, f"_choice_index_{group}"))
        return weights

    def operator_weights(self, cell_type: str) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """What the cells use: the weight of every edge candidate (see ``candidate_weights``), softmax(β), γ."""
        alpha, beta, gamma = self.architecture_weights(cell_type)
        return self.candidate_weights(alpha, self.group_weights(cell_type)), beta, gamma

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = {t: self.operator_weights(t) for t in CELL_TYPES}
        s1 = self.stem(x)
        recompute = self.recompute_cells and torch.is_grad_enabled() and _RECOMPUTE.get()
        # the ReLU of each cell output once for the two cells that read it (as model.DiscreteNetwork)
        r0 = r1 = torch.relu(s1)
        for i, cell in enumerate(self.cells):
            args = (r0, r1, *weights["reduce" if cell.reduction else "normal"])
            run = cell.from_activated
            s1 = checkpoint(run, *args, use_reentrant=False) if recompute else run(*args)
            r0 = r1
            if i + 1 < len(self.cells):
                r1 = torch.relu(s1)
        return self.classifier(self.global_pooling(s1).flatten(1))
