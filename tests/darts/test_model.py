"""model.py: edges reading the same node share a fixed activation's map, the two cells reading a cell output
share its ReLU, and nothing else changes; drop path drops every edge but an identity, with timm's masks."""

from __future__ import annotations

import torch
from timm.layers import drop_path

from optuna_nas.darts.genotypes import BUILTIN_GENOTYPES, Edge, Genotype
from optuna_nas.darts.model import Cell, DiscreteNetwork, network_cifar

from _relu_count import relu_calls

# node 2 and node 3 both read inputs 0 and 1 through ReLU edges; node 3's second edge reads input 1 with PReLU
# (learned per edge), node 4 reads input 0 with RReLU (random per call) and with LeakyReLU (a different setting)
NORMAL = (Edge("sep_conv_3x3", 0), Edge("dil_conv_3x3", 1), Edge("sep_conv_5x5", 0, "relu"),
          Edge("sep_conv_3x3", 1, "prelu"), Edge("dil_conv_5x5", 0, "rrelu"), Edge("sep_conv_3x3", 0, "leaky_relu"),
          Edge("skip_connect", 1), Edge("sep_conv_3x3", 1))
GENOTYPE = Genotype(NORMAL, (2, 3, 4, 5), NORMAL, (2, 3, 4, 5))


def _count_activation_calls(cell: Cell) -> list[int]:
    calls = [0] * len(cell.ops)
    for k, op in enumerate(cell.ops):
        if hasattr(op, "activation"):
            op.activation.register_forward_hook(lambda *_, k=k: calls.__setitem__(k, calls[k] + 1))
    return calls


def test_equal_fixed_activations_of_one_node_run_once_with_the_same_outputs_and_gradients() -> None:
    torch.manual_seed(0)
    cell = Cell(GENOTYPE, 6, 6, 4, reduction=False, reduction_prev=False).double().eval()
    calls = _count_activation_calls(cell)
    s0, s1 = (torch.randn(2, 6, 8, 8, dtype=torch.float64, requires_grad=True) for _ in range(2))
    shared = cell(s0, s1)
    # edges 0 and 2 (input 0, ReLU) share; edges 1 and 7 (input 1, ReLU) share; PReLU, RReLU, LeakyReLU do not
    assert calls == [1, 1, 0, 1, 1, 1, 0, 0]
    grads = torch.autograd.grad(shared.sum(), (s0, s1, *cell.parameters()))

    cell.shared_activation = (None,) * len(cell.ops)  # every edge its own activation, as the original code
    unshared = cell(s0, s1)
    torch.testing.assert_close(shared, unshared, rtol=1e-13, atol=1e-13)
    for a, b in zip(grads, torch.autograd.grad(unshared.sum(), (s0, s1, *cell.parameters())), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def _cell_by_cell(net: DiscreteNetwork, x: torch.Tensor) -> torch.Tensor:
    """The original code's loop: every cell ReLUs both of its inputs itself."""
    s0, s1 = net.stem(x)
    for cell in net.cells:
        s0, s1 = s1, cell(s0, s1)
    return net.classifier(net.global_pooling(s1).flatten(1))


def test_each_cell_output_is_relud_once_for_both_cells_that_read_it() -> None:
    torch.manual_seed(0)
    net = network_cifar(BUILTIN_GENOTYPES["DARTS_V2"], channels=4, num_classes=3, layers=5, auxiliary=False)
    net = net.double().eval()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    # the stem's output (s0 and s1 of the first cell) and every cell output but the last: one ReLU each
    assert relu_calls(lambda: _cell_by_cell(net, x)) - relu_calls(lambda: net(x)) == len(net.cells)
    params = list(net.parameters())
    shared, plain = net(x), _cell_by_cell(net, x)
    torch.testing.assert_close(shared, plain, rtol=1e-13, atol=1e-13)
    for a, b in zip(torch.autograd.grad(shared.square().sum(), params),
                    torch.autograd.grad(plain.square().sum(), params), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_drop_path_in_training_drops_the_same_edges_as_timms_drop_path_per_edge() -> None:
    """In training, every edge but an identity is dropped per sample by timm's drop_path, in edge order."""
    torch.manual_seed(0)
    cell = Cell(BUILTIN_GENOTYPES["DARTS_V2"], 6, 6, 4, reduction=False, reduction_prev=False).double().train()
    cell.drop_prob = 0.5
    s0, s1 = (torch.randn(16, 6, 8, 8, dtype=torch.float64, requires_grad=True) for _ in range(2))

    def per_edge() -> torch.Tensor:
        states = [cell.preprocess0(s0), cell.preprocess1(s1)]
        for i in range(cell.steps):
            hs = [cell.ops[k](states[cell.indices[k]]) for k in (2 * i, 2 * i + 1)]
            hs = [h if isinstance(cell.ops[k], torch.nn.Identity) else drop_path(h, cell.drop_prob, True)
                  for h, k in zip(hs, (2 * i, 2 * i + 1), strict=True)]
            states.append(hs[0] + hs[1])
        return torch.cat([states[i] for i in cell.concat], dim=1)

    torch.manual_seed(3)
    ours = cell(s0, s1)
    torch.manual_seed(3)
    theirs = per_edge()
    cell.drop_prob = 0.0
    kept = cell(s0, s1)
    # some samples of some edges were dropped: the output differs from the cell without drop path
    assert not torch.allclose(ours, kept)
    torch.testing.assert_close(ours, theirs, rtol=1e-13, atol=1e-13)
    params = (s0, s1, *cell.parameters())
    for a, b in zip(torch.autograd.grad(ours.square().sum(), params, allow_unused=True),
                    torch.autograd.grad(theirs.square().sum(), params, allow_unused=True), strict=True):
        if a is not None or b is not None:
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
