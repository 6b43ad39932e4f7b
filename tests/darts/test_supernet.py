"""The search super-network in every activation mode, with and without PC-DARTS, and Algorithm 1."""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F

from optuna_nas.darts.genotypes import CELL_TYPES
from optuna_nas.darts.space import A_DARTS_SPACE, DARTS_SPACE, ActivationMode, SearchSpace
from optuna_nas.darts.supernet import SearchNetwork, SuperNetConfig
from optuna_nas.darts.trilevel import TriLevelOptimizer
from optuna_nas.errors import NasError

from _relu_count import relu_calls
from _tiny import tiny_config, tiny_network

FROZEN = {c: ("selu", "relu") * 7 for c in CELL_TYPES}
MODES = ["fixed:relu", "fixed:swish", "factorized", "non_factorized", "config_a"]


Optimizer = torch.optim.Optimizer


def _optimizers(net: SearchNetwork) -> tuple[Optimizer, Optimizer, Optimizer | None]:
    w = torch.optim.SGD(net.weight_parameters(), 0.05, momentum=0.9, weight_decay=3e-4)
    a = torch.optim.Adam(net.alpha_parameters(), 6e-4, betas=(0.5, 0.999), weight_decay=1e-3)
    b = torch.optim.Adam(net.beta_parameters(), 6e-4, betas=(0.5, 0.999), weight_decay=1e-3) \
        if net.beta_parameters() else None
    return w, a, b


