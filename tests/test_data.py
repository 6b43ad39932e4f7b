"""Datasets and batched augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from optuna_nas.data import Augment, augment_batch, load_dataset, make_batches, split_indices
from optuna_nas.errors import NasError


def test_digits_is_the_embedded_default() -> None:
    data = load_dataset("digits")
    assert data.input_shape == (1, 8, 8) and data.num_classes == 10
    assert len(data.train) + len(data.test) == 1797


def test_npz_arrays_load_like_cifar10_mini(tmp_path) -> None:
    rng = np.random.default_rng(0)
    path = tmp_path / "mini.npz"
    np.savez(path, x_train=rng.integers(0, 255, (20, 16, 16, 3), dtype=np.uint8), y_train=np.arange(20) % 5,
             x_test=rng.integers(0, 255, (6, 16, 16, 3), dtype=np.uint8), y_test=np.arange(6) % 5)
    data = load_dataset(f"npz:{path}")
    assert data.input_shape == (3, 16, 16) and data.num_classes == 5 and len(data.train) == 20


@pytest.mark.parametrize(("spec", "message"), [
    ("npz:/no/such/file.npz", "dataset file not found"),
    ("imagefolder:/no/such/dir", "is not a directory"),
    ("mnist", "unknown dataset"),
])
def test_missing_or_unknown_datasets_are_one_line_errors(spec: str, message: str) -> None:
    with pytest.raises(NasError, match=message):
        load_dataset(spec)


def test_cifar10_without_files_or_download_says_how_to_get_it(tmp_path) -> None:
    with pytest.raises(NasError, match="--download"):
        load_dataset("cifar10", data_root=tmp_path)


def test_npz_with_missing_arrays(tmp_path) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, x_train=np.zeros((2, 8, 8), np.uint8))
    with pytest.raises(NasError, match="missing arrays"):
        load_dataset(f"npz:{path}")


def test_batches_are_normalised_shuffled_and_deterministic_per_seed() -> None:
    data = load_dataset("synthetic")
    cpu = torch.device("cpu")
    first = [y for _, y in make_batches(data, "train", None, 32, True, cpu, torch.Generator().manual_seed(1))]
    again = [y for _, y in make_batches(data, "train", None, 32, True, cpu, torch.Generator().manual_seed(1))]
    ordered = make_batches(data, "train", None, 32, False, cpu, torch.Generator())
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    x, y = next(iter(ordered))
    assert torch.equal(y, data.train.labels[:32])
    assert abs(float(x.mean())) < 0.2  # normalised with the training set's statistics


def test_augmentation_crops_flips_and_cuts_out_per_sample() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.arange(16.0).view(1, 1, 4, 4).repeat(64, 1, 1, 1) + 1
    cut = augment_batch(x, Augment(cutout=2), g)
    zeros = (cut == 0).sum(dim=(1, 2, 3))
    assert zeros.max() == 4 and zeros.min() >= 1  # a 2x2 square, clipped at the border
    flipped = augment_batch(x, Augment(flip=True), g)
    mirrored = (flipped == x.flip(3)).all(dim=(1, 2, 3))
    assert 0 < int(mirrored.sum()) < 64
    cropped = augment_batch(x, Augment(crop_padding=1), g)
    assert cropped.shape == x.shape and not torch.equal(cropped, x)
    # every crop is a shifted window: its non-padding pixels keep their row-major order
    assert set(cropped[0].flatten().tolist()) - {0.0} <= set(x[0].flatten().tolist())


def test_standard_augmentation_adapts_to_size_and_channels() -> None:
    assert Augment.standard(32, 3, cutout=True) == Augment(crop_padding=4, flip=True, cutout=16)
    assert Augment.standard(8, 1, cutout=False) == Augment(crop_padding=1, flip=False, cutout=0)


def test_search_split_is_half_and_half_and_disjoint() -> None:
    train, val = split_indices(10, 0.5, torch.Generator().manual_seed(0))
    assert len(train) == len(val) == 5 and set(train).isdisjoint(val)
    with pytest.raises(NasError):
        split_indices(10, 1.0, torch.Generator())


def test_search_split_can_take_a_subset_as_pc_darts_on_imagenet() -> None:
    train, val = split_indices(400, 0.1, torch.Generator().manual_seed(0), val_portion=0.025)
    assert len(train) == 40 and len(val) == 10 and set(train).isdisjoint(val)
    with pytest.raises(NasError, match="adding up to"):
        split_indices(400, 0.8, torch.Generator(), val_portion=0.5)


def _npz(path, **override) -> str:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(0)
    arrays = {"x_train": rng.integers(0, 255, (12, 8, 8, 3), dtype=np.uint8), "y_train": np.arange(12) % 3,
              "x_test": rng.integers(0, 255, (6, 8, 8, 3), dtype=np.uint8), "y_test": np.arange(6) % 3}
    np.savez(path, **{**arrays, **override})
    return f"npz:{path}"


@pytest.mark.parametrize(("override", "message"), [
    ({"y_train": np.arange(12) % 3 - 1}, "negative label -1"),
    ({"y_test": (np.arange(6) % 3).astype(np.float32)}, "integer class indices, got float32"),
    ({"y_test": np.arange(6) % 3 + 2}, "label 4, which no training image has"),
    ({"classes": np.array(["a", "b"])}, "holds label 2, but there are 2 classes"),
    ({"x_train": np.zeros((0, 8, 8, 3), np.uint8), "y_train": np.zeros(0, np.int64)}, "x_train holds no image"),
    ({"y_train": np.arange(5) % 3}, r"one label per image \(12\)"),
])
def test_bad_labels_and_empty_splits_are_one_line(tmp_path, override: dict, message: str) -> None:
    with pytest.raises(NasError, match=message) as info:
        load_dataset(_npz(tmp_path / "bad.npz", **override))
    assert "\n" not in str(info.value)


def test_a_corrupt_npz_is_one_line(tmp_path) -> None:
    spec = _npz(tmp_path / "whole.npz")
    data = (tmp_path / "whole.npz").read_bytes()
    for size in (300, len(data) // 2, 0):
        (tmp_path / "cut.npz").write_bytes(data[:size])
        with pytest.raises(NasError, match="not a readable .npz file") as info:
            load_dataset(spec.replace("whole", "cut"))
        assert "\n" not in str(info.value)


@pytest.mark.parametrize("spec", ["synthetic:abc", "synthetic:0x4", "synthetic:1x2x3x4x5x6"])
def test_a_bad_synthetic_spec_is_one_line(spec: str) -> None:
    with pytest.raises(NasError, match="synthetic:TRAINxTESTxSIZE"):
        load_dataset(spec)
