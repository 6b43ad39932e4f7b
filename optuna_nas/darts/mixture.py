"""The β-weighted activation mixture of Eq. 2 in few element-wise passes.

Computed one activation at a time, Σ_k w_k·f_k(x) over the paper's nine activations takes about 26
passes over the edge's tensor. All of them are x for x > 0 (up to a scale, or a clip for ReLU6) and one
of three shapes for x <= 0: a multiple of x, a multiple of expm1(x/α), or Swish. So the mixture is

    P·relu(x) + N·min(x, 0) + Σ_α E_α·expm1(min(x, 0)/α) + w_relu6·clamp(x, 0, 6) + w_swish·x·σ(b·x)

with P, N, E_α scalar sums of the weights: the same function in about ten passes. Activations outside
this family (a user's own) keep the one-at-a-time path.

Its gradient is written out by hand (:class:`_FusedMixture`): autograd of the closed form keeps a dozen
intermediate maps, or recomputes them all under a checkpoint and then walks about 35 backward passes; the
hand-written backward keeps only x (and RReLU's random slope levels in training) and takes about 20 passes, ATen's
one-pass activation backwards (ReLU, hardtanh, SiLU, sigmoid) and dot products doing most of it. Their temporaries
come from a pool (scratch.py), and on CPU their coefficients are Python numbers (``_NUMBER_COEFFICIENTS``).

The edges that read one node mix the same x under their own weights, so a search cell computes them in one
call (:func:`fused_mixtures`, :class:`_NodeMixture`): relu(x), min(x, 0), expm1 and clamp(x, 0, 6) once per node
instead of once per edge, and in backward the edges' gradients summed per term before one set of masks.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from timm.layers.activations import PReLU as TimmPReLU
from torch import nn
from torch.autograd.function import once_differentiable

from ..ops import LearnableSwish
from .scratch import ScratchMaps, blocks, like_layout

# SELU(x) = λ·(x if x > 0 else α·expm1(x))
_SELU_LAMBDA = 1.0507009873554804934193349852946
_SELU_ALPHA = 1.6732632423543772848170429916717
# exact types: a subclass may compute something else (timm's PReLU only adds an unused `inplace` flag)
_FUSABLE = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, TimmPReLU, nn.RReLU, nn.ELU, nn.CELU, nn.SELU, LearnableSwish)


def fusable(acts: Sequence[nn.Module]) -> bool:
    """True when every activation has a closed form above (one-parameter PReLU included)."""
    return all(type(a) in _FUSABLE and not (isinstance(a, nn.PReLU) and a.weight.numel() != 1) for a in acts)


# One term beyond P, N and E_α: ("relu6", w), ("swish", w, b) or ("rrelu", w, lower, upper) in activation order
Extra = tuple[Any, ...]


def mixture_terms(weights: torch.Tensor, acts: Sequence[nn.Module]) -> tuple[Any, ...]:
    """The scalars of the closed form above: (P, N, ((α, E_α), ...), extras). Scalar work only, so the
    element-wise part (:func:`mixture_from_terms`) sees tensors and plain numbers, never modules."""
    pos_coef = weights.new_zeros(())
    neg_coef = weights.new_zeros(())
    expm1_coef: dict[float, torch.Tensor] = {}
    extras: list[Extra] = []
    for w, act in zip(weights, acts, strict=True):
        if isinstance(act, nn.ReLU6):
            extras.append(("relu6", w))
        elif isinstance(act, LearnableSwish):
            extras.append(("swish", w, act.b))
        elif isinstance(act, nn.SELU):
            pos_coef = pos_coef + w * _SELU_LAMBDA
            expm1_coef[1.0] = expm1_coef.get(1.0, 0.0) + w * (_SELU_LAMBDA * _SELU_ALPHA)
        else:
            pos_coef = pos_coef + w
            if isinstance(act, nn.LeakyReLU):
                neg_coef = neg_coef + w * act.negative_slope
            elif isinstance(act, nn.PReLU):
                neg_coef = neg_coef + w * act.weight[0]
            elif isinstance(act, nn.RReLU):
                if act.training:  # a random slope per element, as nn.RReLU draws in training
                    extras.append(("rrelu", w, float(act.lower), float(act.upper)))
                else:
                    neg_coef = neg_coef + w * ((act.lower + act.upper) / 2)
            elif isinstance(act, nn.ELU):  # α·expm1(x): the α=1 term, scaled by α
                expm1_coef[1.0] = expm1_coef.get(1.0, 0.0) + w * act.alpha
            elif isinstance(act, nn.CELU):
                alpha = float(act.alpha)
                expm1_coef[alpha] = expm1_coef.get(alpha, 0.0) + w * alpha
    return pos_coef, neg_coef, tuple(expm1_coef.items()), tuple(extras)


# RReLU's random slopes as 16-bit levels: slope = (lower + upper)/2 + (upper - lower)·(level + 1/2)/2^16 with
# level a signed int16, uniform over 65,536 evenly spaced values in [lower, upper) with nn.RReLU's mean. torch's
# CPU generator is serial and costs about the same per draw for a float32 as for an int64, so four levels cut
# from each int64 drawn over its full range (each 16-bit lane uniform) take well under half the time of one float
# per element (0.70 against 2.0 ms at 64x16x32x32), and keeping int16 levels for backward halves the slopes'
# memory. A spacing of 3.2e-6 between slopes is far below anything training can tell apart from a continuous draw.
_LEVEL_BITS = 16


def _level_scale(lower: float, upper: float) -> tuple[float, float]:
    """(a, s) with slope = a + s·level, level in [-2^15, 2^15)."""
    s = (upper - lower) / (1 << _LEVEL_BITS)
    return (lower + upper) / 2 + s / 2, s


def rrelu_levels(x: torch.Tensor, extras: tuple[Extra, ...]) -> tuple[torch.Tensor, ...]:
    """For each training RReLU among ``extras``, in activation order, one random level per element of ``x``
    (int16, uniform over all its values, laid out like ``x``; see :func:`slopes_from_levels`)."""
    return tuple(_random_levels(x) for e in extras if e[0] == "rrelu")


def _random_levels(x: torch.Tensor) -> torch.Tensor:
    n = x.numel()
    words = torch.empty((n + 3) // 4, dtype=torch.int64, device=x.device).random_(-(1 << 63), None)
    flat = words.view(torch.int16)[:n]
    if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        batch, channels, height, width = x.shape
        return flat.view(batch, height, width, channels).permute(0, 3, 1, 2)
    return flat.view(x.shape)


def slopes_from_levels(levels: torch.Tensor, lower: float, upper: float, dtype: torch.dtype) -> torch.Tensor:
    """RReLU's slopes from :func:`rrelu_levels`: uniform in [lower, upper) in steps of (upper - lower)/2^16."""
    a, s = _level_scale(lower, upper)
    return levels.to(dtype).mul_(s).add_(a)