def _batch(n: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(n, 3, 16, 16), torch.randint(0, 4, (n,))


@pytest.mark.parametrize("k", [1, 2])
@pytest.mark.parametrize("mode", MODES)
def test_every_mode_runs_algorithm_1_and_moves_alpha_and_beta(mode: str, k: int) -> None:
    extra = {"frozen_activations": FROZEN} if mode == "config_a" else {}
    net = tiny_network(mode, k, **extra)
    w_opt, a_opt, b_opt = _optimizers(net)
    assert (b_opt is not None) == (mode == "factorized")
    if k > 1:
        assert {n for n, _ in net.named_parameters() if n.startswith("gammas")} == {"gammas_normal", "gammas_reduce"}
    before = [p.detach().clone() for p in net.alpha_parameters() + net.beta_parameters()]
    weights_before = [p.detach().clone() for p in net.weight_parameters()]
    tri = TriLevelOptimizer(net, w_opt, a_opt, b_opt)
    for _ in range(2):
        loss, logits = tri.step(*_batch(), *_batch())
    assert logits.shape == (4, 4) and torch.isfinite(loss)
    after = net.alpha_parameters() + net.beta_parameters()
    assert all(not torch.equal(b, a) for b, a in zip(before, after, strict=True)), "every α/β/γ tensor must move"
    assert any(not torch.equal(b, a) for b, a in zip(weights_before, net.weight_parameters(), strict=True))


def test_weight_optimizer_never_holds_architecture_parameters() -> None:
    net = tiny_network("factorized", 2)
    w_opt, a_opt, b_opt = _optimizers(net)
    ids = lambda opt: {id(p) for g in opt.param_groups for p in g["params"]}  # noqa: E731
    arch = {id(p) for p in net.alpha_parameters() + net.beta_parameters()}
    assert ids(w_opt).isdisjoint(arch)
    assert ids(a_opt) == {id(p) for p in net.alpha_parameters()}
    assert ids(b_opt) == {id(p) for p in net.beta_parameters()}
    assert ids(w_opt) | arch == {id(p) for p in net.parameters()}


def test_weight_step_leaves_alpha_and_beta_without_gradients() -> None:
    net = tiny_network("factorized")
    tri = TriLevelOptimizer(net, *_optimizers(net))
    alphas = [p.detach().clone() for p in net.alpha_parameters() + net.beta_parameters()]
    tri.weight_step(*_batch())
    for p, before in zip(net.alpha_parameters() + net.beta_parameters(), alphas, strict=True):
        assert p.grad is None and torch.equal(p, before)


def test_non_factorised_space_has_40_candidates_per_edge() -> None:
    config = SuperNetConfig(A_DARTS_SPACE, ActivationMode.parse("non_factorized"))
    assert len(config.candidates()) == 40
    assert sum(c.activation_index is None for c in config.candidates()) == 4
    assert "sep_conv_3x3@selu" in config.candidate_names()
    factorised = SuperNetConfig(A_DARTS_SPACE, ActivationMode.parse("factorized"))
    assert len(factorised.candidates()) == 8


def test_search_network_has_darts_parameter_count() -> None:
    """The original DARTS search network (C=16, 8 cells, CIFAR-10) has 1,930,618 weights (α excluded)."""
    net = SearchNetwork(SuperNetConfig(DARTS_SPACE, ActivationMode.parse("fixed:relu")))
    assert sum(p.numel() for p in net.weight_parameters()) == 1_930_618


def test_factorised_edge_mixes_activations_by_softmax_beta() -> None:
    net = tiny_network("factorized")
    net.eval()  # RReLU draws random slopes in training mode
    edge = net.cells[0].edges[0]
    x = torch.randn(2, 4, 8, 8)
    weights = torch.zeros(9)
    weights[7] = 1.0  # one-hot β weight on SELU
    (mixed,) = edge.activation(x, weights)
    assert torch.allclose(mixed, torch.selu(x))
    uniform = torch.full((9,), 1 / 9)
    (mixed,) = edge.activation(x, uniform)
    expected = sum(act(x) for act in edge.activation.acts) / 9
    assert torch.allclose(mixed, expected, atol=1e-6)


def test_non_parameterised_operators_take_the_raw_input() -> None:
    """With all α on max-pool, the edge output is max_pool(x) whatever β says (Eq. 1)."""
    net = tiny_network("factorized")
    net.eval()
    edge = net.cells[0].edges[0]
    x = torch.randn(2, 4, 8, 8)
    alpha = torch.zeros(8)
    alpha[1] = 1.0  # max_pool_3x3
    out = edge(x, alpha, torch.softmax(torch.randn(9), 0))
    assert torch.allclose(out, edge.ops[1](x))


def test_pc_darts_sends_one_kth_of_the_channels_through_the_operations() -> None:
    net = tiny_network("fixed:relu", 2, channels=8)
    edge = net.cells[0].edges[0]
    assert edge.op_channels == 4
    conv = edge.ops[4][0]
    assert conv.in_channels == 4


def test_config_a_requires_every_edge_activation() -> None:
    with pytest.raises(NasError, match="config_a needs the activation of every search edge"):
        tiny_config("config_a")
    net = tiny_network("config_a", frozen_activations=FROZEN)
    assert net.beta_parameters() == []
    assert [e.activation.names for e in net.cells[0].edges][:2] == [("selu",), ("relu",)]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"layers": 2}, "at least 3 cells"),
    ({"partial_channels": 3}, "does not divide"),
])
def test_impossible_networks_are_refused(kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(NasError, match=message):
        SuperNetConfig(DARTS_SPACE, ActivationMode.parse("fixed:relu"), channels=4, **kwargs)


def test_unknown_activation_mode_is_refused() -> None:
    with pytest.raises(NasError, match="unknown activation"):
        ActivationMode.parse("fixed:nope")
    with pytest.raises(NasError, match="unknown activation mode"):
        ActivationMode.parse("half_factorized")


@pytest.mark.parametrize(("beta_pass", "forwards"), [("shared", 2), ("separate", 3)])
def test_beta_pass_choice(beta_pass: str, forwards: int) -> None:
    """'shared': α and β from one validation pass; 'separate': β's gradient after α moved (Algorithm 1)."""
    net = tiny_network("factorized")
    calls = []
    net.register_forward_hook(lambda *_: calls.append(1))
    tri = TriLevelOptimizer(net, *_optimizers(net), beta_pass=beta_pass)
    tri.step(*_batch(), *_batch())
    assert len(calls) == forwards


def test_unrolled_gradient_reduces_to_first_order_at_zero_step() -> None:
    """DARTS's second-order gradient with ξ = 0 is exactly the first-order gradient."""
    net = tiny_network("fixed:relu")
    w_opt, a_opt, _ = _optimizers(net)
    for g in w_opt.param_groups:
        g["lr"] = 0.0
    tri = TriLevelOptimizer(net, w_opt, a_opt, None, unrolled=True)
    torch.manual_seed(2)
    train, val = _batch(), _batch()
    params = net.alpha_parameters()
    net.eval()
    second = tri._unrolled_grads(params, *train, *val)
    first = torch.autograd.grad(torch.nn.functional.cross_entropy(net(val[0]), val[1]), params)
    for s, f in zip(second, first, strict=True):
        assert torch.allclose(s, f, atol=1e-6)


def test_unrolled_search_step_moves_alpha() -> None:
    net = tiny_network("factorized")
    tri = TriLevelOptimizer(net, *_optimizers(net), unrolled=True)
    before = [p.detach().clone() for p in net.alpha_parameters() + net.beta_parameters()]
    tri.step(*_batch(), *_batch())
    assert all(not torch.equal(b, p) for b, p in zip(before, net.alpha_parameters() + net.beta_parameters(),
                                                      strict=True))


def test_folding_alpha_into_batchnorm_is_the_same_function() -> None:
    """Each candidate's weighted output equals softmax(α)_o · o(σ(x)), as DARTS computes it."""
    net = tiny_network("fixed:relu")
    edge = net.cells[0].edges[3]
    x = torch.randn(4, 4, 8, 8)
    alpha = torch.softmax(torch.randn(8), 0)
    expected = sum(alpha[i] * op(x if c.activation_index is None else torch.relu(x))
                   for i, (c, op) in enumerate(zip(edge.candidates, edge.ops, strict=True)) if not c.is_none)
    assert torch.allclose(edge(x, alpha, None), expected, atol=1e-5)


def test_recomputed_beta_mixture_gives_the_same_gradients() -> None:
    """The factorised mixture is recomputed in backward (memory); values and gradients are unchanged,
    RReLU's random slopes included."""
    from optuna_nas.darts.supernet import recomputation

    act = tiny_network("factorized").cells[0].edges[0].activation
    results = []
    for enabled in (True, False):
        x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0)).requires_grad_()
        beta = torch.softmax(torch.randn(9, generator=torch.Generator().manual_seed(1)), 0).requires_grad_()
        torch.manual_seed(5)
        with recomputation(enabled):
            (out,) = act(x, beta)
        out.square().sum().backward()
        results.append((out.detach(), x.grad, beta.grad))
    for a, b in zip(*results, strict=True):
        assert torch.allclose(a, b, atol=1e-6)


