"""RandGrow space files, and an operation set that really reaches the sampler, the search and the network."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch

from optuna_nas.errors import NasError
from optuna_nas.randgrow import (
    INCREMENT_OPERATIONS,
    Architecture,
    RandGrowNetwork,
    RandGrowSampler,
    RandGrowSpace,
    get_proposal,
    grow,
    initial_architecture,
    load_randgrow_space,
    sample_increments,
)
from optuna_nas.randgrow.runner import STUDY_ATTR, RandGrowSearch, _check_identity
from optuna_nas.resources import shipped_file

optuna.logging.set_verbosity(optuna.logging.WARNING)
SMALL = initial_architecture(cells_per_block=1, channels=4, in_channels=3, num_classes=4)
PAPER_OPS = ("sep_conv_3x3", "sep_conv_5x5", "max_pool_3x3", "avg_pool_3x3", "skip_connect")


@pytest.mark.parametrize(("name", "mode", "per_step"), [("randgrow_macro", "macro", 20), ("randgrow_cell", "cell", 2)])
def test_shipped_spaces_have_the_paper_settings(name: str, mode: str, per_step: int) -> None:
    space = load_randgrow_space(name)
    assert space == RandGrowSpace(name, mode, 6, 32, PAPER_OPS)  # type: ignore[arg-type]
    assert space.operations == INCREMENT_OPERATIONS and space.increments_per_step == per_step
    shipped = shipped_file("spaces", name)
    assert load_randgrow_space(str(shipped)) == space  # by path too


@pytest.mark.parametrize(
    ("text", "key", "reason"),
    [
        ("mode: macro\nsize: 3\n", "size", "unknown key"),
        ("operations: [sep_conv_3x3, warp_3x3]\n", "operations", "unknown increment operator 'warp_3x3'"),
        ("operations: [none]\n", "operations", "'none' (the zero operator) cannot be an increment input"),
        ("operations: [skip_connect, skip_connect]\n", "operations", "listed twice: skip_connect"),
        ("operations: []\n", "operations", "empty"),
        ("operations: sep_conv_3x3\n", "operations", "must be a list"),
        ("cells_per_block: six\n", "cells_per_block", "must be an integer"),
        ("cells_per_block: true\n", "cells_per_block", "must be an integer"),
        ("channels: 32.0\n", "channels", "must be an integer"),
        ("description: [a]\n", "description", "must be a string"),
        ("name: [a]\n", "name", "must be a non-empty string"),
        ("cells_per_block: 0\n", "cells_per_block", "at least 1"),
        ("channels: 33\n", "channels", "positive even"),
        ("channels: 0\n", "channels", "positive even"),
        ("channels: -2\n", "channels", "positive even"),
        ("mode: micro\n", "mode", "one of macro, cell"),
    ],
)
def test_each_bad_space_file_is_one_error_naming_file_key_and_reason(
    tmp_path: Path, text: str, key: str, reason: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(NasError) as info:
        load_randgrow_space(str(path))
    message = str(info.value)
    assert message.startswith(f"{path}: ") and key in message and reason in message and "\n" not in message


@pytest.mark.parametrize(("text", "reason"), [("- a\n- b\n", "must be a mapping"), ("mode: [\n", "malformed YAML")])
def test_unreadable_space_files(tmp_path: Path, text: str, reason: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(NasError, match=reason):
        load_randgrow_space(path)
    with pytest.raises(NasError, match="not found: no_such_space .*shipped: randgrow_cell, randgrow_macro"):
        load_randgrow_space("no_such_space")


def test_a_darts_space_file_is_not_a_randgrow_space() -> None:
    with pytest.raises(NasError, match=r"darts\.yaml: unknown key\(s\) activation_mode"):
        load_randgrow_space("darts")


def _grown_ops(sampler: RandGrowSampler, n: int = 4) -> set[str]:
    study = optuna.create_study(directions=["minimize", "minimize"], sampler=sampler)
    study.tell(study.ask(), [50.0, 1000.0])  # the initial model
    ops: set[str] = set()
    for _ in range(n):
        trial = study.ask()
        proposal = get_proposal(trial)
        assert proposal is not None and proposal.new_increments
        ops |= {i.op for inc in proposal.architecture.increments for i in inc.inputs}
        study.tell(trial, [40.0, 1100.0])
    return ops


@pytest.mark.parametrize("mode", ["macro", "cell"])
def test_a_sampler_proposes_only_its_operations(mode: str) -> None:
    sampler = RandGrowSampler(SMALL, mode, seed=0, verbose=False, operations=("skip_connect",))  # type: ignore[arg-type]
    assert _grown_ops(sampler) == {"skip_connect"}
    clone = pickle.loads(pickle.dumps(sampler))
    assert clone.operations == ("skip_connect",) and _grown_ops(clone) == {"skip_connect"}
    assert _grown_ops(RandGrowSampler(SMALL, mode, seed=0, verbose=False)) <= set(INCREMENT_OPERATIONS)  # type: ignore[arg-type]


def test_a_sampler_refuses_a_bad_operation_set() -> None:
    with pytest.raises(NasError, match="unknown increment operator 'warp_3x3'"):
        RandGrowSampler(SMALL, operations=("warp_3x3",))
    with pytest.raises(NasError, match="empty"):
        RandGrowSampler(SMALL, operations=())


def test_the_default_operation_set_draws_as_before() -> None:
    rng_a, rng_b = np.random.RandomState(3), np.random.RandomState(3)
    assert sample_increments(SMALL, "macro", rng_a) == sample_increments(SMALL, "macro", rng_b, INCREMENT_OPERATIONS)
    wide = sample_increments(SMALL, "macro", np.random.RandomState(0), ("dil_conv_3x3", "dil_conv_5x5"))
    assert {i.op for inc in wide for i in inc.inputs} == {"dil_conv_3x3", "dil_conv_5x5"}


def test_any_buildable_operator_is_a_valid_increment_input() -> None:
    arch = grow(SMALL, sample_increments(SMALL, "macro", np.random.RandomState(1), ("dil_conv_5x5",)))
    assert Architecture.from_json(arch.to_json()) == arch
    out = RandGrowNetwork(arch)(torch.zeros(2, 3, 8, 8))
    assert out.shape == (2, 4)
    bad = arch.to_json().replace("dil_conv_5x5", "none", 1)
    with pytest.raises(NasError, match=r"increment 0: 'none' \(the zero operator\) cannot be"):
        Architecture.from_json(bad)


def test_a_user_registered_operator_can_be_drawn_and_built(monkeypatch: pytest.MonkeyPatch) -> None:
    from optuna_nas import ops

    spec = ops.OperationSpec("double_3x3", lambda c, s, a: ops.sep_conv_body(c, 3, s, 1, a), parameterized=True)
    monkeypatch.setitem(ops._OPERATIONS, "double_3x3", spec)  # registered for this test only
    space = RandGrowSpace("custom", operations=("double_3x3", "skip_connect"))
    arch = grow(SMALL, sample_increments(SMALL, "cell", np.random.RandomState(0), space.operations))
    assert "double_3x3" in arch.to_json() and Architecture.from_json(arch.to_json()) == arch
    assert RandGrowNetwork(arch)(torch.zeros(1, 3, 8, 8)).shape == (1, 4)


def test_identity_holds_the_operation_set_and_resuming_with_another_is_refused() -> None:
    paper = RandGrowSearch(storage="unused")
    skips = RandGrowSearch(storage="unused", space=RandGrowSpace("s", operations=["skip_connect"]))  # type: ignore[arg-type]
    assert skips.space.operations == ("skip_connect",)
    assert paper.identity()["operations"] == list(INCREMENT_OPERATIONS)
    assert paper.identity() != skips.identity()
    study = optuna.create_study(directions=["minimize", "minimize"])
    _check_identity(study, paper)
    _check_identity(study, paper)  # same settings resume
    with pytest.raises(NasError, match=r"operations \[.*\] -> \['skip_connect'\]"):
        _check_identity(study, skips)
    with pytest.raises(NasError, match="unknown increment operator"):
        RandGrowSearch(storage="unused", space=RandGrowSpace("s", operations=("warp_3x3",)))


def test_a_study_stored_before_operations_were_configurable_resumes_with_the_paper_set() -> None:
    study = optuna.create_study(directions=["minimize", "minimize"])
    legacy = {k: v for k, v in RandGrowSearch(storage="unused").identity().items() if k != "operations"}
    study.set_user_attr(STUDY_ATTR, legacy)
    _check_identity(study, RandGrowSearch(storage="unused"))
    with pytest.raises(NasError, match="operations"):
        _check_identity(study, RandGrowSearch(storage="unused", space=RandGrowSpace("s", operations=("skip_connect",))))