def rrelu_slopes(x: torch.Tensor, extras: tuple[Extra, ...]) -> tuple[torch.Tensor, ...]:
    """One random slope per element of ``x`` for each training RReLU among ``extras``, in activation order (the
    slopes of :func:`rrelu_levels`, so eager and compiled mixtures draw the same under one seed)."""
    rrelus = [e for e in extras if e[0] == "rrelu"]
    levels = rrelu_levels(x, tuple(rrelus))
    return tuple(slopes_from_levels(u, e[2], e[3], x.dtype) for u, e in zip(levels, rrelus, strict=True))


def mixture_from_terms(x: torch.Tensor, pos_coef: torch.Tensor, neg_coef: torch.Tensor,
                       expm1_terms: tuple[tuple[float, torch.Tensor], ...], extras: tuple[Extra, ...],
                       slopes: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """The element-wise passes of the closed form (what ``torch.compile`` fuses, see :func:`compiled_mixture`);
    ``slopes``: :func:`rrelu_slopes`."""
    pos = torch.relu(x)
    neg = x - pos
    out = pos * pos_coef + neg * neg_coef
    for alpha, coef in expm1_terms:
        out = out + coef * torch.expm1(neg / alpha if alpha != 1.0 else neg)
    rrelu = iter(slopes)
    for extra in extras:
        kind, w = extra[0], extra[1]
        if kind == "relu6":
            out = out + w * x.clamp(0.0, 6.0)
        elif kind == "swish":
            out = out + w * x * torch.sigmoid(extra[2] * x)
        else:
            out = out + w * neg * next(rrelu)
    return out


def _flat_pair(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``a`` and ``b`` as 1-D views with the same element order, where their layouts allow it."""
    if a.is_contiguous() and b.is_contiguous():
        return a.view(-1), b.view(-1)
    last = torch.channels_last
    if a.dim() == 4 and a.is_contiguous(memory_format=last) and b.is_contiguous(memory_format=last):
        return a.permute(0, 2, 3, 1).reshape(-1), b.permute(0, 2, 3, 1).reshape(-1)
    return None


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Σ a·b in one pass without a temporary (a weight's gradient)."""
    flat = _flat_pair(a, b)
    return torch.dot(*flat) if flat is not None else (a * b).sum()


def _term_layout(terms: tuple[Any, ...]) -> tuple[tuple[Any, ...], list[torch.Tensor]]:
    """(the static structure of :func:`mixture_terms`'s result, its scalar tensors in order)."""
    pos_coef, neg_coef, expm1_terms, extras = terms
    scalars = [pos_coef, neg_coef, *(coef for _, coef in expm1_terms)]
    kinds: list[tuple[Any, ...]] = []
    for extra in extras:
        if extra[0] == "swish":
            scalars.extend(extra[1:3])
            kinds.append(("swish",))
        elif extra[0] == "rrelu":  # with its slope's scale: ("rrelu", a, s), slope = a + s·level
            scalars.append(extra[1])
            kinds.append(("rrelu", *_level_scale(*extra[2:])))
        else:
            scalars.append(extra[1])
            kinds.append((extra[0],))
    return (tuple(alpha for alpha, _ in expm1_terms), tuple(kinds)), scalars


# Devices where the mixtures' coefficients become Python numbers before the element-wise passes. ATen takes a
# number where it takes no 0-dim tensor (addcmul's value, add's alpha), which fuses a multiply into the pass that
# follows it, and arithmetic on numbers skips a dispatch per operation (thousands per search step). Reading a
# number from a tensor waits for its device, which a CPU tensor never does, but a CUDA one would at every call.
_NUMBER_COEFFICIENTS = frozenset({"cpu"})
Coef = float | torch.Tensor


def _coefficients(scalars: Sequence[torch.Tensor], x: torch.Tensor) -> list[Coef]:
    """The scalars as Python numbers on the devices of ``_NUMBER_COEFFICIENTS``, else as 0-dim tensors of x's
    dtype."""
    if x.device.type in _NUMBER_COEFFICIENTS:
        return [s.item() for s in scalars]
    return [s.to(x.dtype) for s in scalars]


def _add_scaled(out: torch.Tensor, t: torch.Tensor, coef: Coef) -> None:
    """out += coef·t in one pass."""
    if isinstance(coef, torch.Tensor):
        out.addcmul_(t, coef)
    else:
        out.add_(t, alpha=coef)


def _add_product(out: torch.Tensor, a: torch.Tensor, b: torch.Tensor, coef: Coef, scratch: torch.Tensor) -> None:
    """out += coef·a·b: one pass for a number, two for a tensor (a·b into ``scratch``, which may be ``a``)."""
    if isinstance(coef, torch.Tensor):
        out.addcmul_(torch.mul(a, b, out=scratch), coef)
    else:
        out.addcmul_(a, b, value=coef)


class _FusedMixture(torch.autograd.Function):
    """:func:`mixture_from_terms` keeping only x (and RReLU's random slopes in training, as int16 levels:
    drawing them again would cost more than the rest of the backward), its backward written out.

    Both directions work in a few scratch maps reused through ``out=`` and in-place ops: a fresh feature map
    costs more than the pass that fills it (new pages from the kernel on CPU: at 64x16x32x32, an out-of-place
    sigmoid takes 1.1 ms and an in-place one 0.13 ms)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, layout: tuple[Any, ...], levels: tuple[torch.Tensor, ...],
                *scalars: torch.Tensor) -> torch.Tensor:
        alphas, kinds = layout
        c = _coefficients(scalars, x)
        out = torch.clamp(x, min=0.0).mul_(c[0])
        with ScratchMaps(x) as maps:
            neg = torch.clamp(x, max=0.0, out=maps.new())  # min(x, 0) = x - relu(x)
            _add_scaled(out, neg, _neg_coef(layout, c))
            scratch = maps.new()
            if alphas:
                factor = maps.new()
            for alpha, coef in zip(alphas, c[2:], strict=False):
                out.addcmul_(*_expm1_factors(neg, alpha, coef, scratch, factor))
            _add_extra_terms(out, x, neg, kinds, c[2 + len(alphas):], iter(levels), scratch)
        ctx.save_for_backward(x, *levels, *scalars)
        ctx.layout = layout
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        alphas, kinds = ctx.layout
        x, *saved = ctx.saved_tensors
        n_levels = sum(kind[0] == "rrelu" for kind in kinds)
        levels, scalars = iter(saved[:n_levels]), saved[n_levels:]
        need = ctx.needs_input_grad[3:]
        c = _coefficients(scalars, x)
        grads: list[torch.Tensor | None] = [None] * len(scalars)
        with ScratchMaps(x) as maps:
            neg = torch.clamp(x, max=0.0, out=maps.new())  # min(x, 0); its slope is 1 where x <= 0, as autograd
            scratch = maps.new()                           # takes x - relu(x)
            if need[0]:
                grads[0] = _dot(grad, torch.clamp(x, min=0.0, out=scratch))
            grad_neg = _dot(grad, neg) if need[1] or any(need[i] for i, _, _ in _rrelu_scales(ctx.layout)) else None
            grads[1] = grad_neg if need[1] else None
            # the slope of the mixture where x <= 0 beyond N and RReLU's mean slopes (expm1 terms, the random
            # part of RReLU's slopes), summed here
            neg_slope: torch.Tensor | None = None
            for j, alpha in enumerate(alphas):
                e = _exp_minus_one(neg, alpha, scratch)
                if need[2 + j]:
                    grads[2 + j] = _dot(grad, e)
                # d/dx E·expm1(x/α) = (E/α)·exp(x/α) = (E/α)·(expm1 + 1)
                if neg_slope is None:
                    neg_slope, scratch = e.add_(1.0).mul_(c[2 + j] / alpha), maps.new()
                else:
                    _add_scaled(neg_slope, e.add_(1.0), c[2 + j] / alpha)
            i = 2 + len(alphas)
            extras = []  # (kind, scalar index) of the terms that add to the gradient on both sides of 0
            for kind in kinds:
                if kind[0] == "rrelu":  # slope a + s·level: a joined N's coefficient, s·level is per element
                    _, a, s = kind
                    level = scratch.copy_(next(levels))
                    if neg_slope is None:
                        neg_slope = torch.mul(level, c[i] * s, out=maps.new())
                    else:
                        _add_scaled(neg_slope, level, c[i] * s)
                    if need[i]:
                        grads[i] = a * grad_neg + s * _dot(grad, level.mul_(neg))
                else:
                    extras.append((kind[0], i))
                i += 1 + (kind[0] == "swish")
            # the gradient where x > 0 and where x <= 0 by ReLU's one-pass backward (torch.where with a mask is
            # not vectorised on CPU: 2 ms against 0.2 ms at 64x16x32x32)
            grad_x = torch.ops.aten.threshold_backward(grad, x, 0.0)
            below = torch.sub(grad, grad_x, out=scratch)
            neg_coef = _neg_coef(ctx.layout, c)
            grad_x.mul_(c[0])
            if neg_slope is None:
                _add_scaled(grad_x, below, neg_coef)
            else:
                grad_x.addcmul_(below, neg_slope.add_(neg_coef))
            for kind, i in extras:
                if kind == "relu6":
                    if need[i]:
                        grads[i] = _dot(grad, torch.clamp(x, 0.0, 6.0, out=scratch))
                    _add_scaled(grad_x, torch.ops.aten.hardtanh_backward.grad_input(grad, x, 0.0, 6.0,
                                                                                     grad_input=scratch), c[i])
                else:
                    z = torch.mul(x, c[i + 1], out=scratch)
                    other = neg  # no longer needed
                    _add_scaled(grad_x, torch.ops.aten.silu_backward.grad_input(grad, z, grad_input=other), c[i])
                    grads[i], grads[i + 1] = _swish_scalar_grads(grad, x, None, z, other, c[i], need[i:i + 2])
        scalar_grads = [None if g is None else g.to(s.dtype) for g, s in zip(grads, scalars, strict=True)]
        return grad_x if ctx.needs_input_grad[0] else None, None, None, *scalar_grads


def _neg_coef(layout: tuple[Any, ...], c: Sequence[Coef]) -> Coef:
    """The coefficient of min(x, 0): N plus w·a of each training RReLU term w·min(x, 0)·(a + s·level), whose
    mean slope a thus joins N's pass, leaving only s·level per element."""
    neg_coef = c[1]
    for i, a, _ in _rrelu_scales(layout):
        neg_coef = neg_coef + c[i] * a
    return neg_coef


def _add_extra_terms(out: torch.Tensor, x: torch.Tensor, neg: torch.Tensor, kinds: tuple[tuple[Any, ...], ...],
                     c: Sequence[Coef], levels: Iterator[torch.Tensor], scratch: torch.Tensor | None,
                     relu6: torch.Tensor | None = None) -> None:
    """Adds the terms beyond P, N and E_α to ``out`` in place: ``c`` holds their scalars in layout order,
    ``levels`` iterates over RReLU's int16 levels, ``relu6`` is clamp(x, 0, 6) when the caller has it already."""
    i = 0
    for kind in kinds:
        if kind[0] == "relu6":
            _add_scaled(out, relu6 if relu6 is not None else torch.clamp(x, 0.0, 6.0, out=scratch), c[i])
        elif kind[0] == "swish":
            _add_product(out, torch.mul(x, c[i + 1], out=scratch).sigmoid_(), x, c[i], scratch)
            i += 1
        else:  # one random slope per element: the w·s·level part
            # copied into scratch first: an int16 operand would make ATen cast it into a fresh map
            _add_product(out, scratch.copy_(next(levels)), neg, c[i] * kind[2], scratch)
        i += 1


def _swish_scalar_grads(grad: torch.Tensor, x: torch.Tensor, square: torch.Tensor | None, z: torch.Tensor,
                        out: torch.Tensor, w: Coef, need: Sequence[bool]
                        ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The gradients of a Swish term w·x·σ(z), z = b·x, to w (Σ grad·x·σ(z)) and to b (w·Σ grad·σ(z)(1 - σ(z))·x²),
    where ``need`` asks for them; ``square`` is x² (or None: computed here), ``z`` and ``out`` are overwritten."""
    if not any(need):
        return None, None
    sig = z.sigmoid_()
    grad_w = _dot(torch.mul(grad, sig, out=out), x) if need[0] else None
    grad_b = None
    if need[1]:
        slope = torch.ops.aten.sigmoid_backward.grad_input(grad, sig, grad_input=out)  # grad·σ(1 - σ)
        grad_b = w * (_dot(slope, square) if square is not None else _dot(slope.mul_(x), x))
    return grad_w, grad_b


def _rrelu_scales(layout: tuple[Any, ...]) -> list[tuple[int, float, float]]:
    """(scalar index, a, s) of each training RReLU term of a layout (see :func:`_term_layout`)."""
    alphas, kinds = layout
    found, i = [], 2 + len(alphas)
    for kind in kinds:
        if kind[0] == "rrelu":
            found.append((i, *kind[1:]))
        i += 1 + (kind[0] == "swish")
    return found


# expm1 of min(x, 0) without torch.expm1: some CPU builds of torch run expm1 (and tanh, log) through a scalar
# libm loop, while exp is vectorised in all of them. Measured at 64x16x32x32 float32 on a 2-core AMD EPYC with
# torch 2.14.1: expm1 5.1 ms, exp 0.64 ms, tanh 1.8 ms, the forward's form below 2.4 ms; expm1 was 13% of a
# factorized search step under the profiler.


def _expm1_factors(neg: torch.Tensor, alpha: float, coef: torch.Tensor, t: torch.Tensor,
                   factor: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(t, f) with t·f = coef·expm1(neg/α) for neg <= 0, written into the maps ``t`` and ``factor``.

    expm1(y) = 2·tanh(y/2) / (1 - tanh(y/2)): for y <= 0, 1 - tanh(y/2) lies in [1, 2], so nothing cancels and
    the result keeps expm1's relative accuracy near 0 (within 3 float32 ulps of expm1, by test), which
    exp(y) - 1 loses there; y = -inf gives -1."""
    torch.mul(neg, 0.5 / alpha, out=t).tanh_()
    torch.neg(t, out=factor).add_(1.0).reciprocal_().mul_(2.0 * coef)
    return t, factor


def _exp_minus_one(neg: torch.Tensor, alpha: float, out: torch.Tensor) -> torch.Tensor:
    """exp(neg/α) - 1 into ``out``, for the backward: its slope needs exp(neg/α) itself (this plus 1), and the
    weight's gradient Σ grad·expm1 takes the absolute error of the subtraction, at most half an ulp of 1 per
    element."""
    if alpha != 1.0:
        return torch.exp(torch.div(neg, alpha, out=out), out=out).sub_(1.0)
    return torch.exp(neg, out=out).sub_(1.0)


def fused_mixture(x: torch.Tensor, weights: torch.Tensor, acts: Sequence[nn.Module]) -> torch.Tensor:
    """Σ_k weights[k]·acts[k](x) for activations accepted by :func:`fusable` (see :class:`_FusedMixture`)."""
    terms = mixture_terms(weights, acts)
    layout, scalars = _term_layout(terms)
    return _FusedMixture.apply(x, layout, rrelu_levels(x, terms[3]), *scalars)


def fused_mixtures(x: torch.Tensor, mixtures: Sequence[tuple[torch.Tensor, Sequence[nn.Module]]]) -> list[torch.Tensor]:
    """:func:`fused_mixture` of one input under several (weights, activations): the β-mixtures of all the edges
    that read one node. Mixtures with the same structure (the same activation types, which every edge of a
    cell has) share the passes that do not depend on their weights (see :class:`_NodeMixture`)."""
    outs: list[torch.Tensor | None] = [None] * len(mixtures)
    groups: dict[tuple[Any, ...], list[tuple[int, list[torch.Tensor], tuple[torch.Tensor, ...]]]] = {}
    for k, (weights, acts) in enumerate(mixtures):
        terms = mixture_terms(weights, acts)
        layout, scalars = _term_layout(terms)
        groups.setdefault(layout, []).append((k, scalars, rrelu_levels(x, terms[3])))
    for layout, members in groups.items():
        if len(members) == 1:  # nothing to share: the single mixture's own passes are fewer
            (k, scalars, levels), = members
            outs[k] = _FusedMixture.apply(x, layout, levels, *scalars)
            continue
        levels = tuple(lv for _, _, edge_levels in members for lv in edge_levels)
        scalars = [s for _, edge_scalars, _ in members for s in edge_scalars]
        results = _NodeMixture.apply(x, layout, len(members), levels, *scalars)
        for (k, _, _), out in zip(members, results, strict=True):
            outs[k] = out
    return outs  # type: ignore[return-value]


class _NodeMixture(torch.autograd.Function):
    """Several :class:`_FusedMixture` of one input x: relu(x), min(x, 0), each expm1(min(x, 0)/α) and
    clamp(x, 0, 6) computed once for all of them, and in backward, the gradients the mixtures send to x summed
    per term (Σ_e P_e·g_e, ...) before the one-pass masks apply them. Per mixture this leaves its scalar
    multiples, Swish and RReLU's random slopes: about 9 passes forward instead of 20. On CPU both directions go
    block by block (scratch.blocks), so that those passes read the caches, not memory."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, layout: tuple[Any, ...], count: int, levels: tuple[torch.Tensor, ...],
                *scalars: torch.Tensor) -> tuple[torch.Tensor, ...]:
        alphas, kinds = layout
        per = len(scalars) // count
        coefs = [_coefficients(scalars[m * per:(m + 1) * per], x) for m in range(count)]
        neg_coefs = [_neg_coef(layout, c) for c in coefs]  # once per call, not per block
        outs = [torch.empty_like(x) for _ in range(count)]
        like, pieces = blocks(x, [*outs, *levels])
        with ScratchMaps(like) as maps:
            has_relu6 = any(k[0] == "relu6" for k in kinds)
            work = [maps.new() for _ in range(3 + has_relu6 + len(alphas))]
            for piece in pieces:
                xb, out_blocks, level_blocks = piece[0], piece[1:1 + count], iter(piece[1 + count:])
                pos, neg, scratch, *rest = (_fit(w, xb) for w in work)
                torch.clamp(xb, min=0.0, out=pos)
                torch.clamp(xb, max=0.0, out=neg)
                relu6 = torch.clamp(xb, 0.0, 6.0, out=rest.pop()) if has_relu6 else None
                half_expm1 = [_half_expm1(neg, alpha, out, scratch) for alpha, out in zip(alphas, rest, strict=True)]
                for out, c, neg_coef in zip(out_blocks, coefs, neg_coefs, strict=True):
                    torch.mul(pos, c[0], out=out)
                    _add_scaled(out, neg, neg_coef)
                    for half, coef in zip(half_expm1, c[2:], strict=False):
                        _add_scaled(out, half, 2.0 * coef)
                    _add_extra_terms(out, xb, neg, kinds, c[2 + len(alphas):], level_blocks, scratch, relu6)
        ctx.save_for_backward(x, *levels, *scalars)
        ctx.layout, ctx.count = layout, count
        return tuple(outs)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, *grads: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        alphas, kinds = ctx.layout
        count = ctx.count
        x, *saved = ctx.saved_tensors
        n_levels = count * sum(kind[0] == "rrelu" for kind in kinds)
        levels, scalars = saved[:n_levels], saved[n_levels:]
        per = len(scalars) // count
        need = ctx.needs_input_grad[4:]
        coefs = [_coefficients(scalars[m * per:(m + 1) * per], x) for m in range(count)]
        neg_coefs = [_neg_coef(ctx.layout, c) for c in coefs]  # once per call, not per block
        block_sums: list[list[torch.Tensor]] = [[] for _ in scalars]  # each scalar's gradient, block by block
        grad_x = torch.empty_like(x) if ctx.needs_input_grad[0] else None
        grads = tuple(like_layout(g, x) for g in grads)
        like, pieces = blocks(x, [*grads, *levels, *([grad_x] if grad_x is not None else [])])
        with ScratchMaps(like) as maps:
            work = [maps.new() for _ in range(_backward_maps(ctx.layout, any(need)))]
            for piece in pieces:
                xb, grad_blocks = piece[0], piece[1:1 + count]
                level_blocks = iter(piece[1 + count:1 + count + n_levels])
                grad_x_block = piece[-1] if grad_x is not None else None
                found = _NodeMixture._block_backward(ctx.layout, coefs, neg_coefs, need, xb, grad_blocks,
                                                     level_blocks, grad_x_block, [_fit(w, xb) for w in work])
                for parts, part in zip(block_sums, found, strict=True):
                    if part is not None:
                        parts.append(part)
        scalar_grads = [None if not parts else (parts[0] if len(parts) == 1 else torch.stack(parts).sum()).to(s.dtype)
                        for parts, s in zip(block_sums, scalars, strict=True)]
        return grad_x, None, None, None, *scalar_grads

    @staticmethod
    def _block_backward(layout: tuple[Any, ...], coefs: list[list[Coef]], neg_coefs: list[Coef], need: Sequence[bool],
                        x: torch.Tensor, grads: Sequence[torch.Tensor], levels: Iterator[torch.Tensor],
                        grad_x: torch.Tensor | None, work: list[torch.Tensor]) -> list[torch.Tensor | None]:
        """The backward on one block: writes x's gradient into ``grad_x`` (when given) and returns the block's
        share of every scalar's gradient (a sum over elements). ``neg_coefs``: each mixture's :func:`_neg_coef`;
        ``work``: :func:`_backward_maps` scratch maps."""
        alphas, kinds = layout
        per = len(need) // len(grads)
        rrelu_at = {i for i, _, _ in _rrelu_scales(layout)}
        spare = iter(work)
        pos = torch.clamp(x, min=0.0, out=next(spare))
        neg = torch.clamp(x, max=0.0, out=next(spare))  # min(x, 0); its slope is 1 where x <= 0, as autograd
        exp_m1 = [_exp_minus_one(neg, alpha, next(spare)) for alpha in alphas]  # takes x - relu(x)
        relu6 = torch.clamp(x, 0.0, 6.0, out=next(spare)) if any(k[0] == "relu6" for k in kinds) else None
        square = None  # x², for the gradients of Swish's b
        if any(k[0] == "swish" for k in kinds) and any(need):
            square = torch.mul(x, x, out=next(spare))
        scratch = next(spare)
        # what the mixtures send to x, summed over them before the masks: Σ P·g (where x > 0), Σ N·g plus
        # RReLU's Σ w·slope·g (x <= 0), Σ (E/α)·g per α (x <= 0, times exp(x/α)), Σ w·g of ReLU6
        # (0 < x < 6), and Swish's
        above = below = relu6_sum = swish_sum = swish_scratch = None
        exp_sums: list[torch.Tensor | None] = [None] * len(alphas)
        scalar_grads: list[torch.Tensor | None] = [None] * len(need)
        for m, (grad, c, neg_coef) in enumerate(zip(grads, coefs, neg_coefs, strict=True)):
            wanted = need[m * per:(m + 1) * per]
            found = scalar_grads[m * per:(m + 1) * per]
            if wanted[0]:
                found[0] = _dot(grad, pos)
            grad_neg = _dot(grad, neg) if wanted[1] or any(wanted[i] for i in rrelu_at) else None
            found[1] = grad_neg if wanted[1] else None
            above = _accumulate(above, grad, c[0], spare)
            below = _accumulate(below, grad, neg_coef, spare)
            for j, alpha in enumerate(alphas):
                if wanted[2 + j]:
                    found[2 + j] = _dot(grad, exp_m1[j])
                # d/dx E·expm1(x/α) = (E/α)·exp(x/α)
                exp_sums[j] = _accumulate(exp_sums[j], grad, c[2 + j] / alpha, spare)
            i = 2 + len(alphas)
            for kind in kinds:
                if kind[0] == "rrelu":  # slope a + s·level: a joined N's coefficient, s·level is per element
                    _, a, s = kind
                    level = scratch.copy_(next(levels))
                    if wanted[i]:
                        level_grad = level.mul_(grad)
                        _add_scaled(below, level_grad, c[i] * s)
                        found[i] = a * grad_neg + s * _dot(level_grad, neg)
                    else:
                        _add_product(below, level, grad, c[i] * s, level)
                elif kind[0] == "relu6":
                    if wanted[i]:
                        found[i] = _dot(grad, relu6)
                    relu6_sum = _accumulate(relu6_sum, grad, c[i], spare)
                else:  # swish w·x·σ(bx) = (w/b)·silu(bx): d/dx = w·silu'(bx), d/dw = x·σ(bx), d/db = w·x²·σ(1-σ)
                    if swish_scratch is None:
                        swish_scratch = next(spare)
                    z = torch.mul(x, c[i + 1], out=scratch)
                    swish_sum = _accumulate(swish_sum, torch.ops.aten.silu_backward.grad_input(
                        grad, z, grad_input=swish_scratch), c[i], spare)
                    found[i], found[i + 1] = _swish_scalar_grads(grad, x, square, z, swish_scratch, c[i],
                                                                 wanted[i:i + 2])
                    i += 1
                i += 1
            scalar_grads[m * per:(m + 1) * per] = found
        if grad_x is not None:
            for j, exp_sum in enumerate(exp_sums):
                below.addcmul_(exp_sum, exp_m1[j].add_(1.0))
            # x > 0 takes `above`, x <= 0 `below`: below + relu'(x)·(above - below) by ReLU's one-pass
            # backward (torch.where with a mask is not vectorised on CPU: 2 ms against 0.2 ms at 64x16x32x32)
            torch.ops.aten.threshold_backward.grad_input(above.sub_(below), x, 0.0, grad_input=grad_x).add_(below)
            if relu6_sum is not None:
                grad_x.add_(torch.ops.aten.hardtanh_backward.grad_input(relu6_sum, x, 0.0, 6.0, grad_input=scratch))
            if swish_sum is not None:
                grad_x.add_(swish_sum)
        return scalar_grads


def _fit(work: torch.Tensor, block: torch.Tensor) -> torch.Tensor:
    """A scratch map for ``block``: all of ``work``, or its start for the shorter last block."""
    return work if work.numel() == block.numel() else work[:block.numel()]


def _backward_maps(layout: tuple[Any, ...], scalars_wanted: bool) -> int:
    """How many scratch maps :meth:`_NodeMixture._block_backward` takes at most."""
    alphas, kinds = layout
    has = {k[0] for k in kinds}
    shared = 3 + len(alphas) + ("relu6" in has) + ("swish" in has and scalars_wanted)  # pos, neg, exp, ..., scratch
    sums = 2 + len(alphas) + ("relu6" in has) + 2 * ("swish" in has)  # above, below, exp sums, relu6, swish (+ map)
    return shared + sums


def _accumulate(total: torch.Tensor | None, grad: torch.Tensor, coef: Coef, spare: Iterator[torch.Tensor]
                ) -> torch.Tensor:
    """total + coef·grad, in place after the first (the next of the ``spare`` scratch maps)."""
    if total is None:
        return torch.mul(grad, coef, out=next(spare))
    _add_scaled(total, grad, coef)
    return total


def _half_expm1(neg: torch.Tensor, alpha: float, out: torch.Tensor, scratch: torch.Tensor) -> torch.Tensor:
    """expm1(neg/α)/2 for neg <= 0 into ``out``, as t/(1 - t) with t = tanh(neg/2α): for neg <= 0, 1 - t lies in
    [1, 2], so nothing cancels and the result keeps expm1's relative accuracy near 0 (within 3 float32 ulps of
    expm1, by test), which exp(y) - 1 loses there; neg = -inf gives -1/2. (Half: the 2 joins each mixture's
    coefficient.)"""
    t = torch.mul(neg, 0.5 / alpha, out=out).tanh_()
    return t.div_(torch.neg(t, out=scratch).add_(1.0))


@functools.cache
def _compiled_from_terms() -> Any:
    # dynamic shapes: one compilation serves every cell's feature-map size
    return torch.compile(mixture_from_terms, dynamic=True)


def compiled_mixture(x: torch.Tensor, weights: torch.Tensor, acts: Sequence[nn.Module]) -> torch.Tensor:
    """:func:`fused_mixture` with its element-wise passes compiled into one loop forward and one backward by
    ``torch.compile``: the same function, RReLU's slopes included (drawn outside the compiled code, from
    torch's generator: the compiler's own CPU generator costs as much as the whole eager forward). Measured
    on CPU at 64x16x32x32: 4.2 ms forward+backward against 8.8 ms for the eager :class:`_FusedMixture`, 2 ms
    of either drawing the slopes (before they came as 16-bit levels, :func:`rrelu_levels`). The first call
    compiles (seconds), so this is an option for long searches, not the default."""
    terms = mixture_terms(weights, acts)
    return _compiled_from_terms()(x, *terms, rrelu_slopes(x, terms[3]))
