"""The one training loop every engine uses: epochs, checkpoints, resume, callbacks, progress.

``EpochLoop`` owns what every run shares: the epoch counter, the timm scheduler, a checkpoint after
every epoch (written atomically, loaded with ``weights_only=True``), the per-epoch callbacks (Optuna
reporting and pruning) and progress output. What happens inside an epoch is a function passed in:
``supervised_epoch`` for retraining a fixed network, the tri-level step for a DARTS search.
"""

from __future__ import annotations

import copy
import math
import os
import random
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from timm.loss import LabelSmoothingCrossEntropy
from timm.scheduler import CosineLRScheduler
from timm.utils import AverageMeter, accuracy, dispatch_clip_grad
from torch import nn
from tqdm import tqdm

from .data import ImageDataset, make_batches
from .distributed import Replicas
from .errors import NasError, TrainingDiverged

# Called after every epoch with (epochs done, metrics); after a resume, first once per restored epoch with
# metrics["replayed"] set, so a new Optuna trial gets the whole learning curve.
EpochCallback = Callable[[int, dict[str, Any]], None]


def resolve_device(name: str | None = None) -> torch.device:
    """``auto`` (or None) picks CUDA when present; otherwise the named device."""
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise NasError(f"device {name!r} requested but CUDA is not available")
    return torch.device(name)


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; returns the generator that drives data order and augmentation."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


AMP_MODES = ("bf16", "fp16", "off")


def amp_mode(value: str | bool) -> str:
    """Mixed precision as one of :data:`AMP_MODES` (``True`` is bf16, ``False`` off, as settings once had it)."""
    if isinstance(value, bool):
        return "bf16" if value else "off"
    if value not in AMP_MODES:
        raise NasError(f"amp must be {', '.join(AMP_MODES)}, got {value!r}")
    return value


def autocast(device: torch.device, amp: str | bool) -> AbstractContextManager[Any]:
    """Mixed precision on CUDA: bfloat16 (Ampere and later; needs no loss scaling; pre-Ampere GPUs run fp32
    with it) or float16 (any CUDA GPU, with :func:`grad_scaler`); a no-op on CPU."""
    mode = amp_mode(amp)
    if device.type != "cuda" or mode == "off":
        return nullcontext()
    if mode == "bf16":
        return torch.autocast("cuda", dtype=torch.bfloat16) if torch.cuda.is_bf16_supported() else nullcontext()
    return torch.autocast("cuda", dtype=torch.float16)


def grad_scaler(device: torch.device, amp: str | bool) -> torch.amp.GradScaler:
    """The loss scaler float16 needs (disabled, and so a pass-through, for bf16, off and CPU)."""
    return torch.amp.GradScaler("cuda", enabled=device.type == "cuda" and amp_mode(amp) == "fp16")


def check_finite(loss: torch.Tensor, where: str) -> None:
    value = float(loss.detach())
    if not math.isfinite(value):
        raise TrainingDiverged(f"loss became {value} at {where}; lower the learning rate or check the data")


# ---------------------------------------------------------------- checkpoints


class UnreadableCheckpoint(NasError):
    """A run's checkpoint that exists but cannot be used: truncated, foreign, gone, or of another network."""


class Checkpointer:
    """One file per run, replaced atomically after every epoch; loads only tensors and plain data. A file that
    cannot be read is set aside (renamed, kept for inspection) so that the run starts over instead of failing."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @property
    def location(self) -> str:
        return str(self.path)

    def save(self, state: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        torch.save(state, tmp)
        os.replace(tmp, self.path)  # a crash mid-write never leaves a half-written checkpoint

    def load(self) -> dict[str, Any] | None:
        if not self.path.exists():
            return None
        try:
            return torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises several types for truncated or foreign files
            raise UnreadableCheckpoint(f"unreadable ({type(exc).__name__})") from None

    def set_aside(self) -> str | None:
        """Move the checkpoint out of the run's way, kept for inspection; returns where it is now."""
        kept = self.path.with_name(f"{self.path.name}.corrupt")
        n = 1
        while kept.exists():
            n += 1
            kept = self.path.with_name(f"{self.path.name}.corrupt{n}")
        try:
            os.replace(self.path, kept)
        except FileNotFoundError:
            return None
        return str(kept)


