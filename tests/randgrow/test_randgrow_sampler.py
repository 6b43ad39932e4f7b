"""RandGrowSampler: parent choice from stored trials, growth proposals, and the BaseSampler contract."""

from __future__ import annotations

import json
import pickle
import threading
import zlib
from collections import Counter

import numpy as np
import optuna
import pytest
from optuna.testing.pytest_samplers import BasicSamplerTestCase, MultiObjectiveSamplerTestCase
from optuna.trial import TrialState

from optuna_nas.randgrow import (
    Architecture,
    RandGrowSampler,
    get_proposal,
    grow,
    initial_architecture,
    parent_probabilities,
    sample_increments,
)
from optuna_nas.randgrow.sampler import Proposal, proposal_attrs

optuna.logging.set_verbosity(optuna.logging.WARNING)
SMALL = initial_architecture(cells_per_block=1, channels=4, in_channels=3, num_classes=4)  # 5 cells


def _study(seed: int | None = 0, mode: str = "macro", initial: Architecture = SMALL) -> optuna.Study:
    sampler = RandGrowSampler(initial, mode=mode, seed=seed, poll_seconds=0.02, verbose=False)  # type: ignore[arg-type]
    return optuna.create_study(directions=["minimize", "minimize"], sampler=sampler)


def _fake_values(arch: Architecture) -> tuple[float, float]:
    """Bigger models are more accurate, with a deterministic wobble, so the hull is non-trivial."""
    size = len(arch.increments)
    wobble = (zlib.crc32(arch.to_json().encode()) % 1000) / 1e4
    return 50.0 / (1.0 + size) + wobble, 1000.0 + 10.0 * size + 100 * wobble


def _add_completed(study: optuna.Study, arch: Architecture, values: tuple[float, float]) -> None:
    study.add_trial(optuna.create_trial(
        state=TrialState.COMPLETE, values=list(values),
        system_attrs=_recorded(arch)))


def _recorded(arch: Architecture) -> dict:
    return proposal_attrs(Proposal(arch.to_json(), None, 0, 0))


def test_first_trial_is_the_initial_model_and_the_proposal_is_recorded() -> None:
    study = _study()
    trial = study.ask()
    proposal = get_proposal(trial)
    assert proposal is not None
    assert proposal.architecture == SMALL and proposal.parent is None
    assert proposal.new_increments == 0 and proposal.generation == 0
    assert not trial.user_attrs  # written at tell: the ask makes one storage write of its own
    study.tell(trial, [10.0, 100.0])
    frozen = study.trials[0]
    assert frozen.user_attrs == {"parent": None, "generation": 0}  # the architecture is stored once
    assert get_proposal(frozen) == proposal
    assert Architecture.from_json(get_proposal(frozen).architecture_json) == SMALL


@pytest.mark.parametrize(("mode", "expected"), [("macro", 5), ("cell", 2)])
def test_children_grow_their_parent_by_one_step(mode: str, expected: int) -> None:
    study = _study(mode=mode)
    for _ in range(6):
        trial = study.ask()
        proposal = get_proposal(trial)
        assert proposal is not None
        if proposal.parent is not None:
            parent = get_proposal(study.trials[proposal.parent])
            assert parent is not None
            assert proposal.new_increments == expected  # 3N + 2 cells (macro) or one per cell type
            assert proposal.architecture.increments[:-expected] == parent.architecture.increments
            assert proposal.generation == parent.generation + 1
            assert {i.mode for i in proposal.architecture.increments} == {mode}
            grown = parent.architecture.to_dict()
            grown["increments"] += [i.to_dict() for i in proposal.architecture.increments[-expected:]]
            assert proposal.architecture_json == json.dumps(grown)  # byte for byte what to_json writes
        study.tell(trial, list(_fake_values(proposal.architecture)))
        assert study.trials[-1].user_attrs["parent"] == proposal.parent


def test_failed_and_pruned_trials_record_their_parent_too() -> None:
    study = _study()
    _add_completed(study, SMALL, (10.0, 100.0))

    def objective(trial: optuna.Trial) -> tuple[float, float]:
        raise optuna.TrialPruned if trial.number == 1 else RuntimeError("diverged")

    study.optimize(objective, n_trials=2, catch=(RuntimeError,))
    assert [t.state for t in study.trials[1:]] == [TrialState.PRUNED, TrialState.FAIL]
    assert all(t.user_attrs == {"parent": 0, "generation": 1} for t in study.trials[1:])


def test_one_sampler_on_two_studies_grows_each_studys_own_parents() -> None:
    # parents are parsed once per trial number and reused: trial 0 of another study is another parent
    sampler = RandGrowSampler(SMALL, seed=0, verbose=False)
    other = initial_architecture(cells_per_block=1, channels=6, in_channels=3, num_classes=4)
    for initial in (SMALL, other):
        study = optuna.create_study(directions=["minimize", "minimize"], sampler=sampler)
        _add_completed(study, initial, (10.0, 100.0))
        proposal = get_proposal(study.ask())
        assert proposal is not None and proposal.parent == 0
        assert proposal.architecture.skeleton == initial.skeleton