@pytest.mark.parametrize(("layout", "recompute", "mode", "train"), [
    ("channels_last", False, "factorized", False),
    ("channels_last", False, "fixed:prelu", True),  # batch statistics: where channels-last once went wrong
    ("standard", True, "factorized", False),
    ("standard", True, "fixed:prelu", True),
])
def test_memory_layout_and_cell_recomputation_leave_loss_and_gradients_unchanged(
        layout: str, recompute: bool, mode: str, train: bool) -> None:
    """Channels-last tensors and recomputed cells are speed/memory choices, never different results."""
    results = []
    for variant in (False, True):
        net = tiny_network(mode, recompute_cells=variant and recompute)
        net.train(train)  # eval: deterministic RReLU
        x, y = _batch()
        if variant and layout == "channels_last":
            net = net.to(memory_format=torch.channels_last)
            x = x.contiguous(memory_format=torch.channels_last)
        loss = torch.nn.functional.cross_entropy(net(x), y)
        grads = torch.autograd.grad(loss, net.alpha_parameters() + net.beta_parameters() + net.weight_parameters()[:3])
        results.append((loss.detach(), grads))
    (loss_a, grads_a), (loss_b, grads_b) = results
    assert torch.allclose(loss_a, loss_b, atol=1e-5)
    for a, b in zip(grads_a, grads_b, strict=True):
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-3)


