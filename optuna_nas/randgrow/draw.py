"""A drawing of a grown RandGrow network (a PNG trial artifact).

The skeleton's layers as a strip (stem, normal and reduction cells per block), one arc per increment input
from its input layer to its target layer (coloured by operator; a count matrix once arcs would be a
tangle), and the stored increments listed below.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..plotting import FONT, new_figure, op_colour, save_png
from .architecture import Architecture, Increment, IncrementInput

if TYPE_CHECKING:
    from matplotlib.axes import Axes

_KIND_COLOURS = {"stem": "#d9d9d9", "normal": "#cfe2f3", "reduction": "#f4cccc"}

MAX_LISTED = 30  # increments listed under the diagram
MAX_ARCS = 150  # above this many increment inputs, a count matrix replaces the arcs
Inputs = list[tuple[int, int, IncrementInput]]  # (target layer, position k, input) of every increment input


def draw_randgrow(architecture: Architecture, path: str | Path, title: str | None = None) -> Path:
    """Write a compact diagram of a RandGrow ``architecture`` (skeleton, increments) to the PNG ``path``.

    The skeleton is a strip of layers (``S`` is the stem, layer ``i`` the output of cell ``i``) under one arc
    per increment input, from its input layer to its target layer and coloured by operator; when there are
    more than :data:`MAX_ARCS` inputs, a matrix of input counts (input layer up, target layer across)
    replaces the arcs. The stored increments are listed below, in growth order.
    """
    from matplotlib.patches import Rectangle

    skeleton = architecture.skeleton
    lines = _increment_lines(architecture)
    shown = lines[:MAX_LISTED] + ([f"... and {len(lines) - MAX_LISTED} more"] if len(lines) > MAX_LISTED else [])
    width = min(16.0, max(8.0, 0.42 * skeleton.num_layers + 1.5))
    strip_h, list_h = 2.6, 0.125 * (len(shown) + 2)
    figure = new_figure(width, strip_h + list_h)
    ax = figure.add_axes((0.02, list_h / (strip_h + list_h), 0.96, 0.8 * strip_h / (strip_h + list_h)))
    ax.set_axis_off()
    modes = sorted({increment.mode for increment in architecture.increments}) or ["initial"]
    expanded = sum(len(group) for group in architecture.expanded())
    ax.set_title(title or f"RandGrow {'+'.join(modes)}: N={skeleton.cells_per_block}, F={skeleton.channels}, "
                 f"{len(architecture.increments)} stored increments ({expanded} in the network)",
                 fontsize=FONT + 2)

    for layer in skeleton.layers:
        ax.add_patch(Rectangle((layer.index - 0.35, -0.25), 0.7, 0.5, fc=_KIND_COLOURS[layer.kind], ec="#555555"))
        ax.text(layer.index, 0, "S" if layer.kind == "stem" else str(layer.index), ha="center", va="center",
                fontsize=FONT - 0.5)
    n = skeleton.cells_per_block
    for block in range(3):
        ax.text(1 + block * (n + 1) + (n - 1) / 2, -0.55, f"block {block + 1}: {n} normal, "
                f"{skeleton.channels << block} ch", ha="center", va="center", fontsize=FONT)
    for index in skeleton.cell_layers("reduction"):
        ax.text(index, -0.55, "red.", ha="center", va="center", fontsize=FONT - 1, color="#990000")

    inputs = [(increment.target, k, item) for group in architecture.expanded() for increment in group
              for k, item in enumerate(increment.inputs)]
    top = _draw_arcs(ax, inputs) if len(inputs) <= MAX_ARCS else _draw_matrix(ax, inputs, skeleton.num_layers)
    ax.set_xlim(-0.6, skeleton.num_layers - 0.4)
    ax.set_ylim(-0.95, top + 0.5)

    text_ax = figure.add_axes((0.02, 0.0, 0.96, list_h / (strip_h + list_h)))
    text_ax.set_axis_off()
    header = "increments in growth order: target <- inputs (layer, or cells back) with their operators"
    text_ax.text(0.0, 1.0, "\n".join([header, *shown] if lines else ["no increments: the initial network"]),
                 va="top", ha="left", family="monospace", fontsize=FONT, transform=text_ax.transAxes)
    return save_png(figure, path)


def _op_counts(inputs: Inputs) -> dict[str, int]:
    counts: dict[str, int] = {}
    for _, _, item in inputs:
        counts[item.op] = counts.get(item.op, 0) + 1
    return dict(sorted(counts.items()))


def _draw_arcs(ax: Axes, inputs: Inputs) -> float:
    """One arc per increment input above the strip, coloured by operator; returns the highest arc's top."""
    from matplotlib.lines import Line2D

    theta = np.linspace(np.pi, 0.0, 32)
    top = 0.5
    for target, k, item in inputs:
        span = target - item.source
        height = min(2.6, 0.35 + 0.3 * np.sqrt(span) + 0.1 * k)  # k: one increment's inputs do not coincide
        xs = (item.source + target) / 2 + span / 2 * np.cos(theta)
        ax.plot(xs, 0.25 + height * np.sin(theta), color=op_colour(item.op), lw=0.8)
        ax.plot([target], [0.3], marker="v", ms=3, color="#333333")
        top = max(top, 0.25 + height)
    if inputs:
        handles = [Line2D([], [], color=op_colour(op), lw=1.5, label=f"{op} ×{count}")
                   for op, count in _op_counts(inputs).items()]
        ax.legend(handles=handles, loc="upper left", fontsize=FONT - 0.5, ncol=len(handles), frameon=False,
                  bbox_to_anchor=(0.0, 1.02))
    return top + 0.3


def _draw_matrix(ax: Axes, inputs: Inputs, num_layers: int) -> float:
    """Increment inputs counted per (input layer: row, target layer: column), above the strip."""
    from matplotlib import colormaps
    from matplotlib.patches import Rectangle

    counts = np.zeros((num_layers, num_layers), dtype=int)
    for target, _, item in inputs:
        counts[item.source, target] += 1
    row, base, cmap = 2.4 / num_layers, 0.45, colormaps["Blues"]
    for source, target in zip(*np.nonzero(counts), strict=True):
        shade = cmap(0.25 + 0.75 * counts[source, target] / counts.max())
        ax.add_patch(Rectangle((target - 0.4, base + source * row), 0.8, row * 0.9, fc=shade, ec="none"))
    for source in range(0, num_layers - 1, 5):
        ax.text(-0.45, base + (source + 0.45) * row, "S" if source == 0 else str(source), ha="right", va="center",
                fontsize=FONT - 1.5)
    summary = ", ".join(f"{op} ×{count}" for op, count in _op_counts(inputs).items())
    ax.text(-0.5, base + num_layers * row + 0.15, f"increment inputs per input layer (row; stem at the bottom) and "
            f"target layer (column), darkest = {counts.max()};  {summary}", fontsize=FONT - 0.5, va="bottom")
    return base + num_layers * row + 0.3


def _increment_lines(architecture: Architecture) -> list[str]:
    lines = []
    for k, increment in enumerate(architecture.increments):
        if isinstance(increment, Increment):
            inputs = ", ".join(f"L{i.source} {i.op}" for i in increment.inputs)
            lines.append(f"{k:>4}  L{increment.target} <- {inputs}")
        else:
            inputs = ", ".join(f"{i.source} back {i.op}" for i in increment.inputs)
            lines.append(f"{k:>4}  every {increment.cell_type} cell <- {inputs}")
    return lines
