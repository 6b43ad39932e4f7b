"""One DARTS-family search run: split the data, build the super-network, run Algorithm 1, derive.

The defaults are A-DARTS's CIFAR-10 search (25 epochs, batch 64, SGD 0.05 → 0.001 cosine for ω,
Adam 6e-4 / (0.5, 0.999) / 1e-3 for α and β).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from timm.utils import AverageMeter, accuracy

from ..data import ImageDataset, make_batches, split_indices
from ..errors import NasError
from ..train import (
    Checkpointer,
    EpochCallback,
    EpochLoop,
    amp_mode,
    cosine_scheduler,
    evaluate,
    progress,
    seed_everything,
)
from .derive import derive_genotype
from .genotypes import Genotype
from .supernet import SearchNetwork, SuperNetConfig
from .trilevel import TriLevelOptimizer


def _forever(batches: Iterable[Any]) -> Iterator[Any]:
    """Re-iterate (reshuffling) a loader without end, as DARTS pairs train and val batches."""
    while True:
        yield from batches


@dataclass(frozen=True)
class SearchSettings:
    epochs: int = 25
    batch_size: int = 64
    lr: float = 0.05
    lr_min: float = 0.001
    momentum: float = 0.9
    weight_decay: float = 3e-4
    grad_clip: float = 5.0
    arch_lr: float = 6e-4
    arch_betas: tuple[float, float] = (0.5, 0.999)
    arch_weight_decay: float = 1e-3
    unrolled: bool = False  # DARTS second order
    beta_pass: str = "shared"  # see trilevel.py
    train_portion: float = 0.5  # search-train / search-val halves of the training set
    val_portion: float | None = None  # default: the rest of the training set
    warmup_epochs: int = 0  # PC-DARTS on ImageNet: epochs that train ω only before α, β move
    amp: str | bool = "bf16"  # bf16, fp16 (with a loss scaler) or off; CUDA only
    channels_last: bool = True  # memory format of network and batches: about 1.3x faster on CPU
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "amp", amp_mode(self.amp))
        if self.amp == "fp16" and self.unrolled:
            raise NasError("the second-order (unrolled) step does not take fp16's loss scaling; use --amp bf16 or off")
        if self.epochs < 1 or self.batch_size < 1:
            raise NasError("search epochs and batch size must be >= 1")
        if not 0 <= self.warmup_epochs < self.epochs:
            raise NasError(f"warm-up epochs ({self.warmup_epochs}) must be fewer than epochs ({self.epochs})")
        if not 0.0 < self.train_portion < 1.0:
            raise NasError(f"train_portion (the share of the training set for ω) must be between 0 and 1, got "
                           f"{self.train_portion}")
        if self.val_portion is not None and not 0.0 < self.val_portion <= 1.0 - self.train_portion + 1e-9:
            raise NasError(f"val_portion must be positive and at most 1 - train_portion "
                           f"({1.0 - self.train_portion:g}), got {self.val_portion}")


@dataclass
class SearchResult:
    genotype: Genotype
    history: list[dict[str, Any]]  # per epoch: metrics, the derived genotype, softmax(α), softmax(β), γ
    network: SearchNetwork
    seconds: float  # wall clock
    cpu_seconds: float = 0.0  # this process's CPU time, all threads
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def best_val_acc(self) -> float:
        return max(h["val_acc"] for h in self.history)


def run_search(config: SuperNetConfig, data: ImageDataset, settings: SearchSettings, device: torch.device,
               checkpoint: Checkpointer | None = None, callbacks: list[EpochCallback] | None = None,
               verbose: bool = True) -> SearchResult:
    generator = seed_everything(settings.seed)
    layout = torch.channels_last if settings.channels_last else torch.contiguous_format
    network = SearchNetwork(config).to(device, memory_format=layout)
    train_idx, val_idx = split_indices(len(data.train), settings.train_portion, generator,
                                      settings.val_portion)

    def batches(indices: list[int], train: bool) -> Any:
        return make_batches(data, "train", indices, settings.batch_size, train, device, generator,
                            channels_last=settings.channels_last)

    train_batches, val_batches, val_eval = batches(train_idx, True), batches(val_idx, True), batches(val_idx, False)

    w_opt = torch.optim.SGD(network.weight_parameters(), settings.lr, momentum=settings.momentum,
                            weight_decay=settings.weight_decay)

    def adam(params: list[torch.nn.Parameter]) -> torch.optim.Adam:
        return torch.optim.Adam(params, lr=settings.arch_lr, betas=settings.arch_betas,
                                weight_decay=settings.arch_weight_decay)

    a_opt = adam(network.alpha_parameters())
    b_opt = adam(network.beta_parameters()) if network.beta_parameters() else None
    trilevel = TriLevelOptimizer(network, w_opt, a_opt, b_opt, settings.grad_clip, settings.unrolled,
                                 settings.beta_pass, settings.amp)
    optimizers = {"weights": w_opt, "alphas": a_opt} | ({"betas": b_opt} if b_opt else {})
    if trilevel.scaler.is_enabled():
        optimizers["loss_scaler"] = trilevel.scaler
    loop = EpochLoop(settings.epochs, {"network": network}, optimizers,
                     cosine_scheduler(w_opt, settings.epochs, settings.lr_min), generator, checkpoint,
                     callbacks or [], desc="search", verbose=verbose)
    restored = loop.resume()
    elapsed, cpu = float(restored.get("seconds", 0.0)), float(restored.get("cpu_seconds", 0.0))
    started, cpu_started = time.perf_counter(), time.process_time()

    def spent() -> dict[str, float]:
        """Wall-clock seconds and this process's CPU seconds (every thread), the resumed run's included."""
        return {"seconds": elapsed + time.perf_counter() - started,
                "cpu_seconds": cpu + time.process_time() - cpu_started}

    def train_epoch(epoch: int) -> dict[str, float]:
        network.train()
        loss_meter, acc_meter = AverageMeter(), AverageMeter()
        search_arch = epoch >= settings.warmup_epochs
        for (x, y), (xv, yv) in progress(zip(train_batches, _forever(val_batches), strict=False), f"search {epoch + 1}",
                                         len(train_batches)):
            if search_arch:
                loss, logits = trilevel.step(x, y, xv, yv)
            else:
                loss, logits = trilevel.weight_step(x, y)
            loss_meter.update(loss.item(), len(y))
            acc_meter.update(accuracy(logits.float(), y, topk=(1,))[0].item(), len(y))
        return {"train_loss": loss_meter.avg, "train_acc": acc_meter.avg}

    def eval_epoch(epoch: int) -> dict[str, Any]:
        metrics: dict[str, Any] = evaluate(network, val_eval, device, settings.amp)
        metrics["genotype"] = derive_genotype(network).to_dict()
        metrics["architecture_weights"] = network.architecture_summary()
        return metrics

    history = loop.run(train_epoch, eval_epoch, extra=spent)
    return SearchResult(derive_genotype(network), history, network, **spent(), settings=asdict(settings))
