"""The ``nn.Module`` of a RandGrow :class:`~optuna_nas.randgrow.architecture.Architecture`.

RandGrow trains each child starting from its parent's weights, so module names are a function of the
architecture alone: the skeleton lives under ``stem``, ``cells.<i>`` and ``classifier``, and stored
increment ``k`` lives under ``increments.<k>.<target layer>`` (one entry per cell for a replicated
cell-search increment). Growing only appends increments, so a child's ``state_dict`` is its parent's
with new ``increments.<k>`` keys, and :func:`inherit_weights` is a plain non-strict load.

Every operator comes from the shared registry (:mod:`optuna_nas.ops`); separable convolutions are the
registry's two stacked convolutions with a leading ReLU (``build_operation``).

Resolution matching (the paper is silent): an input ``d`` levels above its target's resolution is
processed by its operator at stride 2 (the registry's strided form: strided separable convolution or
pooling, FactorizedReduce for identity), then by ``d - 1`` parameter-free stride-2 ``avg_pool_3x3``.
The operator therefore sees full-resolution features once, and the extra halvings (only ever from level 0
to level 2) add no parameters. Channel mismatch is left to the increment's 1x1 projection.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from timm.layers import drop_path
from torch import nn

from ..errors import NasError
from ..layers import cat_channels
from ..ops import ReLUConvBN, build_operation, operation_spec
from .architecture import Architecture, Increment, Skeleton


class NormalCell(nn.Module):
    """The initial residual unit ``x + sep_conv_3x3(x)``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.op = build_operation("sep_conv_3x3", channels, 1, affine=True, activation="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.op(x)


class ReductionCell(nn.Module):
    """The residual unit at stride 2: a 1x1 map to ``out_channels``, then strided sep_conv + shortcut."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.preprocess = ReLUConvBN(in_channels, out_channels, 1, 1, 0, affine=True)
        self.op = build_operation("sep_conv_3x3", out_channels, 2, affine=True, activation="relu")
        self.shortcut = build_operation("skip_connect", out_channels, 2, affine=True, activation=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.preprocess(x)
        return self.shortcut(x) + self.op(x)


class IncrementInputOp(nn.Module):
    """One processed input of an increment, brought down ``levels_down`` resolution levels."""

    def __init__(self, op: str, channels: int, levels_down: int) -> None:
        super().__init__()
        if levels_down < 0:
            raise NasError("an increment input cannot have a lower resolution than its target")
        stride = 2 if levels_down else 1
        self.op = build_operation(op, channels, stride, affine=True, activation="relu")
        pool = operation_spec("avg_pool_3x3").factory
        self.reduce = nn.Sequential(*(pool(channels, 2, True) for _ in range(levels_down - 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.reduce(self.op(x))


class IncrementBlock(nn.Module):
    """``x_c = BN(conv1x1(concat(op_k(x_in_k))))``, shaped like its target layer (paper Fig. 1).

    The BatchNorm after the projection keeps ``x_c`` on the scale of the layer it is added to, and its
    weight is the one knob :meth:`zero_init_last` turns to make a new increment a no-op.
    """

    def __init__(self, increment: Increment, skeleton: Skeleton) -> None:
        super().__init__()
        target = skeleton.layer(increment.target)
        sources = [skeleton.layer(item.source) for item in increment.inputs]
        self.sources = tuple(layer.index for layer in sources)
        self.inputs = nn.ModuleList(
            IncrementInputOp(item.op, layer.channels, target.level - layer.level)
            for item, layer in zip(increment.inputs, sources, strict=True)
        )
        self.project = nn.Conv2d(sum(layer.channels for layer in sources), target.channels, 1, bias=False)
        self.bn = nn.BatchNorm2d(target.channels)

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.bn.weight)
        nn.init.zeros_(self.bn.bias)

    def forward(self, layers: Sequence[torch.Tensor]) -> torch.Tensor:
        x = cat_channels([op(layers[s]) for s, op in zip(self.sources, self.inputs, strict=True)])
        return self.bn(self.project(x))


class RandGrowNetwork(nn.Module):
    """The classifier an :class:`Architecture` describes; build it again from the same JSON anywhere.

    ``drop_path_prob`` (path dropout of the paper's final training) drops whole increments per sample;
    the training loop may change the attribute between epochs, as in DARTS.
    """

    def __init__(self, architecture: Architecture, drop_path_prob: float = 0.0) -> None:
        super().__init__()
        skeleton = architecture.skeleton
        self.architecture = architecture
        self.drop_path_prob = drop_path_prob
        self.stem = nn.Sequential(
            nn.Conv2d(skeleton.in_channels, skeleton.channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(skeleton.channels),
        )
        cells: list[nn.Module] = []
        for index in range(1, skeleton.num_layers):
            layer, previous = skeleton.layer(index), skeleton.layer(index - 1)
            if layer.kind == "reduction":
                cells.append(ReductionCell(previous.channels, layer.channels))
            else:
                cells.append(NormalCell(layer.channels))
        self.cells = nn.ModuleList(cells)

        self.increments = nn.ModuleList()
        self._incoming: list[list[tuple[int, str]]] = [[] for _ in range(skeleton.num_layers)]
        for k, expanded in enumerate(architecture.expanded()):
            blocks = nn.ModuleDict()
            for increment in expanded:
                blocks[str(increment.target)] = IncrementBlock(increment, skeleton)
                self._incoming[increment.target].append((k, str(increment.target)))
            self.increments.append(blocks)

        self.num_features = skeleton.layer(skeleton.num_layers - 1).channels
        self.act = nn.ReLU()
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(self.num_features, skeleton.num_classes)

    def set_drop_path(self, prob: float) -> None:
        """The drop probability of every increment (the final training's linear schedule sets it per epoch)."""
        self.drop_path_prob = prob

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        layers = [self.stem(x)]
        for index, cell in enumerate(self.cells, start=1):
            out = cell(layers[-1])
            for k, key in self._incoming[index]:
                change = self.increments[k][key](layers)
                if self.training and self.drop_path_prob > 0.0:
                    change = drop_path(change, self.drop_path_prob, self.training)
                out = out + change
            layers.append(out)
        return layers[-1]

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.global_pool(self.act(x)).flatten(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def inherit_weights(
    child: nn.Module, parent_state_dict: Mapping[str, torch.Tensor], function_preserving: bool = False
) -> list[str]:
    """Copy every parent tensor into ``child`` unchanged; return the child's freshly initialised keys.

    By default new increments keep their random initialisation, as in the paper. With
    ``function_preserving=True`` each new increment's last BatchNorm is zeroed, so the child computes
    exactly its parent's function until its first update.
    """
    own = child.state_dict()
    foreign = [key for key in parent_state_dict if key not in own]
    if foreign:
        raise NasError(
            f"the parent has {len(foreign)} tensor(s) the child lacks (e.g. {foreign[0]!r}); "
            "is the child grown from this parent?"
        )
    for key, value in parent_state_dict.items():
        if tuple(value.shape) != tuple(own[key].shape):
            raise NasError(
                f"parent tensor {key!r} has shape {tuple(value.shape)}, the child's {tuple(own[key].shape)}; "
                "is the child grown from this parent?"
            )
    child.load_state_dict(dict(parent_state_dict), strict=False)
    fresh = [key for key in own if key not in parent_state_dict]
    if function_preserving:
        fresh_set = set(fresh)
        for name, module in child.named_modules():
            if isinstance(module, IncrementBlock) and f"{name}.bn.weight" in fresh_set:
                module.zero_init_last()
    return fresh

