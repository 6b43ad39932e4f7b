"""RandGrowSampler: RandGrow's parent choice and random growth as a multi-objective Optuna sampler.

The study has two objectives, both minimised: validation error, then cost (parameters or multiply-adds).
At ask time (``before_trial``) the sampler reads the completed trials *from storage*, draws a parent from
their lower convex hull (:func:`~optuna_nas.randgrow.hull.choose_parent`) and appends one growth step of
random increments (:func:`~optuna_nas.randgrow.growth.sample_increments`). The proposal is written
onto the trial before the objective runs:

* one system attr (for samplers and objectives), ``randgrow:proposal``: the child's architecture (a JSON
  string), its parent's trial number (``None`` for the initial model), how many stored increments the
  child adds, and its generation;
* user attrs (for people, ``optuna trials`` and the dashboard): ``parent`` and ``generation`` (growth steps
  from the initial model), written when the trial is told (``after_trial``), not at ask: every write is a
  storage round trip, and the ask is what concurrent workers wait on. While a trial runs,
  :func:`get_proposal` has both. The architecture itself is not repeated in user attrs: it grows by
  ``3N + 2`` increments a generation, and every ask reads every stored trial.

Nothing is kept only in memory, so any number of workers on shared storage cooperate as the paper's
parallel workers do: each computes the hull from what is stored when it asks.

Choices the paper leaves open (documented here, tested in ``tests/randgrow/test_randgrow_sampler.py``):

* The first trial of a study is the initial model. Every other model grows from a completed one, so a
  worker that asks while the initial model is still training in another trial (no completed trial yet, an
  earlier trial running) waits inside ``before_trial`` for it instead of training a second initial model.
  That is the only wait, and it ends as soon as it can: the storage is read at once and then every
  ``poll_seconds``, and ``before_trial`` returns as soon as the initial model completes (the trial grows
  from it) or fails (the trial becomes the initial model). While it waits, the sampler beats for the
  waiting trial on storages with heartbeats (so it is not failed as a dead worker's) and fails the stale
  trials of dead workers (``fail_stale_trials``), so a killed initial model never blocks the others.
* Only completed trials that carry a RandGrow architecture can be parents (a trial added by hand without
  one is ignored); failed, pruned and running trials never are.
* A retried trial (``RetryFailedTrialCallback`` copies system attrs) keeps its proposal, so it trains the
  same child and can resume from its checkpoint.
* With a ``seed``, a trial's draws come from a generator seeded by (seed, trial number): the same study
  replayed in the same order proposes the same children, and workers never share a random stream.
* Ordinary hyperparameters an objective suggests (a learning rate, say) go to ``independent_sampler``
  (default: :class:`optuna.samplers.RandomSampler` with the same seed).
"""

from __future__ import annotations

import json
import math
import sys
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler, RandomSampler
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from .architecture import (
    INCREMENT_OPERATIONS,
    AnyIncrement,
    Architecture,
    SearchMode,
    Skeleton,
    check_operations,
    initial_architecture,
)
from .growth import sample_increments
from .hull import choose_parent

if TYPE_CHECKING:
    from optuna.study import Study

ATTR_PROPOSAL = "randgrow:proposal"
DIRECTIONS = (StudyDirection.MINIMIZE, StudyDirection.MINIMIZE)
_ACTIVE = (TrialState.RUNNING, TrialState.WAITING)


@dataclass(frozen=True)
class Proposal:
    """What the sampler proposed for one trial: the child to train and where it grew from."""

    architecture_json: str  # stored as a JSON string: cheap to copy, which Optuna does on every tell
    parent: int | None  # trial number of the parent; None for the initial model
    new_increments: int  # the last ``new_increments`` stored increments are new (random initialisation)
    generation: int  # growth steps from the initial model

    @cached_property
    def architecture(self) -> Architecture:
        return Architecture.from_json(self.architecture_json)


def _as_json(raw: Any) -> str:
    """Architectures are stored as JSON strings; a JSON object (written by hand or by an older version)
    is accepted too."""
    return raw if isinstance(raw, str) else json.dumps(raw)


def _system_attrs(trial: optuna.Trial | FrozenTrial) -> Mapping[str, Any]:
    if isinstance(trial, FrozenTrial):
        return trial.system_attrs
    # optuna.Trial exposes no system attrs; its storage does, by the trial's private id
    return trial.storage.get_trial_system_attrs(trial._trial_id)