# ---------------------------------------------------------------- the epoch loop


@dataclass
class LoopState:
    epoch: int = 0  # epochs completed
    history: list[dict[str, Any]] | None = None


class EpochLoop:
    """Runs ``epochs`` epochs of ``train_epoch`` then ``evaluate``, resuming from the checkpoint if any.

    ``modules`` and ``optimizers`` are everything whose state must survive an interruption (a loss scaler
    counts as an optimizer). With ``replicas`` (data-parallel training), the lead alone reads and writes the
    checkpoint, prints and calls the callbacks; it shares the restored state, and whether to go on after each
    epoch, with the other processes.
    """

    def __init__(self, epochs: int, modules: dict[str, nn.Module], optimizers: dict[str, Any],
                 scheduler: CosineLRScheduler | None, generator: torch.Generator,
                 checkpoint: Checkpointer | None = None, callbacks: Iterable[EpochCallback] = (),
                 desc: str = "train", verbose: bool = True, replicas: Replicas | None = None) -> None:
        self.replicas = replicas
        if replicas is not None and not replicas.lead:
            checkpoint, callbacks, verbose = None, (), False
        if epochs < 1:
            raise NasError(f"epochs must be >= 1, got {epochs}")
        self.epochs = epochs
        self.modules = modules
        self.optimizers = optimizers
        self.scheduler = scheduler
        self.generator = generator
        self.checkpoint = checkpoint
        self.callbacks = list(callbacks)
        self.desc = desc
        self.verbose = verbose
        self.state = LoopState(0, [])

    def _state_dict(self, extra: dict[str, Any]) -> dict[str, Any]:
        return {
            "epoch": self.state.epoch,
            "history": self.state.history,
            "modules": {k: m.state_dict() for k, m in self.modules.items()},
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "scheduler": self.scheduler.state_dict() if self.scheduler else None,
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "extra": extra,
        }

    def resume(self) -> dict[str, Any]:
        """Restore from the checkpoint; returns its ``extra`` payload (empty when starting fresh). A checkpoint
        that cannot be used is set aside with one warning line, and the run starts from epoch 0."""
        extra = self._resume()
        if self.replicas is None:
            return extra
        shared = self.replicas.share(self._state_dict(extra) if self.state.epoch else None)
        if shared is not None and not self.replicas.lead:
            self._restore(shared)
        return dict(shared["extra"]) if shared is not None else {}

    def _resume(self) -> dict[str, Any]:
        if self.checkpoint is None:
            return {}
        try:
            saved = self.checkpoint.load()
            if saved is None:
                return {}
            self._restore(saved)
        except UnreadableCheckpoint as exc:
            kept = self.checkpoint.set_aside()
            where = f"; kept as {kept}" if kept else ""
            print(f"[{self.desc}] warning: the checkpoint in {self.checkpoint.location} is {exc}{where}; this run "
                  "starts again from epoch 0", file=sys.stderr)
            return {}
        if self.verbose:
            print(f"[{self.desc}] resumed from {self.checkpoint.location} after epoch {self.state.epoch}",
                  file=sys.stderr)
        return dict(saved.get("extra") or {})

    def _restore(self, saved: dict[str, Any]) -> None:
        """Everything from ``saved``, or nothing: a checkpoint of another network leaves the fresh state as it was."""
        modules = {k: copy.deepcopy(m.state_dict()) for k, m in self.modules.items()}
        optimizers = {k: copy.deepcopy(o.state_dict()) for k, o in self.optimizers.items()}
        generator, torch_rng = self.generator.get_state(), torch.get_rng_state()
        try:
            state = LoopState(int(saved["epoch"]), list(saved["history"]))
            for k, m in self.modules.items():
                m.load_state_dict(saved["modules"][k])
            for k, o in self.optimizers.items():
                o.load_state_dict(saved["optimizers"][k])
            if self.scheduler and saved["scheduler"]:
                self.scheduler.load_state_dict(saved["scheduler"])
            self.generator.set_state(saved["generator"])
            torch.set_rng_state(saved["torch_rng"])
        except (KeyError, RuntimeError, ValueError, TypeError) as exc:
            for k, m in self.modules.items():
                m.load_state_dict(modules[k])
            for k, o in self.optimizers.items():
                o.load_state_dict(optimizers[k])
            self.generator.set_state(generator)
            torch.set_rng_state(torch_rng)
            raise UnreadableCheckpoint(f"not a checkpoint of this run ({type(exc).__name__})") from None
        self.state = state

    def run(self, train_epoch: Callable[[int], dict[str, Any]], evaluate: Callable[[int], dict[str, Any]],
            extra: Callable[[], dict[str, Any]] = dict) -> list[dict[str, Any]]:
        history = self.state.history
        assert history is not None
        for metrics in history:  # a resumed run shows its whole curve again (e.g. to a new Optuna trial)
            for callback in self.callbacks:
                callback(int(metrics["epoch"]), {**metrics, "replayed": True})
        for epoch in range(self.state.epoch, self.epochs):
            if self.scheduler is not None:
                self.scheduler.step(epoch)
            start = time.perf_counter()
            metrics: dict[str, Any] = {"epoch": epoch + 1}
            metrics["lr"] = next(iter(self.optimizers.values())).param_groups[0]["lr"]
            metrics.update(train_epoch(epoch))
            metrics.update(evaluate(epoch))
            metrics["seconds"] = time.perf_counter() - start
            history.append(metrics)
            self.state.epoch = epoch + 1
            if self.checkpoint is not None:
                self.checkpoint.save(self._state_dict(extra()))
            if self.verbose:
                shown = "  ".join(f"{k} {v:.4g}" for k, v in metrics.items()
                                  if isinstance(v, float | int) and k != "epoch")
                print(f"[{self.desc}] epoch {epoch + 1}/{self.epochs}  {shown}", file=sys.stderr)
            try:
                for callback in self.callbacks:  # may raise optuna.TrialPruned after the checkpoint is safe
                    callback(epoch + 1, metrics)
            except BaseException:
                if self.replicas is not None:  # the others stop with the lead
                    self.replicas.share(True)
                raise
            if self.replicas is not None and self.replicas.share(False):
                break  # the lead stopped (pruned, interrupted, failed)
        return history


