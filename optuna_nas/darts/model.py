"""Discrete networks built from a genotype: the CIFAR network and the ImageNet mobile-setting network.

Both follow the original DARTS ``model.py``: stem, L cells with reductions at L/3 and 2L/3, an
auxiliary head after cell 2L/3, drop path on every non-identity edge. Each edge carries its own
activation (A-DARTS); ``Genotype.with_activation`` overrides them all at retrain time.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from timm.layers import drop_path
from torch import nn

from ..cost import network_cost
from ..errors import NasError
from ..layers import cat_channels
from ..ops import ActivatedOperation, FactorizedReduce, ReLUConvBN, activation_share_key, build_operation
from .genotypes import Genotype


def _shared_activation_key(op: nn.Module) -> str | None:
    """Edges reading the same node with equal fixed activations share one activated map (``ops``)."""
    return activation_share_key([op.activation]) if isinstance(op, ActivatedOperation) else None


# The retraining networks of DARTS / A-DARTS: CIFAR at C=36 with 20 cells; ImageNet's mobile setting at C=48
# with 14 cells (at most 600M multiply-adds).
CIFAR_CHANNELS, CIFAR_LAYERS = 36, 20
IMAGENET_CHANNELS, IMAGENET_LAYERS = 48, 14


class Cell(nn.Module):
    def __init__(self, genotype: Genotype, c_prev_prev: int, c_prev: int, channels: int,
                 reduction: bool, reduction_prev: bool) -> None:
        super().__init__()
        self.reduction = reduction
        if reduction_prev:
            self.preprocess0: nn.Module = FactorizedReduce(c_prev_prev, channels, affine=True)
        else:
            self.preprocess0 = ReLUConvBN(c_prev_prev, channels, 1, 1, 0, affine=True)
        self.preprocess1 = ReLUConvBN(c_prev, channels, 1, 1, 0, affine=True)
        edges, concat = genotype.cell(reduction)
        self.steps = len(edges) // 2
        self.concat = concat
        self.multiplier = len(concat)
        self.indices = tuple(e.input for e in edges)
        self.ops = nn.ModuleList(
            build_operation(e.op, channels, 2 if reduction and e.input < 2 else 1, True, e.effective_activation)
            for e in edges
        )
        self.drop_prob = 0.0
        self.shared_activation = tuple(_shared_activation_key(op) for op in self.ops)

    def forward(self, s0: torch.Tensor, s1: torch.Tensor) -> torch.Tensor:
        return self.from_activated(torch.relu(s0), torch.relu(s1))

    def from_activated(self, r0: torch.Tensor, r1: torch.Tensor) -> torch.Tensor:
        """The cell on its inputs' ReLUs (the preprocessing starts with a ReLU): the network computes the ReLU of
        each cell output once for the two cells that read it."""
        states = [self.preprocess0.after_relu(r0), self.preprocess1.after_relu(r1)]
        activated: dict[tuple[int, str], torch.Tensor] = {}
        for i in range(self.steps):
            total = None
            for k in (2 * i, 2 * i + 1):
                h = self._edge(k, states, activated)
                if self.training and self.drop_prob > 0 and not isinstance(self.ops[k], nn.Identity):
                    h = drop_path(h, self.drop_prob, self.training)
                total = h if total is None else total + h
            states.append(total)
        return cat_channels([states[i] for i in self.concat])

    def _edge(self, k: int, states: list[torch.Tensor], activated: dict[tuple[int, str], torch.Tensor]) -> torch.Tensor:
        op, source, key = self.ops[k], self.indices[k], self.shared_activation[k]
        if key is None:
            return op(states[source])
        if (source, key) not in activated:
            activated[source, key] = op.activation(states[source])
        return op.body(activated[source, key])


class AuxiliaryHead(nn.Module):
    """DARTS's auxiliary classifier: ReLU, 5x5 average pool, 1x1 conv to 128, 2x2 conv to 768, linear.

    ``pool_stride`` is 3 for CIFAR's 8x8 maps and 2 for ImageNet's 14x14 ones (the ImageNet head keeps
    the BatchNorm the original code commented out). Maps smaller than ``min_size`` (tiny inputs such
    as 8x8 digits) are enlarged first, and a final global pool accepts maps larger than the design size.
    """

    def __init__(self, channels: int, num_classes: int, pool_stride: int, min_size: int) -> None:
        super().__init__()
        self.min_size = min_size
        self.features = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.AvgPool2d(5, stride=pool_stride, padding=0, count_include_pad=False),
            nn.Conv2d(channels, 128, 1, bias=False),
            nn.BatchNorm2d(128),
            nn.ReLU(inplace=True),
            nn.Conv2d(128, 768, 2, bias=False),
            nn.BatchNorm2d(768),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1),
        )
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] < self.min_size:
            x = nn.functional.interpolate(x, size=(self.min_size, self.min_size), mode="nearest")
        return self.classifier(self.features(x).flatten(1))


def auxiliary_head_cifar(channels: int, num_classes: int) -> AuxiliaryHead:
    return AuxiliaryHead(channels, num_classes, pool_stride=3, min_size=8)


def auxiliary_head_imagenet(channels: int, num_classes: int) -> AuxiliaryHead:
    return AuxiliaryHead(channels, num_classes, pool_stride=2, min_size=7)


class CIFARStem(nn.Module):
    """3x3 convolution to ``stem_multiplier * C`` channels; both cell inputs of cell 0 are its output."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.bn(self.conv(x))
        return s, s


