"""One ``optuna-nas run`` worker that SIGKILLs itself at chosen points, for tests/study/test_faults.py.

    python tests/study/_faulty_worker.py --kill-at POINT [--kill-at POINT ...] --seed N --probability P \\
        [--tokens DIR --max-kills K] -- run STUDY.yaml --storage URL --artifact-dir DIR ...

The library is monkeypatched in this process only (no hook in the library): every time the worker passes an
armed point it draws from ``random.Random(seed)`` and, with probability ``P``, dies there with
``os.kill(os.getpid(), signal.SIGKILL)``, as a machine that loses power would. Points:

* ``epoch``: inside an epoch of ``optuna_nas.train.supervised_epoch``, after some of its batches;
* ``checkpoint-write``: inside ``ArtifactCheckpointer.save``: midway through writing the new artifact's bytes
  (a truncated artifact is written with the store's ``write``), after the new artifact is written but before
  the run's attr points at it, or after pointing but before the previous checkpoint is removed;
* ``upload``: around the final ``weights.pt`` upload of a retraining: before it, midway through writing its
  bytes (Optuna records the artifact's meta first, then writes the file), or after it but before the trial
  completes;
* ``between-trials``: right after a trial completed: before or after its checkpoint is discarded (the
  callback ``optuna_nas.study.runner.discard_finished_checkpoints`` gives every finished trial to).

``--tokens DIR --max-kills K`` caps the kills of all workers sharing ``DIR``: a worker claims a token file
(``kill-<i>``, created exclusively) when it decides to die, and writes into it where it died; without a token
left it lives on. Each trial the worker starts is announced on stderr (``[faulty-worker] pid P runs trial N``).
The rest of the command line is ``optuna-nas``'s, run with ``--n-workers 1`` in this process.
"""

from __future__ import annotations

import argparse
import inspect
import os
import random
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO, NoReturn

POINTS = ("epoch", "checkpoint-write", "upload", "between-trials")