@functools.cache
def _inductor_works() -> bool:
    """torch.compile's CPU backend needs a C++ compiler and Python's headers."""
    try:
        return bool(torch.compile(lambda t: t * 2)(torch.ones(2)).sum() == 4)
    except Exception:  # noqa: BLE001 - any toolchain failure means "cannot compile here"
        return False


@pytest.mark.parametrize("train", [False, True])
@pytest.mark.parametrize("compiled", [False, True])
def test_fused_mixture_equals_the_activation_by_activation_sum(train: bool, compiled: bool) -> None:
    """Eq. 2 computed in a few passes is Eq. 2: values and gradients (x, β, PReLU, Swish b) match, eager or
    compiled (``--compile-mixture``)."""
    from optuna_nas.darts.mixture import compiled_mixture, fused_mixture

    if compiled and not _inductor_works():
        pytest.skip("torch.compile cannot build CPU kernels here (no C++ compiler or Python headers)")
    mixture = compiled_mixture if compiled else fused_mixture
    act = tiny_network("factorized").cells[0].edges[0].activation
    assert act.fused
    with torch.no_grad():
        act.acts[3].weight.fill_(0.3)  # PReLU slope
        act.acts[8].b.fill_(1.7)  # Swish coefficient
    act.train(train)
    names = list(act.names)
    keep = [i for i, n in enumerate(names) if not (train and n == "rrelu")]  # RReLU's slopes are random in training
    x = (3 * torch.randn(2, 4, 8, 8)).requires_grad_()
    beta = torch.softmax(torch.randn(9), 0)[keep].detach().requires_grad_()
    acts = [act.acts[i] for i in keep]
    fused = mixture(x, beta, acts)
    plain = sum(w * a(x) for w, a in zip(beta, acts, strict=True))
    assert torch.allclose(fused, plain, atol=1e-5)
    params = [x, beta, act.acts[3].weight, act.acts[8].b]
    g_fused = torch.autograd.grad(fused.square().sum(), params)
    g_plain = torch.autograd.grad(plain.square().sum(), params)
    for a, b in zip(g_fused, g_plain, strict=True):
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)


def test_compile_mixture_setting_reaches_every_edge_and_trains() -> None:
    if not _inductor_works():
        pytest.skip("torch.compile cannot build CPU kernels here (no C++ compiler or Python headers)")
    torch.manual_seed(0)
    config = SuperNetConfig(A_DARTS_SPACE, ActivationMode.parse("factorized"), channels=4, layers=3, num_classes=4,
                            compile_mixture=True)
    net = SearchNetwork(config)
    edges = [edge for cell in net.cells for edge in cell.edges]
    assert all(edge.activation.compiled for edge in edges)
    loss = F.cross_entropy(net(torch.randn(2, 3, 8, 8)), torch.tensor([0, 1]))
    loss.backward()
    assert torch.isfinite(loss) and all(b.grad is not None and torch.isfinite(b.grad).all()
                                        for b in net.beta_parameters())


def test_fused_rrelu_draws_slopes_in_its_range_during_training() -> None:
    from optuna_nas.darts.mixture import fused_mixture

    rrelu = torch.nn.RReLU()
    x = -torch.rand(1000) - 0.1
    slopes = fused_mixture(x, torch.ones(1), [rrelu]) / x
    assert slopes.min() >= rrelu.lower - 1e-6 and slopes.max() <= rrelu.upper + 1e-6 and slopes.std() > 0.01


# ---------------------------------------------------------------- operator groups

GROUPED = SearchSpace("grouped", operators=("none", "max_pool_3x3", "skip_connect"),
                      operator_groups={"conv": ["sep_conv", "conv"], "kernel": ["3x3", "5x5"]},
                      operator_template="{conv}_{kernel}", activations=("relu", "selu"), activation_mode="factorized")


def _grouped(mode: str = "factorized", k: int = 1) -> SearchNetwork:
    torch.manual_seed(0)
    return SearchNetwork(SuperNetConfig(GROUPED, ActivationMode.parse(mode), channels=4, layers=3, num_classes=4,
                                        partial_channels=k))