def progress(batches: Iterable[Any], desc: str, total: int) -> Iterable[Any]:
    """A progress bar on terminals; silent in logs and CI (one line per epoch is printed instead)."""
    return tqdm(batches, desc=desc, total=total, leave=False, disable=None, file=sys.stderr)


# ---------------------------------------------------------------- supervised training of a fixed network


@dataclass(frozen=True)
class TrainSettings:
    """Retraining hyperparameters; the defaults are A-DARTS's CIFAR-10 retraining (Section 4)."""

    epochs: int = 600
    batch_size: int = 128
    lr: float = 0.03
    lr_min: float = 0.0
    momentum: float = 0.9
    weight_decay: float = 3e-4
    grad_clip: float = 5.0
    warmup_epochs: int = 0
    cycles: int = 1  # > 1: SGDR, the cosine schedule restarts this many times (RandGrow's search: 2)
    label_smoothing: float = 0.0
    auxiliary_weight: float = 0.4
    drop_path_prob: float = 0.4  # the paper's "dropout rate of 0.4", as a linearly scheduled drop path
    cutout: bool = True
    amp: str | bool = "bf16"  # bf16, fp16 (with a loss scaler) or off; CUDA only
    channels_last: bool = True  # memory format of network and batches: faster convolutions

    def __post_init__(self) -> None:
        object.__setattr__(self, "amp", amp_mode(self.amp))
        if self.batch_size < 1 or self.lr <= 0 or self.epochs < 1:
            raise NasError("epochs, batch size and learning rate must be positive")
        if not 1 <= self.cycles <= self.epochs:
            raise NasError(f"cycles must be between 1 and the number of epochs ({self.epochs}), got {self.cycles}")
        if not 0.0 <= self.drop_path_prob < 1.0:
            raise NasError(f"drop path probability must be in [0, 1), got {self.drop_path_prob}")


