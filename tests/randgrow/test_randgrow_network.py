import numpy as np
import pytest
import torch

from optuna_nas.cost import count_parameters
from optuna_nas.errors import NasError
from optuna_nas.randgrow import (
    INCREMENT_OPERATIONS,
    Architecture,
    Increment,
    IncrementInput,
    RandGrowNetwork,
    grow,
    inherit_weights,
    initial_architecture,
    sample_increments,
)

N, F, CLASSES = 1, 8, 4  # 5 cells: layers 0 (stem), 1, 2 (reduction), 3, 4 (reduction), 5


def _tiny() -> Architecture:
    return initial_architecture(N, channels=F, in_channels=3, num_classes=CLASSES)


def _batch(size: int = 8) -> torch.Tensor:
    return torch.randn(4, 3, size, size, generator=torch.Generator().manual_seed(0))


def _trained_parent(arch: Architecture) -> RandGrowNetwork:
    """A parent whose BatchNorm running statistics are not the defaults, as after real training."""
    torch.manual_seed(0)
    parent = RandGrowNetwork(arch)
    parent.train()
    with torch.no_grad():
        for _ in range(3):
            parent(_batch() * 3 + 1)
    return parent.eval()


@pytest.mark.parametrize("size", [8, 7])
def test_every_op_from_every_resolution_reaches_every_later_layer(size: int) -> None:
    increments = [
        Increment(target, tuple(IncrementInput(source, op) for source in range(target)))
        for target in range(1, 6)
        for op in INCREMENT_OPERATIONS
    ]
    model = RandGrowNetwork(grow(_tiny(), increments)).eval()
    assert model(_batch(size)).shape == (4, CLASSES)


def test_json_round_trip_rebuilds_the_same_module() -> None:
    rng = np.random.RandomState(0)
    arch = grow(_tiny(), sample_increments(_tiny(), "macro", rng))
    arch = grow(arch, sample_increments(arch, "cell", rng))
    model = RandGrowNetwork(arch).eval()
    torch.manual_seed(123)  # a different initialisation: only the loaded weights may matter
    rebuilt = RandGrowNetwork(Architecture.from_json(arch.to_json())).eval()
    assert list(rebuilt.state_dict()) == list(model.state_dict())
    rebuilt.load_state_dict(model.state_dict())
    x = _batch()
    assert torch.equal(rebuilt(x), model(x))


@pytest.mark.parametrize("mode", ["macro", "cell"])
def test_child_inherits_every_parent_tensor_and_only_increments_are_new(mode: str) -> None:
    rng = np.random.RandomState(1)
    parent_arch = grow(_tiny(), sample_increments(_tiny(), "macro", rng))
    parent = _trained_parent(parent_arch)
    child = RandGrowNetwork(grow(parent_arch, sample_increments(parent_arch, mode, rng)))  # type: ignore[arg-type]
    fresh = inherit_weights(child, parent.state_dict())
    child_state, parent_state = child.state_dict(), parent.state_dict()
    assert set(fresh) == set(child_state) - set(parent_state) and fresh
    for key, value in parent_state.items():
        assert torch.equal(child_state[key], value), key
    new = range(len(parent_arch.increments), len(child.architecture.increments))
    assert len(new) == (5 if mode == "macro" else 2)
    new_prefixes = tuple(f"increments.{k}." for k in new)
    assert all(key.startswith(new_prefixes) for key in fresh)


def test_cell_increment_is_one_module_per_cell_of_its_type() -> None:
    arch = grow(_tiny(), sample_increments(_tiny(), "cell", np.random.RandomState(0)))
    model = RandGrowNetwork(arch)
    assert sorted(model.increments[0]) == ["1", "3", "5"]  # normal cells
    assert sorted(model.increments[1]) == ["2", "4"]  # reduction cells
    first, second = model.increments[0]["3"], model.increments[0]["5"]
    assert first.project.weight is not second.project.weight  # same structure, own weights


def test_function_preserving_child_computes_its_parent_and_can_still_learn() -> None:
    rng = np.random.RandomState(2)
    parent = _trained_parent(_tiny())
    increments = sample_increments(_tiny(), "macro", rng)
    x = _batch()
    expected = parent(x)

    child = RandGrowNetwork(grow(_tiny(), increments))
    inherit_weights(child, parent.state_dict(), function_preserving=True)
    assert torch.equal(child.eval()(x), expected)
    child.train()(x).sum().backward()
    assert all(
        block.bn.weight.grad.abs().sum() > 0 for blocks in child.increments for block in blocks.values()
    )

    random_child = RandGrowNetwork(grow(_tiny(), increments))
    inherit_weights(random_child, parent.state_dict())
    assert not torch.allclose(random_child.eval()(x), expected, atol=1e-3)


def test_drop_path_drops_whole_increments_in_training_only() -> None:
    parent = _trained_parent(_tiny())
    child = RandGrowNetwork(grow(_tiny(), sample_increments(_tiny(), "macro", np.random.RandomState(3))))
    inherit_weights(child, parent.state_dict())
    x = _batch()
    parent.train()
    child.train()
    assert not torch.allclose(child(x), parent(x), atol=1e-3)
    child.drop_path_prob = 1.0  # every increment dropped: the parent's function, even in training
    assert torch.equal(child(x), parent(x))
    child.eval()
    parent.eval()
    assert not torch.allclose(child(x), parent(x), atol=1e-3)


def test_inherit_weights_rejects_an_unrelated_parent() -> None:
    rng = np.random.RandomState(4)
    parent_arch = _tiny()
    child_arch = grow(parent_arch, sample_increments(parent_arch, "macro", rng))
    with pytest.raises(NasError, match="the parent has .* tensor\\(s\\) the child lacks"):
        inherit_weights(RandGrowNetwork(parent_arch), RandGrowNetwork(child_arch).state_dict())
    wider = initial_architecture(N, channels=2 * F, in_channels=3, num_classes=CLASSES)
    with pytest.raises(NasError, match="parent tensor 'stem.0.weight' has shape"):
        inherit_weights(RandGrowNetwork(parent_arch), RandGrowNetwork(wider).state_dict())


@pytest.mark.parametrize(("cells_per_block", "low", "high"), [(6, 0.2e6, 0.6e6), (3, 0.1e6, 0.4e6)])
def test_initial_model_size_matches_table_1(cells_per_block: int, low: float, high: float) -> None:
    model = RandGrowNetwork(initial_architecture(cells_per_block, channels=32, in_channels=3, num_classes=10))
    params = count_parameters(model)
    print(f"RandGrow initial model N={cells_per_block} F=32: {params} parameters ({params / 1e6:.2f}M)")
    assert low <= params <= high  # Table 1: about 0.4M for N=6, F=32
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 10)
