"""The RandGrow stage of a study file: grow a search study, hand back its best model.

Rows of RandGrow's Table 1 that share a search ("macro" and "macro without DropPath" differ only in the
final training) share one growth study, named from the search settings; trials of several workers that
need it grow it together (RandGrow's workers need no coordination beyond the storage), and once it has
``n_models`` completed models every later trial reuses it.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import TrialState

from .randgrow.objective import INITIAL_TRAINING, SEARCH_TRAINING, RandGrowJob
from .randgrow.search import RandGrowSearch, run_randgrow
from .randgrow.space import load_randgrow_space
from .storage import run_key

if TYPE_CHECKING:
    from .studies import StudyObjective


def growth_search(runner: StudyObjective, grow: dict[str, Any]) -> RandGrowSearch:
    space = load_randgrow_space(grow["space"])
    n = grow["cells_per_block"] or space.cells_per_block
    f = grow["channels"] or space.channels
    options = runner.options
    search_settings = replace(SEARCH_TRAINING, epochs=grow["epochs"], cycles=grow["cycles"],
                              batch_size=grow["batch_size"], lr=grow["lr"], cutout=grow["cutout"])
    initial_settings = replace(INITIAL_TRAINING, epochs=grow["initial_epochs"], batch_size=grow["batch_size"],
                               lr=grow["lr"], cutout=grow["cutout"])
    job = RandGrowJob(dataset=runner.spec.search_dataset, data_root=runner.spec.data_root, cost=grow["cost"],
                      val_portion=grow["val_portion"], search=search_settings, initial=initial_settings,
                      function_preserving=grow["function_preserving"], seed=grow["seed"], device=runner.device,
                      artifact_dir=options.artifact_dir, verbose=options.verbose)
    key = run_key(runner.study_name, {"space": space.name, "mode": space.mode, "n": n, "f": f,
                                      "operations": list(space.operations), **grow})
    name = f"{runner.study_name}-grow-{space.mode}-N{n}-F{f}-{key[:6]}"
    return RandGrowSearch(storage=options.storage, study_name=name, mode=space.mode, cells_per_block=n, channels=f,
                          n_trials=grow["n_models"], seed=grow["seed"], job=job, operations=space.operations)


def best_grown_model(runner: StudyObjective, grow: dict[str, Any]) -> tuple[optuna.trial.FrozenTrial, optuna.Study]:
    """Grow the row's search study to ``n_models`` models (or find it grown), then its lowest validation
    error model: the paper retrains "the best models obtained via the search procedure (in terms of
    validation error)"."""
    search = growth_search(runner, grow)
    study = run_randgrow(search, n_workers=1)
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    best = min(complete, key=lambda t: (t.values[0], t.number))
    return best, study