def get_proposal(trial: optuna.Trial | FrozenTrial) -> Proposal | None:
    """The RandGrow proposal recorded on ``trial``, or None when RandGrowSampler did not propose one."""
    stored = _system_attrs(trial).get(ATTR_PROPOSAL)
    if stored is None:
        return None
    return Proposal(
        architecture_json=_as_json(stored["architecture"]),
        parent=stored.get("parent"),
        new_increments=int(stored.get("new_increments", 0)),
        generation=int(stored.get("generation", 0)),
    )


def proposal_attrs(proposal: Proposal) -> dict[str, Any]:
    """The system attrs that record ``proposal`` on a trial (one attr: one storage write)."""
    return {ATTR_PROPOSAL: {"architecture": proposal.architecture_json, "parent": proposal.parent,
                            "new_increments": proposal.new_increments, "generation": proposal.generation}}


@dataclass(frozen=True)
class _GrowableJson:
    """A parent's architecture JSON, split so that a child's is the parent's with increments appended
    (string joins instead of a parse and a dump of the whole increment list per ask)."""

    source: str
    skeleton: Architecture  # the skeleton alone: all that drawing increments needs
    head: str  # the JSON object without its increments, up to (not including) the closing brace
    increments: str  # the parent's increments as JSON array items, without the brackets

    @classmethod
    def parse(cls, architecture_json: str) -> _GrowableJson:
        data = json.loads(architecture_json)
        # the objective validates the whole child when it builds it; drawing needs the skeleton only
        items = json.dumps(list(data.pop("increments", [])))[1:-1]
        skeleton = Architecture(Skeleton(**data["skeleton"]))
        return cls(architecture_json, skeleton, json.dumps(data)[:-1], items)

    def child_json(self, increments: Sequence[AnyIncrement]) -> str:
        new = json.dumps([i.to_dict() for i in increments])[1:-1]
        items = ", ".join(part for part in (self.increments, new) if part)
        return f'{self.head}, "increments": [{items}]}}'


_PARENTS_KEPT = 64


