"""Datasets, splits and augmentation.

Dataset specs (``--dataset``):

- ``digits``: scikit-learn's 1,797 real 8x8 handwritten digits (embedded, always available);
- ``cifar10`` / ``cifar100``: torchvision, from ``--data-root`` (downloaded there with ``--download``);
- ``npz:PATH``: arrays ``x_train`` (N,H,W[,C] uint8), ``y_train``, ``x_test``, ``y_test``;
- ``imagefolder:PATH``: torchvision ImageFolder trees ``PATH/train`` and ``PATH/val`` (ImageNet layout);
- ``synthetic``: small random class-dependent images for tests.

In-memory datasets (all but ImageFolder) are kept as one uint8 tensor and augmented per batch on the
training device (GPU-resident when the model is on a GPU): crop after padding (pad = size/8), flip,
cutout (side = size/2), normalisation with the training set's per-channel mean and std. Flipping is
off for single-channel images, whose classes (digits, letters) are not mirror-invariant.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .errors import NasError

DEFAULT_DATA_ROOT = Path.home() / ".cache" / "optuna-nas" / "data"


@dataclass
class Augment:
    crop_padding: int = 0
    flip: bool = False
    cutout: int = 0

    @classmethod
    def standard(cls, image_size: int, channels: int, cutout: bool) -> Augment:
        return cls(crop_padding=max(1, image_size // 8), flip=channels == 3,
                   cutout=image_size // 2 if cutout else 0)


class TensorSource:
    """Images held in memory as uint8 N x C x H x W, labels int64."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise NasError(f"images must be uint8 N x C x H x W, got {tuple(images.shape)} {images.dtype}")
        if len(images) != len(labels):
            raise NasError(f"{len(images)} images but {len(labels)} labels")
        self.images = images
        self.labels = labels.long()
        self._on_device: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def __len__(self) -> int:
        return len(self.labels)

    def on(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Images and labels on ``device``, copied there once however many loaders read them."""
        if device not in self._on_device:
            self._on_device[device] = (self.images.to(device), self.labels.to(device))
        return self._on_device[device]


@dataclass
class ImageDataset:
    name: str
    train: TensorSource | torch.utils.data.Dataset
    test: TensorSource | torch.utils.data.Dataset
    num_classes: int
    in_channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    loader_workers: int = 2  # DataLoader processes of file-backed datasets (in-memory ones need none)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.in_channels, self.image_size, self.image_size)


Shard = tuple[int, int]  # (this process, processes): its share of every batch in data-parallel training


class TensorBatches:
    """Shuffled (or ordered) mini-batches of a TensorSource, augmented and normalised on ``device``.

    With ``shard=(rank, world)`` each batch is the global batch's rank-th share: every process draws the same
    order and the same augmentation for the whole global batch, then keeps its rows, so the processes together
    see exactly the batches one process would."""

    def __init__(self, source: TensorSource, indices: Sequence[int] | None, batch_size: int, shuffle: bool,
                 augment: Augment | None, mean: Sequence[float], std: Sequence[float],
                 device: torch.device, generator: torch.Generator, drop_last: bool = False,
                 channels_last: bool = False, shard: Shard | None = None) -> None:
        self.shard = shard
        self.source = source
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.indices = torch.as_tensor(list(range(len(source))) if indices is None else list(indices))
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.augment = augment
        self.device = device
        self.generator = generator
        self.drop_last = drop_last and len(self.indices) >= batch_size
        c = source.images.shape[1]
        self.mean = torch.tensor(mean, device=device).view(1, c, 1, 1)
        self.std = torch.tensor(std, device=device).view(1, c, 1, 1)
        self._images, self._labels = source.on(device)

    def __len__(self) -> int:
        n = len(self.indices)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self.indices
        if self.shuffle:
            order = order[torch.randperm(len(order), generator=self.generator)]
        for b in range(len(self)):
            idx = order[b * self.batch_size : (b + 1) * self.batch_size].to(self.device)
            x = (self._images[idx].float().div_(255.0) - self.mean) / self.std
            if self.augment is not None:  # after normalising, so padding and cutout fill with the mean
                x = augment_batch(x, self.augment, self.generator)
            y = self._labels[idx]
            if self.shard is not None:
                rank, world = self.shard
                x, y = x.tensor_split(world)[rank], y.tensor_split(world)[rank]
                if not len(y):  # a last, partial batch smaller than the number of processes
                    continue
            yield x.contiguous(memory_format=self.memory_format), y


def augment_batch(x: torch.Tensor, aug: Augment, generator: torch.Generator) -> torch.Tensor:
    """Per-sample random crop after zero padding, horizontal flip and cutout on a float batch."""
    n, _, h, w = x.shape
    dev = x.device

    def rand_int(high: int) -> torch.Tensor:
        return torch.randint(0, high, (n,), generator=generator).to(dev)

    if aug.crop_padding:
        p = aug.crop_padding
        x = _crop(F.pad(x, (p, p, p, p)), rand_int(2 * p + 1), rand_int(2 * p + 1), h, w)
    if aug.flip:
        flip = torch.rand(n, generator=generator).to(dev) < 0.5
        x = torch.where(flip.view(n, 1, 1, 1), x.flip(3), x)
    if aug.cutout:  # a square of side `cutout` centred anywhere, clipped at the border (DeVries & Taylor)
        cy, cx = rand_int(h).view(n, 1, 1), rand_int(w).view(n, 1, 1)
        half = aug.cutout // 2
        ys = torch.arange(h, device=dev).view(1, h, 1)
        xs = torch.arange(w, device=dev).view(1, 1, w)
        inside = (ys >= cy - half) & (ys < cy - half + aug.cutout) & (xs >= cx - half) & (xs < cx - half + aug.cutout)
        x = x * (~inside).unsqueeze(1)
    return x


def _crop(padded: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Crop an h x w window at per-sample offsets (dy, dx) out of a padded batch, by index gathering."""
    n, c = padded.shape[:2]
    dev = padded.device
    rows = (dy.view(n, 1) + torch.arange(h, device=dev)).view(n, 1, h, 1).expand(n, c, h, padded.shape[3])
    x = padded.gather(2, rows)
    cols = (dx.view(n, 1) + torch.arange(w, device=dev)).view(n, 1, 1, w).expand(n, c, h, w)
    return x.gather(3, cols)


# ---------------------------------------------------------------- loading


@dataclass(frozen=True)
class DataSource:
    """A dataset named by its spec (see the module docstring): what a trial trains on, loaded when needed.

    Worker processes receive the source, not the tensors, and each loads it once (:meth:`load` keeps one
    copy per process).
    """

    spec: str = "digits"
    root: str | None = None
    download: bool = False
    workers: int = 2  # DataLoader processes for file-backed datasets (ImageNet folders)

    def load(self) -> ImageDataset:
        if self.workers < 0:
            raise NasError(f"--workers must be 0 or more, got {self.workers}")
        key = (self.spec, self.root, self.download)
        if key not in _LOADED:
            _LOADED[key] = load_dataset(self.spec, self.root, self.download)
        return replace(_LOADED[key], loader_workers=self.workers)


_LOADED: dict[tuple[str, str | None, bool], ImageDataset] = {}


class MissingDataset(NasError):
    """A dataset this code knows (CIFAR-10/100) that is not on this machine: fetched with ``--download``."""


# What a known downloadable dataset looks like: (channels, image size, classes), to check a study against it
# before it is downloaded (a dry run).
KNOWN_SHAPES = {"cifar10": (3, 32, 10), "cifar100": (3, 32, 100)}


def stand_in_dataset(spec: str) -> ImageDataset:
    """A few random images of the shape a known dataset has: enough to build and check networks for it."""
    channels, size, classes = KNOWN_SHAPES[spec]
    data = synthetic_dataset(n_train=8, n_test=4, size=size, channels=channels, num_classes=classes)
    data.name = spec
    return data


def load_dataset(spec: str, data_root: str | Path | None = None, download: bool = False) -> ImageDataset:
    """Load a dataset by spec (see the module docstring); errors are one clear line."""
    kind, _, arg = spec.partition(":")
    root = Path(data_root) if data_root else DEFAULT_DATA_ROOT
    if kind == "digits" and not arg:
        return _digits()
    if kind == "synthetic":
        try:
            sizes = [int(v) for v in arg.split("x")] if arg else []
        except ValueError:
            sizes = [-1]
        if len(sizes) > 5 or any(v < 1 for v in sizes):
            raise NasError(f"synthetic dataset {spec!r}: use synthetic or synthetic:TRAINxTESTxSIZExCHANNELSxCLASSES "
                           "with positive integers (e.g. synthetic:96x32x16x3x4)")
        return synthetic_dataset(*sizes)
    if kind in ("cifar10", "cifar100") and not arg:
        return _cifar(kind, root, download)
    if kind == "npz" and arg:
        return _npz(Path(arg))
    if kind == "imagefolder" and arg:
        return _image_folder(Path(arg))
    raise NasError(
        f"unknown dataset {spec!r}; use digits, cifar10, cifar100, npz:PATH, imagefolder:PATH or synthetic"
    )


def _from_arrays(name: str, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray,
                 y_test: np.ndarray, num_classes: int | None = None) -> ImageDataset:
    def to_nchw(x: np.ndarray, which: str) -> torch.Tensor:
        if x.ndim == 3:
            x = x[..., None]
        if x.ndim != 4 or x.shape[1] != x.shape[2]:
            raise NasError(f"{name}: {which} must be N x H x W (x C) square images, got shape {x.shape}")
        if x.dtype != np.uint8:
            raise NasError(f"{name}: {which} must be uint8 pixels, got {x.dtype}")
        return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))

    def labels(y: np.ndarray, x: np.ndarray, which: str) -> torch.Tensor:
        y = np.asarray(y)
        if y.ndim != 1 or len(y) != len(x):
            raise NasError(f"{name}: {which} must hold one label per image ({len(x)}), got shape {y.shape}")
        if not np.issubdtype(y.dtype, np.integer):
            raise NasError(f"{name}: {which} must be integer class indices, got {y.dtype}")
        if len(y) and y.min() < 0:
            raise NasError(f"{name}: {which} holds the negative label {int(y.min())}; classes are 0, 1, 2, ...")
        if num_classes is not None and len(y) and y.max() >= num_classes:
            raise NasError(f"{name}: {which} holds label {int(y.max())}, but there are {num_classes} classes")
        return torch.as_tensor(y).long()

    for which, x in (("x_train", x_train), ("x_test", x_test)):
        if len(x) == 0:
            raise NasError(f"{name}: {which} holds no image")
    train = TensorSource(to_nchw(x_train, "x_train"), labels(y_train, x_train, "y_train"))
    test = TensorSource(to_nchw(x_test, "x_test"), labels(y_test, x_test, "y_test"))
    if num_classes is None and int(test.labels.max()) > int(train.labels.max()):
        raise NasError(f"{name}: y_test holds label {int(test.labels.max())}, which no training image has "
                       f"(training labels 0..{int(train.labels.max())})")
    classes = num_classes or int(train.labels.max()) + 1
    pixels = train.images.float().div(255.0)
    mean = pixels.mean(dim=(0, 2, 3))
    std = pixels.std(dim=(0, 2, 3)).clamp_min(1e-3)
    return ImageDataset(name, train, test, classes, train.images.shape[1], train.images.shape[2],
                        tuple(mean.tolist()), tuple(std.tolist()))


