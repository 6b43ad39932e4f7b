"""The one training loop: resuming, corrupt checkpoints, NaN losses, retraining."""

from __future__ import annotations

import pytest
import torch

from optuna_nas.darts.search import SearchSettings, run_search
from optuna_nas.data import load_dataset
from optuna_nas.errors import NasError
from optuna_nas.train import Checkpointer, UnreadableCheckpoint, check_finite

from _tiny import tiny_config


class Interrupt(Exception):
    """Stands in for a process that dies after an epoch's checkpoint was written."""


def _stop_after(epoch: int):
    def callback(done: int, metrics: dict) -> None:
        if done == epoch:
            raise Interrupt
    return callback


def test_interrupted_search_resumes_from_its_checkpoint_and_matches_an_uninterrupted_run(tmp_path) -> None:
    data = load_dataset("synthetic")
    config = tiny_config("fixed:relu")
    settings = SearchSettings(epochs=2, batch_size=16, seed=3)
    cpu = torch.device("cpu")
    whole = run_search(config, data, settings, cpu, Checkpointer(tmp_path / "a.pt"), verbose=False)

    ckpt = Checkpointer(tmp_path / "b.pt")
    with pytest.raises(Interrupt):
        run_search(config, data, settings, cpu, ckpt, [_stop_after(1)], verbose=False)
    assert torch.load(ckpt.path, weights_only=True)["epoch"] == 1
    seen = []
    resumed = run_search(config, data, settings, cpu, ckpt, [lambda e, m: seen.append((e, "replayed" in m))],
                         verbose=False)
    assert seen == [(1, True), (2, False)]  # epoch 1 is replayed from the checkpoint, only epoch 2 runs
    assert [h["epoch"] for h in resumed.history] == [1, 2]
    for a, b in zip(whole.network.alpha_parameters(), resumed.network.alpha_parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6)
    assert resumed.genotype == whole.genotype


def test_an_unreadable_checkpoint_is_set_aside_and_the_run_starts_over(tmp_path, capsys) -> None:
    data = load_dataset("synthetic")
    path = tmp_path / "c.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(UnreadableCheckpoint, match="unreadable"):
        Checkpointer(path).load()
    result = run_search(tiny_config("fixed:relu"), data, SearchSettings(epochs=1, batch_size=32),
                        torch.device("cpu"), Checkpointer(path), verbose=False)
    assert [h["epoch"] for h in result.history] == [1]  # from epoch 0
    assert (tmp_path / "c.pt.corrupt").read_bytes() == b"not a checkpoint"  # kept for inspection
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "kept as" in err and "starts again from epoch 0" in err


def test_a_checkpoint_of_another_configuration_is_set_aside_untouched(tmp_path, capsys) -> None:
    data = load_dataset("synthetic")
    ckpt = Checkpointer(tmp_path / "c.pt")
    run_search(tiny_config("fixed:relu"), data, SearchSettings(epochs=1, batch_size=32), torch.device("cpu"), ckpt,
               verbose=False)
    foreign = (tmp_path / "c.pt").read_bytes()
    torch.manual_seed(0)
    fresh = run_search(tiny_config("factorized"), data, SearchSettings(epochs=2, batch_size=32), torch.device("cpu"),
                       None, verbose=False)
    torch.manual_seed(0)
    again = run_search(tiny_config("factorized"), data, SearchSettings(epochs=2, batch_size=32), torch.device("cpu"),
                       ckpt, verbose=False)
    assert "not a checkpoint of this run" in capsys.readouterr().err
    assert (tmp_path / "c.pt.corrupt").read_bytes() == foreign
    # the failed restore left nothing behind: the run is the one a fresh start gives
    assert [h["val_acc"] for h in again.history] == [h["val_acc"] for h in fresh.history]


def test_nan_loss_stops_with_a_message() -> None:
    with pytest.raises(NasError, match="loss became nan"):
        check_finite(torch.tensor(float("nan")), "epoch 3")