def test_grouped_space_has_one_alpha_slot_for_the_family_and_logits_per_group() -> None:
    net = _grouped()
    assert net.config.candidate_names() == ["none", "max_pool_3x3", "skip_connect", "{conv}_{kernel}"]
    shapes = {n: tuple(p.shape) for n, p in net.named_parameters() if n.startswith(("alphas", "betas", "group"))}
    assert shapes == {"alphas_normal": (14, 4), "alphas_reduce": (14, 4), "betas_normal": (14, 2),
                      "betas_reduce": (14, 2), "group_logits_normal_conv": (14, 2),
                      "group_logits_normal_kernel": (14, 2), "group_logits_reduce_conv": (14, 2),
                      "group_logits_reduce_kernel": (14, 2)}
    names = {id(p): n for n, p in net.named_parameters()}
    assert [names[id(p)] for p in net.alpha_parameters()] == [
        "alphas_normal", "alphas_reduce", "group_logits_normal_conv", "group_logits_normal_kernel",
        "group_logits_reduce_conv", "group_logits_reduce_kernel"]  # stepped by α's Adam
    edge = net.cells[0].edges[0]
    assert [c.op for c in edge.candidates] == ["none", "max_pool_3x3", "skip_connect", "sep_conv_3x3",
                                               "sep_conv_5x5", "conv_3x3", "conv_5x5"]
    assert [c.activation_index for c in edge.candidates][3:] == [0] * 4  # the edge's β-mixture feeds them all


def test_grouped_operator_weight_is_family_alpha_times_each_groups_softmax() -> None:
    net = _grouped()
    with torch.no_grad():
        for p in net.alpha_parameters():
            p.normal_()
    alpha = torch.softmax(net.alphas_normal, -1)
    conv = torch.softmax(net.group_logits_normal_conv, -1)
    kernel = torch.softmax(net.group_logits_normal_kernel, -1)
    weights, _, _ = net.operator_weights("normal")
    assert torch.equal(weights[:, :3], alpha[:, :3])  # plain operators: softmax(α) itself
    for col, (i, j) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)], start=3):  # sep 3, sep 5, conv 3, conv 5
        assert torch.allclose(weights[:, col], alpha[:, 3] * conv[:, i] * kernel[:, j])
    assert torch.allclose(weights.sum(1), torch.ones(14))  # the family shares its slot's weight


@pytest.mark.parametrize("k", [1, 2])
def test_grouped_network_trains_and_group_logits_get_gradients(k: int) -> None:
    net = _grouped(k=k)
    x, y = torch.randn(2, 3, 8, 8), torch.randint(0, 4, (2,))
    loss = torch.nn.functional.cross_entropy(net(x), y)
    arch = net.alpha_parameters() + net.beta_parameters()
    grads = torch.autograd.grad(loss, arch)
    names = {id(p): n for n, p in net.named_parameters()}
    for p, g in zip(arch, grads, strict=True):
        assert torch.isfinite(g).all() and g.abs().sum() > 0, names[id(p)]
    if k == 1:
        return
    tri = TriLevelOptimizer(net, *_optimizers(net))  # Algorithm 1 steps the group logits with α
    before = [p.detach().clone() for p in arch]
    tri.step(x, y, x, y)
    assert all(not torch.equal(b, p) for b, p in zip(before, arch, strict=True))


def test_grouped_edge_is_the_product_weighted_sum_of_its_operators() -> None:
    net = _grouped("fixed:relu")
    net.eval()
    edge = net.cells[0].edges[3]
    x = torch.randn(2, 4, 8, 8)
    weights, _, _ = net.operator_weights("normal")
    w = weights[3].detach()
    expected = sum(w[i] * op(x if c.activation_index is None else torch.relu(x))
                   for i, (c, op) in enumerate(zip(edge.candidates, edge.ops, strict=True)) if not c.is_none)
    assert torch.allclose(edge(x, w, None), expected, atol=1e-5)