def _digits() -> ImageDataset:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    x_train, x_test, y_train, y_test = train_test_split(
        images, digits.target, test_size=0.2, random_state=0, stratify=digits.target
    )
    return _from_arrays("digits", x_train, y_train, x_test, y_test, num_classes=10)


def synthetic_dataset(n_train: int = 96, n_test: int = 32, size: int = 16, channels: int = 3,
                      num_classes: int = 4, seed: int = 0) -> ImageDataset:
    """Random images whose class shifts the mean of one channel band: learnable, tiny, deterministic."""
    rng = np.random.default_rng(seed)

    def make(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, num_classes, n)
        x = rng.normal(100.0, 30.0, (n, size, size, channels))
        band = size // num_classes
        for k in range(num_classes):
            x[y == k, k * band : (k + 1) * band] += 80.0
        return np.clip(x, 0, 255).astype(np.uint8), y

    (xa, ya), (xb, yb) = make(n_train), make(n_test)
    return _from_arrays("synthetic", xa, ya, xb, yb, num_classes=num_classes)


def _npz(path: Path) -> ImageDataset:
    if not path.is_file():
        raise NasError(f"dataset file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as arrays:
            missing = {"x_train", "y_train", "x_test", "y_test"} - set(getattr(arrays, "files", ()))
            if missing:
                raise NasError(f"{path}: missing arrays {', '.join(sorted(missing))}")
            parts = [arrays[k] for k in ("x_train", "y_train", "x_test", "y_test")]
            # class names, when the file has them, fix the class count (CIFAR-10 mini has them)
            num_classes = len(arrays["classes"]) if "classes" in arrays.files else None
    except NasError:
        raise
    except Exception as exc:  # a truncated or foreign file: zipfile, zlib, numpy and pickle-refusal errors
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise NasError(f"{path}: not a readable .npz file ({reason})") from None
    return _from_arrays(f"npz:{path}", *parts, num_classes=num_classes)


def _cifar(kind: str, root: Path, download: bool) -> ImageDataset:
    import torchvision

    cls = torchvision.datasets.CIFAR10 if kind == "cifar10" else torchvision.datasets.CIFAR100
    try:
        train = cls(str(root), train=True, download=download)
        test = cls(str(root), train=False, download=download)
    except RuntimeError:
        raise MissingDataset(
            f"{kind} not found under {root}; pass --download to fetch it, or --data-root to point at it"
        ) from None
    except OSError as exc:
        raise NasError(f"{kind}: could not read or download it under {root} ({exc})") from None
    return _from_arrays(kind, train.data, np.array(train.targets), test.data, np.array(test.targets),
                        num_classes=len(train.classes))


IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _image_folder(path: Path) -> ImageDataset:
    """ImageNet-style folders, read lazily with torchvision transforms (mobile setting: 224x224)."""
    import torchvision
    from torchvision import transforms as T

    for split in ("train", "val"):
        if not (path / split).is_dir():
            raise NasError(f"imagefolder: {path / split} is not a directory (expected PATH/train and PATH/val)")
    normalize = T.Normalize(IMAGENET_MEAN, IMAGENET_STD)
    train = torchvision.datasets.ImageFolder(
        str(path / "train"),
        T.Compose([T.RandomResizedCrop(224), T.RandomHorizontalFlip(),
                   T.ColorJitter(0.4, 0.4, 0.4, 0.2), T.ToTensor(), normalize]),
    )
    test = torchvision.datasets.ImageFolder(
        str(path / "val"), T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(), normalize])
    )
    return ImageDataset(f"imagefolder:{path}", train, test, len(train.classes), 3, 224, IMAGENET_MEAN, IMAGENET_STD)