def test_parent_is_always_on_the_stored_hull() -> None:
    study = _study(seed=3)
    for _ in range(15):
        complete = study.get_trials(states=(TrialState.COMPLETE,))
        allowed = parent_probabilities([(t.values[1], t.values[0]) for t in complete])
        trial = study.ask()
        proposal = get_proposal(trial)
        assert proposal is not None
        if complete:
            chosen = [t.number for t in complete].index(proposal.parent)
            assert allowed[chosen] > 0.0
        study.tell(trial, list(_fake_values(proposal.architecture)))


def test_parent_frequencies_follow_the_paper_probabilities() -> None:
    """The issue's worked example stored as completed trials: A 1/6, B 1/3, C 1/2, D and E never."""
    study = _study(seed=7)
    points = [(1.0, 0.5), (2.0, 0.3), (4.0, 0.2), (3.0, 0.4), (5.0, 0.25)]  # (cost, error)
    rng = np.random.RandomState(0)
    archs = [SMALL]
    for _ in range(4):
        archs.append(grow(archs[-1], sample_increments(archs[-1], "macro", rng)))
    for arch, (cost, error) in zip(archs, points, strict=True):
        _add_completed(study, arch, (error, cost))
    draws = 1200
    counts: Counter[int | None] = Counter()
    for _ in range(draws):
        trial = study.ask()
        counts[get_proposal(trial).parent] += 1  # type: ignore[union-attr]
        study.tell(trial, state=TrialState.FAIL)  # failed trials never become parents
    for number, p in enumerate(parent_probabilities(points)):
        assert abs(counts[number] / draws - p) < 0.05, (number, counts)
    assert counts[3] == 0 and counts[4] == 0


def test_only_completed_randgrow_trials_are_parents() -> None:
    study = _study()
    _add_completed(study, SMALL, (30.0, 100.0))
    # a better completed trial without an architecture, a pruned one and a failed one: never parents
    study.add_trial(optuna.create_trial(state=TrialState.COMPLETE, values=[1.0, 1.0]))
    study.add_trial(optuna.create_trial(state=TrialState.PRUNED, system_attrs=_recorded(SMALL)))
    study.add_trial(optuna.create_trial(state=TrialState.FAIL, system_attrs=_recorded(SMALL)))
    for _ in range(20):
        trial = study.ask()
        assert get_proposal(trial).parent == 0  # type: ignore[union-attr]
        study.tell(trial, state=TrialState.FAIL)


def test_a_failed_initial_model_is_proposed_again() -> None:
    study = _study()
    study.tell(study.ask(), state=TrialState.FAIL)
    second = get_proposal(study.ask())
    assert second is not None and second.parent is None and second.architecture == SMALL


def test_a_worker_waits_for_the_initial_model_of_another() -> None:
    study = _study()
    initial = study.ask()
    asked: list[optuna.Trial] = []
    waiter = threading.Thread(target=lambda: asked.append(study.ask()))
    waiter.start()
    waiter.join(timeout=0.3)
    assert waiter.is_alive() and not asked  # no completed model yet: no second initial model is trained
    study.tell(initial, [20.0, 100.0])
    waiter.join(timeout=10)
    assert asked and get_proposal(asked[0]).parent == initial.number  # type: ignore[union-attr]


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study.optimize")
def test_a_trial_waiting_longer_than_the_grace_period_is_not_failed_as_dead(tmp_path) -> None:
    """The initial model trains (and beats) on one worker far longer than the grace period while another worker
    waits in before_trial, before Optuna's heartbeat thread exists: the sampler beats for the waiting trial, so
    it is neither failed as a dead worker's nor left to write its proposal onto a finished trial."""
    from optuna.storages.journal import JournalFileBackend

    from optuna_nas.heartbeat import Heartbeat, HeartbeatJournalStorage

    storage = HeartbeatJournalStorage(JournalFileBackend(str(tmp_path / "journal.log")), Heartbeat(1, 2))
    sampler = RandGrowSampler(SMALL, seed=0, poll_seconds=0.2, verbose=False)
    study = optuna.create_study(directions=["minimize", "minimize"], sampler=sampler, storage=storage)
    initial = study.ask()
    asked: list[optuna.Trial] = []
    errors: list[BaseException] = []

    def ask() -> None:
        try:
            asked.append(study.ask())
        except BaseException as exc:  # noqa: BLE001 - the test reports it below
            errors.append(exc)

    waiter = threading.Thread(target=ask)
    waiter.start()
    for _ in range(16):  # 4 s of training, twice the grace period; the initial model's worker beats
        storage.record_heartbeat(initial._trial_id)
        waiter.join(timeout=0.25)
    assert waiter.is_alive() and not errors
    study.tell(initial, [20.0, 100.0])
    waiter.join(timeout=10)
    assert not errors and asked
    states = {t.number: t.state for t in study.get_trials(deepcopy=False)}
    assert states == {0: TrialState.COMPLETE, 1: TrialState.RUNNING}  # nothing failed, nothing retried
    assert get_proposal(asked[0]).parent == initial.number  # type: ignore[union-attr]