class RandGrowSampler(BaseSampler):
    """Grow networks from the lower convex hull of (cost, validation error), as RandGrow (Hu et al., 2019).

    Args:
        initial: the initial model (default: the paper's N=6, F=32 skeleton for 10 classes).
        mode: ``"macro"`` (``3N + 2`` increments anywhere per trial) or ``"cell"`` (one per cell type,
            replicated into every cell of that type).
        seed: makes proposals reproducible (see the module notes); None draws from fresh entropy.
        independent_sampler: samples the ordinary hyperparameters an objective suggests.
        poll_seconds: how often a worker waiting for the initial model looks at the storage again.
        verbose: print one line when a worker starts waiting for the initial model.
        operations: the operators an increment input draws from, uniformly (default: the paper's five);
            any operator the network can build, each once.

    The study must minimise two objectives, validation error first and cost second.
    """

    def __init__(
        self,
        initial: Architecture | None = None,
        mode: SearchMode = "macro",
        seed: int | None = None,
        independent_sampler: BaseSampler | None = None,
        poll_seconds: float = 2.0,
        verbose: bool = True,
        operations: Sequence[str] = INCREMENT_OPERATIONS,
    ) -> None:
        if mode not in ("macro", "cell"):
            raise ValueError(f'unknown RandGrow search mode {mode!r}; known: "macro", "cell"')
        self.initial = initial if initial is not None else initial_architecture()
        if self.initial.increments and {i.mode for i in self.initial.increments} != {mode}:
            raise ValueError(f"the initial architecture's increments are not {mode} increments")
        self.mode = mode
        self.operations = check_operations(operations)
        self._seed = seed
        self._entropy = np.random.RandomState(seed)
        self._independent_sampler = independent_sampler or RandomSampler(seed=seed)
        self.poll_seconds = poll_seconds
        self.verbose = verbose
        self._parents: dict[int, _GrowableJson] = {}  # parsed parents by trial number, oldest first

    # ------------------------------------------------------------------ BaseSampler contract

    def reseed_rng(self) -> None:
        # Replicas of this sampler (``n_jobs`` threads) must not share a stream: forget the seed.
        self._seed = None
        self._entropy.seed()
        self._independent_sampler.reseed_rng()

    def infer_relative_search_space(self, study: Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return {}  # the architecture is proposed in before_trial, not as params

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return {}

    def sample_independent(
        self, study: Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        return self._independent_sampler.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        self._independent_sampler.before_trial(study, trial)
        if ATTR_PROPOSAL in trial.system_attrs:  # a retried or enqueued trial keeps its proposal
            return
        if tuple(study.directions) != DIRECTIONS:
            raise ValueError(
                "RandGrowSampler needs a study with directions ['minimize', 'minimize'] "
                f"(validation error, cost); this study has {[d.name.lower() for d in study.directions]}"
            )
        proposal = self.propose(study, trial)
        self._record(study, trial, proposal)

    def after_trial(
        self, study: Study, trial: FrozenTrial, state: TrialState, values: Sequence[float] | None
    ) -> None:
        self._independent_sampler.after_trial(study, trial, state, values)
        proposal = get_proposal(trial)
        if proposal is not None and "parent" not in trial.user_attrs:
            for key, value in {"parent": proposal.parent, "generation": proposal.generation}.items():
                study._storage.set_trial_user_attr(trial._trial_id, key, value)  # the trial is not finished yet

    # ------------------------------------------------------------------ RandGrow

    def _trial_rng(self, number: int) -> np.random.RandomState:
        if self._seed is None:
            return np.random.RandomState(self._entropy.randint(2**31))
        return np.random.RandomState(np.random.SeedSequence([self._seed, number]).generate_state(1))

    def propose(self, study: Study, trial: FrozenTrial) -> Proposal:
        """Choose the parent from the stored hull and grow it; the initial model when there is none."""
        rng = self._trial_rng(trial.number)
        announced = False
        while True:
            parents, points = self._candidate_points(study)
            if parents:
                parent = parents[choose_parent(points, rng)]
                stored = parent.system_attrs[ATTR_PROPOSAL]
                grown = self._growable(parent.number, _as_json(stored["architecture"]))
                increments = sample_increments(grown.skeleton, self.mode, rng, self.operations)
                return Proposal(grown.child_json(increments), parent.number, len(increments),
                                int(stored.get("generation", 0)) + 1)
            earlier = [t for t in study.get_trials(deepcopy=False, states=_ACTIVE) if t.number < trial.number]
            if not earlier:
                return Proposal(self.initial.to_json(), None, 0, 0)
            if self.verbose and not announced:
                print(f"[randgrow] trial {trial.number} waits for the initial model (trial {earlier[0].number})",
                      file=sys.stderr)
                announced = True
            time.sleep(self.poll_seconds)
            self._beat(study, trial)
            with warnings.catch_warnings():  # "experimental" since Optuna 2.9, and what heartbeats are for
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(study)  # a dead worker's initial model must not block us

    def _growable(self, number: int, architecture_json: str) -> _GrowableJson:
        # A completed trial never changes, and the hull offers the same few parents ask after ask: parse each
        # parent's (possibly long) JSON once per worker, not once per ask.
        grown = self._parents.pop(number, None)
        if grown is None or grown.source != architecture_json:
            grown = _GrowableJson.parse(architecture_json)
        self._parents[number] = grown
        while len(self._parents) > _PARENTS_KEPT:
            self._parents.pop(next(iter(self._parents)))
        return grown

    @staticmethod
    def _beat(study: Study, trial: FrozenTrial) -> None:
        """One heartbeat for a trial that waits in ``before_trial`` (Optuna's heartbeat thread starts only
        after ``ask`` returns). Samplers reach the storage through ``study._storage``, as Optuna's own do: no
        public accessor exists, and ``_trial_id`` is the only id the storage takes."""
        storage = study._storage
        interval = getattr(storage, "get_heartbeat_interval", lambda: None)()
        if interval:
            storage.record_heartbeat(trial._trial_id)  # type: ignore[attr-defined]

    @staticmethod
    def parent_candidates(study: Study) -> list[FrozenTrial]:
        """Completed trials that carry a RandGrow architecture and two finite values."""
        return RandGrowSampler._candidate_points(study)[0]

    @staticmethod
    def _candidate_points(study: Study) -> tuple[list[FrozenTrial], list[tuple[float, float]]]:
        """:meth:`parent_candidates` and their (cost, error) points, in one pass: every ask runs this over
        every completed trial (``FrozenTrial.values`` copies its list at each access)."""
        trials, points = [], []
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            values = t.values
            if (values is not None and len(values) == 2 and math.isfinite(values[0]) and math.isfinite(values[1])
                    and ATTR_PROPOSAL in t.system_attrs):
                trials.append(t)
                points.append((float(values[1]), float(values[0])))
        return trials, points

    @staticmethod
    def _record(study: Study, trial: FrozenTrial, proposal: Proposal) -> None:
        # A sampler writes its trial's attrs through the storage, as Optuna's samplers do: a FrozenTrial in
        # before_trial has no public setter, and the storage knows trials by their private id.
        storage, trial_id = study._storage, trial._trial_id
        for key, value in proposal_attrs(proposal).items():
            storage.set_trial_system_attr(trial_id, key, value)
            trial.system_attrs[key] = value  # this is the Trial's cached copy: keep it in step
