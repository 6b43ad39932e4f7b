"""CUDA paths: GPU-resident batches, bfloat16 autocast, a search step and a retraining step on the GPU."""

from __future__ import annotations

import pytest
import torch

from optuna_nas.darts.genotypes import BUILTIN_GENOTYPES
from optuna_nas.darts.model import network_cifar
from optuna_nas.darts.search import SearchSettings, run_search
from optuna_nas.data import load_dataset, make_batches
from optuna_nas.train import TrainSettings, make_criterion, supervised_epoch

from _tiny import tiny_config

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]
CUDA = torch.device("cuda")


def test_batches_are_augmented_on_the_gpu() -> None:
    data = load_dataset("synthetic")
    x, y = next(iter(make_batches(data, "train", None, 16, True, CUDA, torch.Generator(), cutout=True)))
    assert x.is_cuda and y.is_cuda and x.shape == (16, 3, 16, 16)


@pytest.mark.parametrize(("mode", "k"), [("factorized", 1), ("fixed:relu", 2)])
def test_search_runs_on_the_gpu_with_autocast(mode: str, k: int) -> None:
    result = run_search(tiny_config(mode, k), load_dataset("synthetic"), SearchSettings(epochs=1, batch_size=16),
                        CUDA, verbose=False)
    assert result.network.alphas_normal.is_cuda
    assert torch.isfinite(result.network.alphas_normal).all()


def test_retraining_epoch_on_the_gpu() -> None:
    data = load_dataset("synthetic")
    net = network_cifar(BUILTIN_GENOTYPES["DARTS_V2"], channels=4, layers=3, num_classes=data.num_classes).to(CUDA)
    net.set_drop_path(0.2)
    settings = TrainSettings(epochs=1, batch_size=16)
    opt = torch.optim.SGD(net.parameters(), 0.01)
    batches = make_batches(data, "train", None, 16, True, CUDA, torch.Generator())
    metrics = supervised_epoch(net, batches, opt, make_criterion(0.0), settings, CUDA, "gpu")
    assert metrics["train_loss"] > 0