def test_a_retried_trial_keeps_its_proposal() -> None:
    study = _study()
    study.tell(study.ask(), [20.0, 100.0])
    child = study.ask()
    proposal = get_proposal(child)
    study.tell(child, state=TrialState.FAIL)
    with pytest.warns(optuna.exceptions.ExperimentalWarning):
        optuna.storages.RetryHeartbeatStaleTrialCallback()(study, study.trials[child.number])
    retried = study.ask()  # the WAITING copy the callback enqueued
    assert retried.number != child.number
    assert get_proposal(retried) == proposal


def test_the_study_must_minimise_error_and_cost() -> None:
    study = optuna.create_study(directions=["minimize", "maximize"], sampler=RandGrowSampler(SMALL, seed=0))
    with pytest.raises(ValueError, match="minimize"):
        study.ask()


def _proposals(study: optuna.Study, n: int) -> list[tuple[int | None, str]]:
    out = []
    for _ in range(n):
        trial = study.ask()
        proposal = get_proposal(trial)
        assert proposal is not None
        out.append((proposal.parent, proposal.architecture.to_json()))
        study.tell(trial, list(_fake_values(proposal.architecture)))
    return out


def _two_studies(first: RandGrowSampler, second: RandGrowSampler) -> tuple[optuna.Study, optuna.Study]:
    return (optuna.create_study(directions=["minimize", "minimize"], sampler=first),
            optuna.create_study(directions=["minimize", "minimize"], sampler=second))


def test_a_seed_makes_the_search_reproducible() -> None:
    assert _proposals(_study(seed=11), 6) == _proposals(_study(seed=11), 6)
    assert _proposals(_study(seed=11), 6) != _proposals(_study(seed=12), 6)


def test_pickled_sampler_proposes_the_same_children() -> None:
    sampler = RandGrowSampler(SMALL, seed=5, verbose=False)
    first, second = _two_studies(sampler, pickle.loads(pickle.dumps(sampler)))
    assert _proposals(first, 4) == _proposals(second, 4)


def test_reseed_rng_gives_replicas_their_own_streams() -> None:
    sampler = RandGrowSampler(SMALL, seed=5, verbose=False)
    clone = pickle.loads(pickle.dumps(sampler))
    clone.reseed_rng()
    first, second = _two_studies(sampler, clone)
    assert _proposals(first, 4) != _proposals(second, 4)


def test_ordinary_hyperparameters_are_sampled_in_their_range() -> None:
    study = _study()

    def objective(trial: optuna.Trial) -> tuple[float, float]:
        lr = trial.suggest_float("lr", 1e-4, 1e-1, log=True)
        width = trial.suggest_categorical("width", [8, 16])
        proposal = get_proposal(trial)
        assert proposal is not None
        error, cost = _fake_values(proposal.architecture)
        return error + lr, cost + width

    study.optimize(objective, n_trials=8)
    lrs = [t.params["lr"] for t in study.trials]
    assert all(1e-4 <= lr <= 1e-1 for lr in lrs) and len(set(lrs)) == 8
    assert {t.params["width"] for t in study.trials} <= {8, 16}


# ---------------------------------------------------------------- Optuna's own sampler conformance tests


def _conformance_sampler() -> RandGrowSampler:
    return RandGrowSampler(SMALL, seed=0, verbose=False)


class TestOptunaMultiObjectiveConformance(MultiObjectiveSamplerTestCase):
    @pytest.fixture
    def sampler(self):  # type: ignore[no-untyped-def]
        return _conformance_sampler


class TestOptunaBasicConformance(BasicSamplerTestCase):
    """Optuna's sampling tests of ordinary parameters. The tests that optimise a *single-objective* study
    (NaN values, partial fixed sampling, single distributions, single / conditional / combined / dynamic
    objectives) do not apply: RandGrowSampler refuses studies that are not [minimize, minimize]."""

    @pytest.fixture
    def sampler(self):  # type: ignore[no-untyped-def]
        return _conformance_sampler

    test_nan_objective_value = None
    test_partial_fixed_sampling = None
    test_sample_single_distribution = None
    test_single_parameter_objective = None
    test_conditional_parameter_objective = None
    test_combination_of_different_distributions_objective = None
    test_dynamic_range_objective = None