def cosine_scheduler(optimizer: torch.optim.Optimizer, epochs: int, lr_min: float, warmup_epochs: int = 0,
                     cycles: int = 1) -> CosineLRScheduler:
    """timm's per-epoch cosine schedule; ``cycles`` > 1 gives SGDR's warm restarts."""
    return CosineLRScheduler(optimizer, t_initial=max(2, epochs // cycles), lr_min=lr_min,
                             cycle_limit=cycles, warmup_t=warmup_epochs,
                             warmup_lr_init=optimizer.param_groups[0]["lr"] / 100 if warmup_epochs else 0,
                             warmup_prefix=bool(warmup_epochs), t_in_epochs=True)


def make_criterion(label_smoothing: float) -> nn.Module:
    return LabelSmoothingCrossEntropy(label_smoothing) if label_smoothing > 0 else nn.CrossEntropyLoss()


def supervised_epoch(model: nn.Module, batches: Any, optimizer: torch.optim.Optimizer, criterion: nn.Module,
                     settings: TrainSettings, device: torch.device, desc: str,
                     scaler: torch.amp.GradScaler | None = None,
                     replicas: Replicas | None = None) -> dict[str, float]:
    """One epoch of SGD with the auxiliary loss, gradient clipping and mixed precision on CUDA (``model`` may be
    a data-parallel replica: its metrics are then over every process's samples)."""
    model.train()
    scaler = scaler or grad_scaler(device, settings.amp)
    loss_meter, acc_meter = AverageMeter(), AverageMeter()
    for step, (x, y) in enumerate(progress(batches, desc, len(batches))):
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, settings.amp):
            out = model(x)
            logits, logits_aux = out if isinstance(out, tuple) else (out, None)
            loss = criterion(logits, y)
            if logits_aux is not None and settings.auxiliary_weight > 0:
                loss = loss + settings.auxiliary_weight * criterion(logits_aux, y)
        check_finite(loss, f"{desc} step {step}")
        scaler.scale(loss).backward()
        if settings.grad_clip > 0:
            scaler.unscale_(optimizer)
            dispatch_clip_grad(model.parameters(), settings.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        loss_meter.update(loss.item(), len(y))
        acc_meter.update(accuracy(logits.float(), y, topk=(1,))[0].item(), len(y))
    loss, acc = _averages(loss_meter, acc_meter, replicas)
    return {"train_loss": loss, "train_acc": acc}


@torch.no_grad()
def evaluate(model: nn.Module, batches: Any, device: torch.device, amp: str | bool = "bf16",
             prefix: str = "val", replicas: Replicas | None = None) -> dict[str, float]:
    """Loss, top-1 accuracy and error (percent) in eval mode; over every process's share with ``replicas``."""
    model.eval()
    criterion = nn.CrossEntropyLoss()
    loss_meter, acc_meter = AverageMeter(), AverageMeter()
    for x, y in batches:
        with autocast(device, amp):
            logits = model(x)
        loss_meter.update(criterion(logits.float(), y).item(), len(y))
        acc_meter.update(accuracy(logits.float(), y, topk=(1,))[0].item(), len(y))
    loss, acc = _averages(loss_meter, acc_meter, replicas)
    return {f"{prefix}_loss": loss, f"{prefix}_acc": acc, f"{prefix}_error": 100.0 - acc}


def _averages(loss: AverageMeter, acc: AverageMeter, replicas: Replicas | None) -> tuple[float, float]:
    """The meters' averages, over every process's samples with ``replicas``."""
    if replicas is None:
        return loss.avg, acc.avg
    loss_sum, acc_sum, count = replicas.total([loss.sum, acc.sum, float(loss.count)])
    return loss_sum / max(count, 1.0), acc_sum / max(count, 1.0)


def evaluate_split(model: nn.Module, data: ImageDataset, split: str, s: TrainSettings, device: torch.device,
                   indices: Sequence[int] | None = None, prefix: str | None = None) -> dict[str, float]:
    """:func:`evaluate` on a split of ``data`` ("train" with ``indices``, or "test"), batched as in training."""
    batches = make_batches(data, split, indices, s.batch_size, False, device, torch.Generator(),
                           channels_last=s.channels_last)
    return evaluate(model, batches, device, s.amp, prefix=prefix or split)


def train_classifier(net: nn.Module, data: ImageDataset, s: TrainSettings, device: torch.device,
                     generator: torch.Generator, checkpoint: Checkpointer | None, callbacks: Iterable[EpochCallback],
                     desc: str, verbose: bool = True, train_indices: Sequence[int] | None = None,
                     eval_split: str = "test", eval_indices: Sequence[int] | None = None,
                     replicas: Replicas | None = None) -> list[dict[str, Any]]:
    """Train a fixed network with SGD and timm's cosine schedule (SGDR with ``s.cycles``), the linear
    drop-path schedule, and an evaluation after every epoch; resumes from ``checkpoint``. ``net`` must have
    ``set_drop_path`` (DARTS and RandGrow networks do). Metrics are ``test_*`` or ``val_*`` by ``eval_split``.
    With ``replicas`` this process trains its replica on its share of every global batch (``s.batch_size``)."""
    if replicas is not None:
        replicas.check_batch(s.batch_size)
        if device.type == "cuda":  # one batch's statistics across the processes, as one process computes them
            net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
    net.to(device, memory_format=torch.channels_last if s.channels_last else torch.contiguous_format)
    optimizer = torch.optim.SGD(net.parameters(), s.lr, momentum=s.momentum, weight_decay=s.weight_decay)
    scaler = grad_scaler(device, s.amp)
    states = {"weights": optimizer} | ({"loss_scaler": scaler} if scaler.is_enabled() else {})
    loop = EpochLoop(s.epochs, {"network": net}, states,
                     cosine_scheduler(optimizer, s.epochs, s.lr_min, s.warmup_epochs, s.cycles), generator,
                     checkpoint, callbacks, desc=desc, verbose=verbose, replicas=replicas)
    loop.resume()
    model = replicas.wrap(net, device) if replicas is not None else net
    shard = (replicas.rank, replicas.world) if replicas is not None else None
    train = make_batches(data, "train", train_indices, s.batch_size, True, device, generator, cutout=s.cutout,
                         channels_last=s.channels_last, shard=shard)
    held_out = make_batches(data, eval_split, eval_indices, s.batch_size, False, device, generator,
                            channels_last=s.channels_last, shard=shard)
    criterion = make_criterion(s.label_smoothing)
    prefix = "test" if eval_split == "test" else "val"

    def train_epoch(epoch: int) -> dict[str, float]:
        net.set_drop_path(s.drop_path_prob * epoch / s.epochs)  # type: ignore[operator]  # DARTS's linear schedule
        return supervised_epoch(model, train, optimizer, criterion, s, device, f"{desc} epoch {epoch + 1}",
                                scaler, replicas)

    return loop.run(train_epoch, lambda epoch: evaluate(model, held_out, device, s.amp, prefix, replicas))