def test_non_factorised_grouped_space_expands_the_family_slot_per_activation() -> None:
    config = SuperNetConfig(GROUPED, ActivationMode.parse("non_factorized"), channels=4, layers=3)
    assert config.candidate_names()[3:] == ["{conv}_{kernel}@relu", "{conv}_{kernel}@selu"]
    cands, slots = config.edge_candidates()
    assert len(cands) == 3 + 4 * 2 and slots[3:] == [3] * 4 + [4] * 4
    assert [c.activation_index for c in cands[3:]] == [0] * 4 + [1] * 4


@pytest.mark.parametrize(("space", "mode"), [(GROUPED, "factorized"), (GROUPED, "non_factorized"),
                                             (GROUPED, "fixed:relu"), (A_DARTS_SPACE, "factorized")],
                         ids=["grouped-factorized", "grouped-non_factorized", "grouped-fixed", "a_darts"])
def test_architecture_parameters_per_edge_is_what_the_network_learns(space: SearchSpace, mode: str) -> None:
    net = SearchNetwork(SuperNetConfig(space, ActivationMode.parse(mode), channels=4, layers=3))
    learned = sum(p.numel() for p in net.alpha_parameters() + net.beta_parameters())
    assert learned == 2 * 14 * space.architecture_parameters_per_edge(activation_mode=mode)


def test_spaces_without_groups_have_no_group_logits_and_plain_softmax_weights() -> None:
    net = tiny_network("factorized")
    assert not [n for n, _ in net.named_parameters() if n.startswith("group")] and net.group_weights("normal") == []
    alpha = torch.softmax(net.alphas_normal, -1)
    assert net.candidate_weights(alpha, []) is alpha
    assert net.config.edge_candidates() == (net.config.candidates(), list(range(8)))


def test_compiled_mixture_draws_the_eager_mixtures_rrelu_slopes() -> None:
    """In training, ``--compile-mixture`` computes what the eager mixture computes under the same seed,
    RReLU's random slopes included (both draw them from torch's generator)."""
    from optuna_nas.darts.mixture import compiled_mixture, fused_mixture

    if not _inductor_works():
        pytest.skip("torch.compile cannot build CPU kernels here (no C++ compiler or Python headers)")
    act = tiny_network("factorized").cells[0].edges[0].activation
    act.train(True)
    acts = list(act.acts)
    x = (3 * torch.randn(2, 4, 8, 8)).requires_grad_()
    beta = torch.softmax(torch.randn(len(acts)), 0).requires_grad_()
    results = []
    for mixture, seed in ((fused_mixture, 5), (compiled_mixture, 5), (compiled_mixture, 6)):
        torch.manual_seed(seed)
        out = mixture(x, beta, acts)
        results.append((out, *torch.autograd.grad(out.square().sum(), [x, beta])))
    for a, b in zip(results[0], results[1], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(results[1][0], results[2][0])  # another seed, other slopes


@pytest.mark.parametrize("recompute", [False, True])
def test_each_cell_output_is_relud_once_for_both_cells_that_read_it(recompute: bool) -> None:
    net = tiny_network("fixed:relu", recompute_cells=recompute).double()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)

    def cell_by_cell() -> torch.Tensor:  # the original code's loop: every cell ReLUs both of its inputs itself
        weights = {t: net.operator_weights(t) for t in CELL_TYPES}
        s0 = s1 = net.stem(x)
        for cell in net.cells:
            s0, s1 = s1, cell(s0, s1, *weights["reduce" if cell.reduction else "normal"])
        return net.classifier(net.global_pooling(s1).flatten(1))

    with torch.no_grad():
        assert relu_calls(cell_by_cell) - relu_calls(lambda: net(x)) == len(net.cells)
    params = list(net.parameters())
    torch.manual_seed(1)
    shared = net(x)
    torch.manual_seed(1)
    plain = cell_by_cell()
    torch.testing.assert_close(shared, plain, rtol=1e-13, atol=1e-13)
    for a, b in zip(torch.autograd.grad(shared.square().sum(), params),
                    torch.autograd.grad(plain.square().sum(), params), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("mode", "k"), [("fixed:relu", 1), ("fixed:relu", 2), ("fixed:selu", 1), ("factorized", 1)])