class ImageNetStem(nn.Module):
    """The mobile setting's three stride-2 convolutions (224 -> 28); cell 0 reads the last two maps."""

    def __init__(self, in_channels: int, channels: int) -> None:
        super().__init__()
        self.stem0 = nn.Sequential(
            nn.Conv2d(in_channels, channels // 2, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(channels // 2),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels // 2, channels, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(channels),
        )
        self.stem1 = nn.Sequential(
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(channels),
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s0 = self.stem0(x)
        return s0, self.stem1(s0)


class DiscreteNetwork(nn.Module):
    """Stem, cell stack with reductions at L/3 and 2L/3, auxiliary head after cell 2L/3, classifier."""

    def __init__(self, genotype: Genotype, stem: nn.Module, c_stem: int, channels: int, layers: int,
                 num_classes: int, auxiliary_head: Callable[[int, int], nn.Module] | None,
                 reduction_prev: bool) -> None:
        super().__init__()
        if layers < 3:
            raise NasError(f"a network needs at least 3 cells (two are reductions), got {layers}")
        self.stem = stem
        c_prev_prev, c_prev, c_curr = c_stem, c_stem, channels
        cells = []
        self.aux_position = 2 * layers // 3
        c_aux = 0
        for i in range(layers):
            reduction = i in (layers // 3, 2 * layers // 3)
            if reduction:
                c_curr *= 2
            cell = Cell(genotype, c_prev_prev, c_prev, c_curr, reduction, reduction_prev)
            cells.append(cell)
            reduction_prev = reduction
            c_prev_prev, c_prev = c_prev, cell.multiplier * c_curr
            if i == self.aux_position:
                c_aux = c_prev
        self.cells = nn.ModuleList(cells)
        self.auxiliary_head = auxiliary_head(c_aux, num_classes) if auxiliary_head else None
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_prev, num_classes)
        self.drop_path_prob = 0.0

    def set_drop_path(self, prob: float) -> None:
        self.drop_path_prob = prob
        for cell in self.cells:
            cell.drop_prob = prob

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Logits; in training mode with an auxiliary head, ``(logits, auxiliary_logits)``."""
        s0, s1 = self.stem(x)
        # each cell output is s1 of the next cell and s0 of the one after, both preprocessed from its ReLU:
        # computed once (r1 becomes r0), and never for the last output, which only the classifier reads
        r0 = torch.relu(s0)
        r1 = r0 if s1 is s0 else torch.relu(s1)
        logits_aux = None
        for i, cell in enumerate(self.cells):
            s1 = cell.from_activated(r0, r1)
            r0 = r1
            if i + 1 < len(self.cells):
                r1 = torch.relu(s1)
            if i == self.aux_position and self.auxiliary_head is not None and self.training:
                logits_aux = self.auxiliary_head(s1)
        logits = self.classifier(self.global_pooling(s1).flatten(1))
        return (logits, logits_aux) if logits_aux is not None else logits


def network_cifar(genotype: Genotype, channels: int = CIFAR_CHANNELS, num_classes: int = 10,
                  layers: int = CIFAR_LAYERS, auxiliary: bool = True, in_channels: int = 3,
                  stem_multiplier: int = 3) -> DiscreteNetwork:
    """The CIFAR network (DARTS_V2 at C=36, 20 cells has 3,349,342 parameters without its auxiliary head)."""
    c_stem = stem_multiplier * channels
    return DiscreteNetwork(genotype, CIFARStem(in_channels, c_stem), c_stem, channels, layers, num_classes,
                           auxiliary_head_cifar if auxiliary else None, reduction_prev=False)


def network_imagenet(genotype: Genotype, channels: int = IMAGENET_CHANNELS, num_classes: int = 1000,
                     layers: int = IMAGENET_LAYERS, auxiliary: bool = True, in_channels: int = 3) -> DiscreteNetwork:
    """The ImageNet mobile setting: 224x224 input, 14 cells, C chosen to stay under 600M multiply-adds."""
    return DiscreteNetwork(genotype, ImageNetStem(in_channels, channels), channels, channels, layers,
                           num_classes, auxiliary_head_imagenet if auxiliary else None, reduction_prev=True)


def build_network(genotype: Genotype, num_classes: int, in_channels: int, channels: int, layers: int,
                  imagenet: bool = False, auxiliary: bool = True) -> DiscreteNetwork:
    """The CIFAR network, or the ImageNet mobile-setting network, of ``genotype``."""
    factory = network_imagenet if imagenet else network_cifar
    return factory(genotype, channels=channels, num_classes=num_classes, layers=layers,
                   auxiliary=auxiliary, in_channels=in_channels)


def genotype_cost(genotype: Genotype, num_classes: int, input_shape: tuple[int, int, int], channels: int,
                  layers: int, imagenet: bool = False) -> dict[str, int]:
    """Parameters (no auxiliary head) and multiply-adds of the network the genotype retrains as."""
    net = build_network(genotype, num_classes, input_shape[0], channels, layers, imagenet, auxiliary=False)
    return network_cost(net, input_shape)