class DeviceLoader:
    """A torch DataLoader whose batches arrive on ``device`` (the lazy, file-backed path); with a distributed
    sampler, a new shuffle every pass."""

    def __init__(self, loader: torch.utils.data.DataLoader, device: torch.device, channels_last: bool) -> None:
        self.loader = loader
        self.device = device
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.passes = 0

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        sampler = self.loader.sampler
        if isinstance(sampler, torch.utils.data.DistributedSampler):
            sampler.set_epoch(self.passes)
        self.passes += 1
        for x, y in self.loader:
            x = x.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)
            yield x, y.to(self.device, non_blocking=True)


Batches = TensorBatches | DeviceLoader


def make_batches(data: ImageDataset, split: str, indices: Sequence[int] | None, batch_size: int,
                 train: bool, device: torch.device, generator: torch.Generator,
                 cutout: bool = False, channels_last: bool = False, shard: Shard | None = None) -> Batches:
    """Mini-batches of ``split`` ("train" or "test"), shuffled and augmented when ``train``; channels-last
    images feed channels-last networks (faster convolutions on CPU and on tensor cores). ``batch_size`` is the
    global batch; with ``shard`` each process gets its share (see :class:`TensorBatches`)."""
    source = data.train if split == "train" else data.test
    if isinstance(source, TensorSource):
        aug = Augment.standard(data.image_size, data.in_channels, cutout) if train else None
        return TensorBatches(source, indices, batch_size, train, aug, data.mean, data.std, device,
                             generator, drop_last=train, channels_last=channels_last, shard=shard)
    subset = source if indices is None else torch.utils.data.Subset(source, list(indices))
    sampler = None
    if shard is not None:
        rank, world = shard
        seed = int(torch.randint(2**31, (1,), generator=generator))  # the same on every process
        sampler = torch.utils.data.DistributedSampler(subset, num_replicas=world, rank=rank, shuffle=train,
                                                      seed=seed, drop_last=train)
        batch_size = max(1, batch_size // world)
    loader = torch.utils.data.DataLoader(subset, batch_size=batch_size, shuffle=train and sampler is None,
                                         sampler=sampler, num_workers=data.loader_workers,
                                         pin_memory=device.type == "cuda", drop_last=train,
                                         generator=generator if sampler is None else None,
                                         persistent_workers=data.loader_workers > 0)
    return DeviceLoader(loader, device, channels_last)


def split_indices(n: int, portion: float, generator: torch.Generator,
                  val_portion: float | None = None) -> tuple[list[int], list[int]]:
    """Disjoint random search-train / search-val index lists: ``portion`` of range(n) for training and
    ``val_portion`` (default: the rest) for validation, e.g. 0.1 and 0.025 for PC-DARTS on ImageNet."""
    val_portion = 1.0 - portion if val_portion is None else val_portion
    if not 0.0 < portion < 1.0 or not 0.0 < val_portion <= 1.0 - portion + 1e-9:
        raise NasError(f"search split {portion:g}/{val_portion:g} must be positive fractions adding up to <= 1")
    order = torch.randperm(n, generator=generator).tolist()
    cut, size = int(round(n * portion)), int(round(n * val_portion))
    if cut == 0 or size == 0 or cut + size > n:
        raise NasError(f"{n} training images cannot be split {portion:g}/{val_portion:g}")
    return order[:cut], order[cut : cut + size]