def test_edges_reading_one_node_through_one_fixed_activation_share_its_map(mode: str, k: int) -> None:
    """A cell activates each node once for all its edges with the same fixed σ (and, with PC-DARTS, splits
    it once): the same outputs and gradients as every edge on its own, as in the original code."""
    net = tiny_network(mode, k).double()
    edges = [edge for cell in net.cells for edge in cell.edges]
    keys = [edge.share_key for edge in edges]
    assert all(key is None for key in keys) == (mode == "factorized")  # each edge its own β-mixture
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    params = list(net.parameters())
    torch.manual_seed(1)
    shared = net(x)
    grads = torch.autograd.grad(shared.square().sum(), params)
    with torch.no_grad():
        shared_relus = relu_calls(lambda: net(x))
    for edge in edges:
        edge.share_key = None
    torch.manual_seed(1)
    alone = net(x)
    torch.testing.assert_close(shared, alone, rtol=1e-13, atol=1e-13)
    for a, b in zip(grads, torch.autograd.grad(alone.square().sum(), params), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    if mode == "fixed:relu":  # 14 edges read 5 nodes in each cell: 9 ReLUs fewer per cell
        with torch.no_grad():
            assert relu_calls(lambda: net(x)) - shared_relus == 9 * len(net.cells)


def _edge_by_edge(cell: torch.nn.Module, r0: torch.Tensor, r1: torch.Tensor, op_w: torch.Tensor,
                  beta_w: torch.Tensor | None, edge_w: torch.Tensor | None) -> torch.Tensor:
    """PC-DARTS's cell as its code writes it: every edge shuffles its own output, then γ weighs it."""
    states = [cell.preprocess0.after_relu(r0), cell.preprocess1.after_relu(r1)]
    offset = 0
    for _ in range(cell.steps):
        outs = []
        for j, h in enumerate(states):
            e = offset + j
            y = cell.edges[e](h, op_w[e], None if beta_w is None else beta_w[e])
            outs.append(y if edge_w is None else edge_w[e] * y)
        offset += len(states)
        states.append(sum(outs[1:], outs[0]))
    return torch.cat(states[2:], dim=1)


@pytest.mark.parametrize("mode", ["fixed:relu", "factorized"])
@pytest.mark.parametrize("edge_normalization", [True, False])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_pc_darts_node_shuffles_once_for_all_its_edges(mode: str, edge_normalization: bool,
                                                       layout: torch.memory_format) -> None:
    """A PC-DARTS node is shuffle(cat(Σ_e γ_e·Σ_o w_o·o(x_e), Σ_e γ_e·bypass_e)), one shuffle per node: the same
    outputs and gradients (α, γ, weights) as the per-edge shuffle of the PC-DARTS code, through normal and
    reduction cells (whose bypass is max-pooled)."""
    net = tiny_network(mode, 2, edge_normalization=edge_normalization).double().to(memory_format=layout)
    for module in net.modules():  # RReLU's mean slope: a cell draws its random slopes node by node, not edge by edge
        if isinstance(module, torch.nn.RReLU):
            module.eval()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64).contiguous(memory_format=layout)
    params = list(net.parameters())
    torch.manual_seed(1)
    per_node = net(x)
    grads = torch.autograd.grad(per_node.square().sum(), params)
    for cell in net.cells:
        cell.from_activated = functools.partial(_edge_by_edge, cell)
    torch.manual_seed(1)
    per_edge = net(x)
    torch.testing.assert_close(per_node, per_edge, rtol=1e-12, atol=1e-12)
    for a, b in zip(grads, torch.autograd.grad(per_edge.square().sum(), params), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-11)


def _pool_calls(net: SearchNetwork, run: functools.partial[torch.Tensor]) -> int:
    """How many times ``run()`` calls a pooling candidate's pooling layer."""
    calls = [0]

    def count(*_: object) -> None:
        calls[0] += 1

    hooks = [op[0].register_forward_hook(count) for cell in net.cells for edge in cell.edges
             for op, cand in zip(edge.ops, edge.candidates, strict=True) if "pool" in cand.op]
    run()
    for hook in hooks:
        hook.remove()
    return calls[0]