class Fault:
    """Where and how often this worker dies; ``armed`` names a kill planned inside the call in progress."""

    def __init__(self, points: Sequence[str], seed: int, probability: float, tokens: Path | None,
                 max_kills: int) -> None:
        self.points = set(points)
        self.rng = random.Random(seed)
        self.probability = probability
        self.tokens = tokens
        self.max_kills = max_kills
        self.token: Path | None = None
        self.armed: str | None = None

    def decide(self, point: str) -> bool:
        """Whether to die at this pass of ``point``: a seeded draw, then a free token (if kills are capped)."""
        if point not in self.points or self.probability <= 0 or self.rng.random() >= self.probability:
            return False
        if self.tokens is None:
            return True
        for i in range(self.max_kills):
            path = self.tokens / f"kill-{i}"
            try:
                os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                continue
            self.token = path
            return True
        return False

    def die(self, where: str) -> NoReturn:
        line = f"SIGKILL pid {os.getpid()} at {where}"
        if self.token is not None:
            self.token.write_text(line + "\n")
        print(f"[faulty-worker] {line}", file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        raise AssertionError("unreachable: SIGKILL was sent")


class DyingBatches:
    """An epoch's batches that kill the worker once ``after`` of them were trained on."""

    def __init__(self, batches: Any, after: int, fault: Fault, desc: str) -> None:
        self.batches, self.after, self.fault, self.desc = batches, after, fault, desc

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[Any]:
        for i, batch in enumerate(self.batches):
            if i == self.after:
                self.fault.die(f"epoch: {self.desc}, after {i} of {len(self)} batches")
            yield batch


def install(fault: Fault) -> None:
    """Patch the library in this process so that it dies where ``fault`` says."""
    import optuna

    import optuna_nas.artifacts as artifacts
    import optuna_nas.retrain as retrain
    import optuna_nas.study.runner as runner
    import optuna_nas.study.stages as stages
    import optuna_nas.train as train

    # not a fault: which trial this process runs, for the test to see a trial run by two workers at once
    objective_call = stages.StudyObjective.__call__

    def announced_call(self: stages.StudyObjective, trial: optuna.Trial) -> float:
        print(f"[faulty-worker] pid {os.getpid()} runs trial {trial.number}", file=sys.stderr, flush=True)
        return objective_call(self, trial)

    stages.StudyObjective.__call__ = announced_call  # type: ignore[method-assign]

    # epoch: train_classifier looks supervised_epoch up in optuna_nas.train when it runs an epoch
    supervised_epoch = train.supervised_epoch
    epoch_signature = inspect.signature(supervised_epoch)

    def dying_epoch(*args: Any, **kwargs: Any) -> dict[str, float]:
        call = epoch_signature.bind(*args, **kwargs)
        batches = call.arguments["batches"]
        if len(batches) > 1 and fault.decide("epoch"):
            call.arguments["batches"] = DyingBatches(batches, fault.rng.randrange(1, len(batches)), fault,
                                                     str(call.arguments.get("desc", "an epoch")))
        return supervised_epoch(*call.args, **call.kwargs)

    train.supervised_epoch = dying_epoch

    # a torn write: the worker dies with half of the bytes written. The project's directory store writes into a
    # temporary file that it renames into place, so a crash mid-write leaves that partial file, never a partial
    # artifact under its id: that is what is left here.
    store_class = artifacts.AtomicFileSystemArtifactStore
    write = store_class.write

    def dying_write(self: Any, artifact_id: str, content_body: BinaryIO) -> None:
        if fault.armed not in ("torn-checkpoint", "torn-upload"):
            return write(self, artifact_id, content_body)
        data = content_body.read()
        target = self._get_filepath(artifact_id)
        target.with_name(f".{target.name}.torn.partial").write_bytes(data[: len(data) // 2])
        what = "checkpoint" if fault.armed == "torn-checkpoint" else "final weights"
        fault.die(f"{fault.armed}: {what} {artifact_id} written to {len(data) // 2} of {len(data)} bytes")

    store_class.write = dying_write  # type: ignore[method-assign]

    # checkpoint-write: ArtifactCheckpointer.save writes, points the run's attr, removes the previous artifact
    save, set_attr, remove = artifacts.ArtifactCheckpointer.save, artifacts.set_study_system_attr, \
        artifacts._remove_quietly

    def dying_save(self: artifacts.ArtifactCheckpointer, state: dict[str, Any]) -> None:
        if fault.decide("checkpoint-write"):
            fault.armed = fault.rng.choice(["torn-checkpoint", "checkpoint-written", "checkpoint-pointed"])
        try:
            save(self, state)
        finally:
            armed, fault.armed = fault.armed, None
        if armed == "checkpoint-pointed":  # there was no previous checkpoint to remove
            fault.die(f"checkpoint-pointed: run {self.key} points at its first checkpoint")

    def dying_set_attr(study: optuna.Study, key: str, value: Any) -> None:
        if fault.armed == "checkpoint-written" and key.startswith(artifacts.CHECKPOINT_ATTR):
            fault.die(f"checkpoint-written: {value} written, {key} not yet pointing at it")
        set_attr(study, key, value)

    def dying_remove(store: Any, artifact_id: str) -> None:
        if fault.armed == "checkpoint-pointed":
            fault.die(f"checkpoint-pointed: the previous checkpoint {artifact_id} not yet removed")
        remove(store, artifact_id)

    artifacts.ArtifactCheckpointer.save = dying_save  # type: ignore[method-assign]
    artifacts.set_study_system_attr = dying_set_attr
    artifacts._remove_quietly = dying_remove

    # upload: RetrainObjective.train calls upload_state (imported by name into optuna_nas.retrain) for weights.pt
    upload_state = retrain.upload_state
    upload_signature = inspect.signature(upload_state)

    def dying_upload(*args: Any, **kwargs: Any) -> str:
        call = upload_signature.bind(*args, **kwargs)
        trial, filename = call.arguments["trial"], call.arguments["filename"]
        variant = None
        if filename == retrain.WEIGHTS_FILE and fault.decide("upload"):
            variant = fault.rng.choice(["before", "torn", "after"])
        if variant == "before":
            fault.die(f"upload-before: trial {trial.number}'s {filename} not uploaded yet")
        fault.armed = "torn-upload" if variant == "torn" else None
        try:
            artifact_id = upload_state(*call.args, **call.kwargs)
        finally:
            fault.armed = None
        if variant == "after":
            fault.die(f"upload-after: trial {trial.number}'s {filename} uploaded as {artifact_id}, trial not complete")
        return artifact_id

    retrain.upload_state = dying_upload

    # between-trials: the callback every finished trial of a grid worker is given to (looked up by name per trial)
    discard = runner.discard_finished_checkpoints

    def dying_discard(artifact_store: str) -> Callable[[optuna.Study, optuna.trial.FrozenTrial], None]:
        callback = discard(artifact_store)

        def wrapped(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
            variant = None
            if trial.state == optuna.trial.TrialState.COMPLETE and fault.decide("between-trials"):
                variant = fault.rng.choice(["completed", "discarded"])
            if variant == "completed":
                fault.die(f"between-trials: trial {trial.number} complete, its checkpoint not discarded yet")
            callback(study, trial)
            if variant == "discarded":
                fault.die(f"between-trials: trial {trial.number} complete, its checkpoint discarded")

        return wrapped

    runner.discard_finished_checkpoints = dying_discard


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kill-at", action="append", choices=POINTS, required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--probability", type=float, required=True)
    parser.add_argument("--tokens", type=Path, help="directory of kill tokens shared by the workers")
    parser.add_argument("--max-kills", type=int, default=3)
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- and optuna-nas's arguments")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if "--n-workers" not in command:
        command += ["--n-workers", "1"]
    install(Fault(args.kill_at, args.seed, args.probability, args.tokens, args.max_kills))
    from optuna_nas.cli import main as nas_main

    return nas_main(command)


if __name__ == "__main__":
    sys.exit(main())
