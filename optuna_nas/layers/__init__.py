"""Layers that compute torch's own functions faster on CPU (channels-last, few channels, depthwise pairs).

Each module says what it replaces, why (measured), and that the function and its gradient are unchanged;
``tests/layers`` compares each against the torch layer it stands for. They keep torch's parameter names, so
state dicts and checkpoints are interchangeable with the plain layers.
"""

from .batchnorm import BatchNorm2d, batch_norm
from .pooling import MaxPool2d, pool_batch_norm
from .separable import SeparableSequential, depthwise_pointwise
from .shuffle import shuffled_cat
from .strided import DilatedConv2d, cat_channels, layout_of, subsample

__all__ = ["BatchNorm2d", "DilatedConv2d", "MaxPool2d", "SeparableSequential", "batch_norm", "cat_channels",
           "depthwise_pointwise", "layout_of", "pool_batch_norm", "shuffled_cat",
           "subsample"]