@pytest.mark.parametrize(("mode", "k", "channels"), [("fixed:relu", 1, 16), ("fixed:relu", 2, 4), ("factorized", 1, 4)])
def test_edges_reading_one_node_share_its_normalised_pooling(mode: str, k: int, channels: int) -> None:
    """In training a cell pools and batch-normalises each node once for all the edges reading it: the same logits,
    gradients and running statistics as every edge on its own; 5 nodes are read by 14 edges, so each pooling
    candidate runs 9 times fewer per cell. 16 channels take the path that pools again in backward."""
    nets = []
    for share in (True, False):
        net = tiny_network(mode, k, channels=channels).double().to(memory_format=torch.channels_last)
        for cell in net.cells:
            cell.share_pools = share
        nets.append(net)
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    outputs, grads = [], []
    for net in nets:
        for _ in range(2):  # the second step sees the running statistics the first one left
            torch.manual_seed(1)
            out = net(x)
        outputs.append(out)
        grads.append(torch.autograd.grad(out.square().sum(), list(net.parameters())))
    torch.testing.assert_close(outputs[0], outputs[1], rtol=1e-12, atol=1e-12)
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-11)
    for (name, a), b in zip(nets[0].named_buffers(), nets[1].buffers(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12, msg=name)
    for net in nets:
        net.eval()
    with torch.no_grad():
        torch.testing.assert_close(nets[0](x), nets[1](x), rtol=1e-12, atol=1e-12)
    shared, alone = (_pool_calls(net, functools.partial(net.train(), x)) for net in nets)
    pooling_candidates = sum("pool" in c.op for c in nets[0].cells[0].edges[0].candidates)
    assert alone - shared == 9 * pooling_candidates * len(nets[0].cells)


def test_only_parameter_free_pooling_candidates_are_shared_between_edges() -> None:
    """A user's pooling operator with weights (here a pool followed by a 1x1 convolution) differs from edge to
    edge, so every edge computes its own."""
    from torch import nn

    from optuna_nas.darts.candidates import Candidate
    from optuna_nas.darts.supernet import EdgeActivation, MixedEdge
    from optuna_nas.ops import _OPERATIONS, register_operation

    register_operation("learned_pool_3x3", lambda c, s, a: nn.Sequential(nn.AvgPool2d(3, s, 1), nn.Conv2d(c, c, 1)),
                       parameterized=False)
    try:
        candidates = [Candidate("max_pool_3x3", None), Candidate("learned_pool_3x3", None)]
        edge = MixedEdge(4, 1, candidates, EdgeActivation(["relu"], False), 1)
        assert edge._pools == [True, False]
    finally:
        del _OPERATIONS["learned_pool_3x3"]


def test_factorized_cell_mixes_each_nodes_edges_together(monkeypatch: pytest.MonkeyPatch) -> None:
    """A factorized cell computes the β-mixtures of all the edges reading a node in one call (5 nodes, 14 edges
    per cell): outputs and gradients (α, β, weights) equal the edge-by-edge cell's in float64."""
    from optuna_nas.darts import supernet

    net = tiny_network("factorized").double()
    for module in net.modules():  # RReLU's mean slope: the two cells draw random slopes in another order
        if isinstance(module, torch.nn.RReLU):
            module.eval()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    params = list(net.parameters())
    calls = []
    together = supernet.fused_mixtures

    def counted(part: torch.Tensor, mixtures: list) -> list[torch.Tensor]:
        calls.append(len(mixtures))
        return together(part, mixtures)

    monkeypatch.setattr(supernet, "fused_mixtures", counted)
    per_node = net(x)
    assert calls == [4, 4, 3, 2, 1] * len(net.cells)
    grads = torch.autograd.grad(per_node.square().sum(), params)
    for cell in net.cells:
        cell.from_activated = functools.partial(_edge_by_edge, cell)
    per_edge = net(x)
    torch.testing.assert_close(per_node, per_edge, rtol=1e-12, atol=1e-12)
    for a, b in zip(grads, torch.autograd.grad(per_edge.square().sum(), params), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-11)
