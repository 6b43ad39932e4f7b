"""Any architecture the project can retrain: a DARTS-family genotype or a RandGrow architecture.

Both are JSON; a file says which it is (a RandGrow document has ``"format": "optuna_nas.randgrow"``).
A trial of a study says it too: RandGrow trials carry the sampler's architecture, DARTS searches a
``genotype`` user attr.
"""

from __future__ import annotations

import json
from pathlib import Path

import optuna

from .errors import NasError
from .genotypes import Genotype, load_genotype
from .randgrow.architecture import FORMAT as RANDGROW_FORMAT
from .randgrow.architecture import Architecture
from .randgrow.sampler import get_proposal
from .storage import open_storage

AnyArchitecture = Genotype | Architecture


def load_architecture(name_or_path: str) -> AnyArchitecture:
    """A built-in genotype name, a genotype JSON file, or a RandGrow architecture JSON file."""
    path = Path(name_or_path)
    if path.is_file():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise NasError(f"{path}: not valid JSON ({exc})") from None
        if isinstance(data, dict) and data.get("format") == RANDGROW_FORMAT:
            return Architecture.from_dict(data)
    return load_genotype(name_or_path)


def best_trial_number(study: optuna.Study) -> int:
    """The trial whose architecture to export by default: the best completed one (for two objectives, the
    lowest validation error, as RandGrow picks the model to train finally)."""
    complete = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
                if "duplicate_of" not in t.user_attrs]
    if not complete:
        raise NasError(f"study {study.study_name!r} has no completed trial to export")
    sign = -1.0 if study.directions[0] == optuna.study.StudyDirection.MAXIMIZE else 1.0
    return min(complete, key=lambda t: (sign * t.values[0], t.number)).number


def load_study_by_name(storage_url: str, study_name: str) -> optuna.Study:
    try:
        return optuna.load_study(study_name=study_name, storage=open_storage(storage_url))
    except KeyError:
        raise NasError(f"no study {study_name!r} in {storage_url}") from None


def architecture_of_trial(storage_url: str, study_name: str, number: int) -> AnyArchitecture:
    """The architecture trial ``number`` of a study found (RandGrow), derived (DARTS search) or trained."""
    study = load_study_by_name(storage_url, study_name)
    trials = study.get_trials(deepcopy=False)
    match = [t for t in trials if t.number == number]
    if not match:
        raise NasError(f"study {study_name!r} has no trial {number} (it has {len(trials)} trials)")
    trial = match[0]
    proposal = get_proposal(trial)
    if proposal is not None:
        return proposal.architecture
    if "genotype" in trial.user_attrs:
        return Genotype.from_dict(trial.user_attrs["genotype"])
    if "architecture" in trial.user_attrs:  # a RandGrow model's final training (a JSON string)
        return Architecture.from_json(trial.user_attrs["architecture"])
    raise NasError(f"trial {number} of {study_name!r} has no architecture (state {trial.state.name})")


def architecture_to_dict(architecture: AnyArchitecture) -> dict:
    """The JSON object ``optuna-nas retrain`` and :func:`load_architecture` accept back."""
    if isinstance(architecture, Architecture):
        return architecture.to_dict()
    return {"genotype": architecture.to_dict()}
