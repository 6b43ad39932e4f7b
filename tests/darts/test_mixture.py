"""mixture.py: the hand-written backward of the fused β-mixture is the derivative of its forward."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from optuna_nas.darts import mixture, scratch
from optuna_nas.darts.mixture import fused_mixture, fused_mixtures, mixture_from_terms, mixture_terms, rrelu_slopes
from optuna_nas.ops import create_activation

NAMES = ["relu", "relu6", "leaky_relu", "prelu", "rrelu", "elu", "celu", "selu", "swish"]


@pytest.fixture(autouse=True, params=["numbers", "tensors"])
def coefficients(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test twice: with the coefficients as Python numbers (what CPU runs) and as 0-dim tensors (what other
    devices run, see mixture._NUMBER_COEFFICIENTS)."""
    if request.param == "tensors":
        monkeypatch.setattr(mixture, "_NUMBER_COEFFICIENTS", frozenset())


@pytest.fixture(autouse=True, params=["whole maps", "blocks"])
def block_size(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """And each of those with a node's maps whole and cut into blocks (scratch.blocks) of 100 elements, the last
    one shorter: the tests' maps are far smaller than the blocks of a real search."""
    if request.param == "blocks":
        monkeypatch.setattr(scratch, "BLOCK", 100)


def _activations(train: bool) -> list[nn.Module]:
    acts = [create_activation(n).double().train(train) for n in NAMES]
    with torch.no_grad():
        acts[3].weight.fill_(0.3)  # PReLU slope
        acts[8].b.fill_(1.7)  # Swish coefficient
    acts.append(nn.CELU(alpha=0.5).double())  # a second expm1 scale
    return acts


@pytest.mark.parametrize("train", [False, True])  # training: RReLU draws random slopes (the same in backward)
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_gradients_of_input_weights_prelu_and_swish_pass_gradcheck(train: bool, layout: torch.memory_format) -> None:
    acts = _activations(train)
    # values away from the kinks at 0 and 6, where finite differences would straddle them
    magnitude = torch.empty(2, 3, 4, 4, dtype=torch.float64).uniform_(0.05, 0.95) + torch.randint(0, 8, (2, 3, 4, 4))
    x = magnitude * (torch.randint(0, 2, (2, 3, 4, 4)) * 2 - 1)
    x = x.contiguous(memory_format=layout).requires_grad_()
    weights = torch.softmax(torch.randn(len(acts), dtype=torch.float64), 0).requires_grad_()
    prelu, swish_b = acts[3].weight, acts[8].b

    def mixture(x: torch.Tensor, weights: torch.Tensor, prelu: torch.Tensor, swish_b: torch.Tensor) -> torch.Tensor:
        torch.manual_seed(0)  # the same RReLU slopes at every evaluation
        return fused_mixture(x, weights, acts)

    assert torch.autograd.gradcheck(mixture, (x, weights, prelu, swish_b))


def test_values_and_gradients_equal_the_activation_by_activation_sum_in_float64() -> None:
    acts = _activations(train=False)
    x = (3 * torch.randn(2, 3, 8, 8, dtype=torch.float64)).contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    weights = torch.softmax(torch.randn(len(acts), dtype=torch.float64), 0).requires_grad_()
    params = [x, weights, acts[3].weight, acts[8].b]
    fused = fused_mixture(x, weights, acts)
    plain = sum(w * a(x) for w, a in zip(weights, acts, strict=True))
    torch.testing.assert_close(fused, plain, rtol=1e-12, atol=1e-12)
    grad = torch.randn_like(fused)
    for a, b in zip(torch.autograd.grad(fused, params, grad), torch.autograd.grad(plain, params, grad), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("train", [False, True])
def test_only_the_input_and_rrelus_slopes_are_kept_for_backward(train: bool) -> None:
    acts = _activations(train)
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    weights = torch.softmax(torch.randn(len(acts)), 0).requires_grad_()
    kept: list[torch.Tensor] = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: kept.append(t) or t, lambda t: t):
        fused_mixture(x, weights, acts)
    maps = [t for t in kept if t.dim() == x.dim()]  # not the weights and scalars
    assert maps[0] is x
    assert len(maps) == (2 if train else 1)  # RReLU's slopes in training
    if train:  # as 16-bit levels: half the memory of float32 slopes
        assert maps[1].dtype == torch.int16 and maps[1].shape == x.shape
        assert int(maps[1].min()) < 0 < int(maps[1].max())  # every int16 value is a level


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_training_mixture_equals_the_closed_form_on_the_slopes_it_draws(layout: torch.memory_format) -> None:
    """In training the fused mixture computes Eq. 2 with RReLU's slopes from :func:`rrelu_slopes` under the
    same seed: values and gradients in float64 (the slopes' lower bound folded into N must not change them)."""
    acts = _activations(train=True)
    x = (3 * torch.randn(2, 3, 8, 8, dtype=torch.float64)).contiguous(memory_format=layout).requires_grad_()
    weights = torch.softmax(torch.randn(len(acts), dtype=torch.float64), 0).requires_grad_()
    params = [x, weights, acts[3].weight, acts[8].b]
    torch.manual_seed(7)
    fused = fused_mixture(x, weights, acts)
    torch.manual_seed(7)
    terms = mixture_terms(weights, acts)
    plain = mixture_from_terms(x, *terms, rrelu_slopes(x, terms[3]))
    torch.testing.assert_close(fused, plain, rtol=1e-12, atol=1e-12)
    grad = torch.randn_like(fused)
    for a, b in zip(torch.autograd.grad(fused, params, grad), torch.autograd.grad(plain, params, grad), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_training_rrelu_slopes_are_uniform_over_its_range_and_follow_torchs_seed() -> None:
    """nn.RReLU's distribution, U[lower, upper): range, mean, variance and median of 65,536 slopes, fine
    enough to be continuous for training (thousands of distinct values), and reproducible under one seed."""
    rrelu = nn.RReLU()
    lower, upper = rrelu.lower, rrelu.upper
    x = (-torch.rand(4, 16, 32, 32, dtype=torch.float64) - 0.1).contiguous(memory_format=torch.channels_last)

    def slopes(seed: int) -> torch.Tensor:
        torch.manual_seed(seed)
        return (fused_mixture(x, torch.ones(1, dtype=torch.float64), [rrelu]) / x).flatten()

    drawn = slopes(0)
    assert lower <= drawn.min() and drawn.max() < upper
    width = upper - lower
    assert abs(drawn.mean() - (lower + upper) / 2) < 0.005 * width  # standard error: 0.0011 of the width
    assert abs(drawn.var() / (width**2 / 12) - 1) < 0.03
    assert abs((drawn < (lower + upper) / 2).double().mean() - 0.5) < 0.01
    assert drawn.unique().numel() > 38_000  # of 65,536 levels; about 41,400 expected from 65,536 draws
    assert torch.equal(drawn, slopes(0)) and not torch.equal(drawn, slopes(1))


@pytest.mark.parametrize("alpha", [1.0, 0.5])
@pytest.mark.parametrize("form", ["one edge", "node"])
def test_expm1_terms_keep_expm1s_accuracy_in_float32(alpha: float, form: str) -> None:
    """The fused mixtures' expm1 (not torch.expm1: see mixture.py) stays within 3 float32 ulps of the exact value
    from tiny negative inputs to -inf, where exp(x) - 1 would lose every digit near 0; its backward's slope is
    exp(x/α). Both forms: one edge's (two factors) and a node's (one map shared by its edges, halved)."""
    from optuna_nas.darts.mixture import _exp_minus_one, _expm1_factors, _half_expm1

    y = -torch.logspace(-30, 2, 20_000, dtype=torch.float64)
    y = torch.cat([y, torch.tensor([0.0, -0.0, -1e4, -float("inf")], dtype=torch.float64)])
    neg = y.float()
    exact = torch.expm1(neg.double() / alpha)
    if form == "node":
        got = 2 * _half_expm1(neg, alpha, torch.empty_like(neg), torch.empty_like(neg)).double()
    else:
        t, f = _expm1_factors(neg, alpha, torch.tensor(1.0), torch.empty_like(neg), torch.empty_like(neg))
        got = (t * f).double()
    ulp = torch.finfo(torch.float32).eps * exact.abs().clamp(min=torch.finfo(torch.float32).tiny)
    assert ((got - exact).abs() <= 3 * ulp).all()
    assert got[-1] == -1.0 and got[-4] == 0.0
    slope = _exp_minus_one(neg, alpha, torch.empty_like(neg)).add_(1.0).double()
    torch.testing.assert_close(slope, torch.exp(neg.double() / alpha), rtol=3e-7, atol=1e-7)


def test_float32_mixture_equals_the_activation_by_activation_sum() -> None:
    """The same in float32 as torch's own activations, to float32's rounding (values and gradients)."""
    acts = [a.float() for a in _activations(False)]
    x = (3 * torch.randn(4, 6, 8, 8)).contiguous(memory_format=torch.channels_last)
    x = torch.cat([x, 1e-4 * x], 0).requires_grad_()  # small inputs too, where expm1's accuracy matters
    weights = torch.softmax(torch.randn(len(acts)), 0).requires_grad_()
    fused = fused_mixture(x, weights, acts)
    plain = sum(w * act(x) for w, act in zip(weights, acts, strict=True))
    torch.testing.assert_close(fused, plain, rtol=2e-6, atol=1e-9)
    grad = torch.randn_like(fused)
    for a, b in zip(torch.autograd.grad(fused, [x, weights], grad), torch.autograd.grad(plain, [x, weights], grad),
                    strict=True):
        torch.testing.assert_close(a, b, rtol=2e-5, atol=1e-5)


def _edges(count: int, train: bool) -> list[tuple[torch.Tensor, list[nn.Module]]]:
    """(weights, activations) of ``count`` edges reading one node, each with its own PReLU and Swish parameters."""
    edges = []
    for k in range(count):
        acts = _activations(train)
        with torch.no_grad():
            acts[3].weight.fill_(0.1 + 0.2 * k)
            acts[8].b.fill_(0.8 + 0.5 * k)
        edges.append((torch.softmax(torch.randn(len(acts), dtype=torch.float64), 0).requires_grad_(), acts))
    return edges


def _edge_params(x: torch.Tensor, edges: list[tuple[torch.Tensor, list[nn.Module]]]) -> list[torch.Tensor]:
    return [x, *(p for w, acts in edges for p in (w, acts[3].weight, acts[8].b))]


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_a_nodes_mixtures_equal_the_activation_by_activation_sums_in_float64(layout: torch.memory_format) -> None:
    """The β-mixtures of all the edges reading one node, computed together: each edge's value, and the gradients
    of x (the sum of what every edge sends it), of each edge's β weights, PReLU slope and Swish coefficient."""
    edges = _edges(3, train=False)
    x = (3 * torch.randn(2, 3, 8, 8, dtype=torch.float64)).contiguous(memory_format=layout).requires_grad_()
    together = fused_mixtures(x, edges)
    plain = [sum(w * a(x) for w, a in zip(weights, acts, strict=True)) for weights, acts in edges]
    for a, b in zip(together, plain, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    grads = [torch.randn_like(x) for _ in edges]
    params = _edge_params(x, edges)
    for a, b in zip(torch.autograd.grad(together, params, grads), torch.autograd.grad(plain, params, grads),
                    strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_a_nodes_training_mixtures_draw_what_each_edge_would_alone() -> None:
    """In training, each edge of the node draws its own RReLU slopes, in edge order: under one seed the node
    computes what the edges' own fused mixtures compute one after another, values and gradients."""
    edges = _edges(3, train=True)
    x = (3 * torch.randn(2, 3, 8, 8, dtype=torch.float64)).requires_grad_()
    params = _edge_params(x, edges)
    torch.manual_seed(11)
    together = fused_mixtures(x, edges)
    torch.manual_seed(11)
    alone = [fused_mixture(x, w, acts) for w, acts in edges]
    grads = [torch.randn_like(x) for _ in edges]
    for a, b in zip(together, alone, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    for a, b in zip(torch.autograd.grad(together, params, grads), torch.autograd.grad(alone, params, grads),
                    strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    # RReLU's part, where x < 0: the edges' random slopes differ from one another
    rrelu_only = [(torch.ones(1, dtype=torch.float64), [acts[4]]) for _, acts in edges]
    slopes = [m / x.detach() for m in fused_mixtures(x.detach(), rrelu_only)]
    assert not torch.equal(slopes[0], slopes[1]) and not torch.equal(slopes[1], slopes[2])


@pytest.mark.parametrize("train", [False, True])
def test_a_nodes_mixtures_pass_gradcheck(train: bool) -> None:
    edges = _edges(2, train)
    magnitude = torch.empty(2, 3, 4, 4, dtype=torch.float64).uniform_(0.05, 0.95) + torch.randint(0, 8, (2, 3, 4, 4))
    x = (magnitude * (torch.randint(0, 2, (2, 3, 4, 4)) * 2 - 1)).requires_grad_()

    def node(x: torch.Tensor, *params: torch.Tensor) -> tuple[torch.Tensor, ...]:
        torch.manual_seed(0)  # the same RReLU slopes at every evaluation
        return tuple(fused_mixtures(x, edges))

    assert torch.autograd.gradcheck(node, tuple(_edge_params(x, edges)))


def test_a_node_keeps_only_its_input_and_the_rrelu_levels_for_backward() -> None:
    edges = [(w.float(), [a.float() for a in acts]) for w, acts in _edges(3, train=True)]
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    kept: list[torch.Tensor] = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: kept.append(t) or t, lambda t: t):
        fused_mixtures(x, edges)
    maps = [t for t in kept if t.dim() == x.dim()]
    assert maps[0] is x and len(maps) == 1 + len(edges)  # one int16 map of slope levels per edge
    assert all(m.dtype == torch.int16 for m in maps[1:])


def test_mixtures_of_different_activations_on_one_node_are_each_exact() -> None:
    """Edges whose activations differ are grouped by structure; each still gets its own mixture."""
    first, second = _edges(2, train=False)
    third = (torch.softmax(torch.randn(2, dtype=torch.float64), 0), [nn.ELU(), nn.ReLU6()])
    x = 3 * torch.randn(2, 3, 8, 8, dtype=torch.float64)
    for (weights, acts), got in zip((first, third, second), fused_mixtures(x, [first, third, second]), strict=True):
        torch.testing.assert_close(got, sum(w * a(x) for w, a in zip(weights, acts, strict=True)),
                                   rtol=1e-12, atol=1e-12)


def test_a_node_takes_gradients_in_another_layout_than_its_input() -> None:
    """Autograd may hand the mixtures their gradients contiguous while x is channels-last: the same result."""
    edges = _edges(3, train=True)
    x = (3 * torch.randn(2, 3, 8, 8, dtype=torch.float64)).contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    params = _edge_params(x, edges)
    grads = [torch.randn(2, 3, 8, 8, dtype=torch.float64) for _ in edges]
    results = []
    for layout in (torch.contiguous_format, torch.channels_last):
        torch.manual_seed(5)
        outs = fused_mixtures(x, edges)
        results.append(torch.autograd.grad(outs, params, [g.contiguous(memory_format=layout) for g in grads]))
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_a_node_on_a_channel_slice_is_exact() -> None:
    """PC-DARTS's partial channels give a node's mixtures a slice of a channels-last map (not dense): exact too."""
    edges = _edges(2, train=False)
    full = (3 * torch.randn(2, 8, 6, 6, dtype=torch.float64)).contiguous(memory_format=torch.channels_last)
    x = full.requires_grad_()[:, :3]
    together = fused_mixtures(x, edges)
    plain = [sum(w * a(x) for w, a in zip(weights, acts, strict=True)) for weights, acts in edges]
    grads = [torch.randn_like(p) for p in plain]
    params = [full, *(p for w, acts in edges for p in (w, acts[3].weight, acts[8].b))]
    for a, b in zip(together, plain, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    for a, b in zip(torch.autograd.grad(together, params, grads), torch.autograd.grad(plain, params, grads),
                    strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
