import json

import numpy as np
import pytest

from optuna_nas.errors import NasError
from optuna_nas.randgrow import (
    CELL_KINDS,
    INCREMENT_OPERATIONS,
    Architecture,
    CellIncrement,
    Increment,
    IncrementInput,
    Skeleton,
    grow,
    initial_architecture,
    sample_increments,
)


def test_skeleton_layers_follow_the_initial_network() -> None:
    skeleton = Skeleton(cells_per_block=2, channels=8)
    layers = skeleton.layers
    assert skeleton.num_cells == 8 and len(layers) == 9
    assert [layer.kind for layer in layers] == ["stem"] + ["normal"] * 2 + ["reduction"] + ["normal"] * 2 + [
        "reduction"
    ] + ["normal"] * 2
    assert [layer.level for layer in layers] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert [layer.channels for layer in layers] == [8, 8, 8, 16, 16, 16, 32, 32, 32]
    assert skeleton.cell_layers("reduction") == (3, 6)


@pytest.mark.parametrize(("cells_per_block", "expected"), [(6, 20), (3, 11), (1, 5)])
def test_macro_sampler_follows_the_paper(cells_per_block: int, expected: int) -> None:
    arch = initial_architecture(cells_per_block, channels=8)
    rng = np.random.RandomState(cells_per_block)
    seen_ops, seen_targets = set(), set()
    for _ in range(30):
        increments = sample_increments(arch, "macro", rng)
        assert len(increments) == expected == 3 * cells_per_block + 2
        for increment in increments:
            assert isinstance(increment, Increment)
            assert 1 <= increment.target <= arch.skeleton.num_cells  # an initial cell, never the stem
            assert len(increment.inputs) == 3
            assert increment.inputs[0].source == increment.target - 1  # x_in1: the previous initial layer
            assert all(0 <= item.source < increment.target for item in increment.inputs)
            assert all(item.op in INCREMENT_OPERATIONS for item in increment.inputs)
            seen_ops.update(item.op for item in increment.inputs)
            seen_targets.add(increment.target)
    assert seen_ops == set(INCREMENT_OPERATIONS)
    assert seen_targets == set(range(1, arch.skeleton.num_layers))


def test_macro_inputs_reach_every_earlier_layer() -> None:
    arch = initial_architecture(1, channels=8)
    rng = np.random.RandomState(0)
    sources = {
        item.source
        for _ in range(200)
        for increment in sample_increments(arch, "macro", rng)
        if increment.target == 5
        for item in increment.inputs[1:]
    }
    assert sources == {0, 1, 2, 3, 4}


def test_cell_sampler_makes_one_increment_per_cell_type_replicated_into_every_cell() -> None:
    arch = initial_architecture(2, channels=8)
    rng = np.random.RandomState(1)
    for _ in range(20):
        increments = sample_increments(arch, "cell", rng)
        assert [increment.cell_type for increment in increments] == list(CELL_KINDS)
        child = grow(arch, increments)
        for increment, expanded in zip(increments, child.expanded(), strict=True):
            assert isinstance(increment, CellIncrement)
            assert increment.inputs[0].source == 1
            assert all(item.source in (1, 2) for item in increment.inputs)
            assert [e.target for e in expanded] == list(arch.skeleton.cell_layers(increment.cell_type))
            for replica in expanded:
                assert [i.op for i in replica.inputs] == [i.op for i in increment.inputs]
                assert replica.inputs[0].source == replica.target - 1
                # inputs: this cell's input (previous cell output) or the cell before; the stem for cell 1
                assert all(
                    i.source in (replica.target - 1, max(replica.target - 2, 0)) for i in replica.inputs
                )


def test_grow_appends_and_leaves_the_parent_alone() -> None:
    parent = initial_architecture(1, channels=8)
    rng = np.random.RandomState(2)
    child = grow(parent, sample_increments(parent, "macro", rng))
    grandchild = grow(child, sample_increments(child, "cell", rng))
    assert parent.increments == ()
    assert len(child.increments) == 5
    assert grandchild.increments[:5] == child.increments and len(grandchild.increments) == 7


def test_json_round_trip_is_lossless() -> None:
    rng = np.random.RandomState(4)
    arch = initial_architecture(2, channels=16, in_channels=1, num_classes=7)
    arch = grow(arch, sample_increments(arch, "macro", rng))
    arch = grow(arch, sample_increments(arch, "cell", rng))
    text = arch.to_json()
    assert json.loads(text)["version"] == 1
    assert Architecture.from_json(text) == arch
    assert Architecture.from_dict(json.loads(text)).to_json() == text


def _json_with(increment: dict) -> str:
    data = initial_architecture(1, channels=8).to_dict()
    data["increments"] = [increment]
    return json.dumps(data)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            _json_with({"mode": "macro", "target": 3, "inputs": [[2, "warp_3x3"]]}),
            "increment 0: unknown increment operator 'warp_3x3'; known: sep_conv_3x3",
        ),
        (
            _json_with({"mode": "macro", "target": 99, "inputs": [[2, "sep_conv_3x3"]]}),
            r"increment 0: target layer 99 is out of range 1\.\.5",
        ),
        (
            _json_with({"mode": "macro", "target": 0, "inputs": [[0, "sep_conv_3x3"]]}),
            r"target layer 0 is out of range 1\.\.5 \(layer 0 is the stem\)",
        ),
        (
            _json_with({"mode": "macro", "target": 2, "inputs": [[1, "max_pool_3x3"], [4, "avg_pool_3x3"]]}),
            "increment 0: input layer 4 is not earlier than target layer 2",
        ),
        (
            _json_with({"mode": "cell", "cell_type": "normal", "inputs": [[3, "skip_connect"]]}),
            "increment 0: cell input 3 is not 1 or 2 cells back",
        ),
        (
            _json_with({"mode": "cell", "cell_type": "stem", "inputs": [[1, "skip_connect"]]}),
            "unknown cell type 'stem'",
        ),
        (_json_with({"mode": "sideways", "inputs": []}), "unknown increment mode 'sideways'"),
        (_json_with({"mode": "macro", "target": 2, "inputs": []}), "needs at least one input"),
        (_json_with({"mode": "macro", "target": 2, "inputs": "1"}), "list of \\[source, op\\] pairs"),
        ('{"version": 1, "skeleton": ', "invalid RandGrow architecture JSON"),
        ('{"version": 2, "skeleton": {}}', "unsupported RandGrow architecture version 2"),
        ('{"version": 1, "skeleton": {"channels": 8}}', "skeleton fields must be exactly"),
        (
            '{"version": 1, "skeleton": {"cells_per_block": 1, "channels": 7, "in_channels": 3, '
            '"num_classes": 2}}',
            "skeleton channels must be even, got 7",
        ),
    ],
)
def test_bad_json_is_a_one_line_error(text: str, message: str) -> None:
    with pytest.raises(NasError, match=message) as info:
        Architecture.from_json(text)
    assert "\n" not in str(info.value)


def test_grow_validates_increments() -> None:
    arch = initial_architecture(1, channels=8)
    with pytest.raises(NasError, match="increment 0: target layer 6 is out of range"):
        grow(arch, [Increment(6, (IncrementInput(5, "sep_conv_3x3"),))])


def test_unknown_search_mode_is_a_clear_error() -> None:
    with pytest.raises(NasError, match="unknown RandGrow search mode 'micro'"):
        sample_increments(initial_architecture(1, channels=8), "micro", np.random.RandomState(0))  # type: ignore[arg-type]
