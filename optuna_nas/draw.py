"""PNG drawings of architectures: a DARTS-family genotype's two cells, and a grown RandGrow network.

Figures are built on matplotlib's Agg canvas directly (no pyplot, no GUI, nothing left open), at a fixed
size, and written as 128-colour palette PNGs (tens of KB) by Pillow without metadata, so the same
architecture gives the same bytes.

* :func:`draw_genotype`: the normal and the reduction cell side by side, each a DAG from the cell inputs
  ``c_{k-2}``, ``c_{k-1}`` through the intermediate nodes ``0 .. steps-1`` to the output ``c_{k}``; every
  edge is labelled with its operator and, for parameterised operators, its activation.
* :func:`draw_randgrow`: the skeleton's layers as a strip (stem, normal and reduction cells per block),
  one arc per increment input from its input layer to its target layer (coloured by operator; a count
  matrix once arcs would be a tangle), and the stored increments listed below.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .errors import NasError
from .genotypes import Edge, Genotype
from .ops import DARTS_OPERATORS
from .randgrow.architecture import Architecture, Increment, IncrementInput

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

DPI = 100
FONT = 7.0
_PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#7f7f7f")
_NODE_COLOURS = {"input": "#cfe2f3", "node": "#fff2cc", "output": "#d9ead3"}
_KIND_COLOURS = {"stem": "#d9d9d9", "normal": "#cfe2f3", "reduction": "#f4cccc"}


def _op_colour(op: str) -> str:
    """A fixed colour per operator (the DARTS operators in their order, any other by a hash of its name)."""
    index = DARTS_OPERATORS.index(op) if op in DARTS_OPERATORS else zlib.crc32(op.encode())
    return _PALETTE[index % len(_PALETTE)]


def _figure(width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Figure, path: str | Path) -> Path:
    """Render, reduce to a 128-colour palette (a third of the bytes of antialiased RGBA) and write a PNG."""
    from PIL import Image

    path = Path(path)
    try:
        figure.canvas.draw()
        image = Image.fromarray(np.asarray(figure.canvas.buffer_rgba())).convert("RGB")  # type: ignore[attr-defined]
        image = image.quantize(colors=128, method=0, dither=0)  # median cut, no dithering (any Pillow)
        image.save(path, format="PNG", optimize=True)
    except OSError as exc:
        raise NasError(f"cannot write the drawing to {path}: {exc.strerror or exc}") from None
    finally:
        figure.clear()
    return path


# ---------------------------------------------------------------- genotype cells


def edge_label(edge: Edge) -> str:
    """``"sep_conv_3x3 · selu"`` for a parameterised operator, the operator alone otherwise."""
    activation = edge.effective_activation
    return f"{edge.op} · {activation}" if activation else edge.op


def draw_genotype(genotype: Genotype, path: str | Path, title: str | None = None) -> Path:
    """Write the normal and the reduction cell of ``genotype`` side by side to the PNG ``path``."""
    steps = max(len(genotype.normal), len(genotype.reduce)) // 2
    figure = _figure(12.0, 1.0 + 0.85 * max(steps, 3))
    figure.subplots_adjust(left=0.01, right=0.99, bottom=0.02, top=0.86 if title else 0.9, wspace=0.04)
    if title:
        figure.suptitle(title, fontsize=FONT + 3)
    for ax, reduction in zip(figure.subplots(1, 2), (False, True), strict=True):
        _draw_cell(ax, *genotype.cell(reduction), "reduction cell" if reduction else "normal cell")
    return _save(figure, path)


def _draw_cell(ax: Axes, edges: tuple[Edge, ...], concat: tuple[int, ...], name: str) -> None:
    from matplotlib.patches import FancyArrowPatch

    steps = len(edges) // 2
    top = (steps - 1) / 2
    spread = max(0.5, 0.6 * top)
    # node ids as in the genotype: 0 = c_{k-2}, 1 = c_{k-1}, 2 .. steps+1 = intermediate nodes; -1 = c_{k}
    position = {0: (0.0, spread), 1: (0.0, -spread), -1: (5.6, 0.0)}
    position.update({j + 2: (3.0, top - j) for j in range(steps)})
    ax.set_xlim(-0.5, 6.1)
    ax.set_ylim(-top - 0.55, top + 0.55)
    ax.set_axis_off()
    ax.set_title(name, fontsize=FONT + 2)
    to_pixels = ax.transData.transform
    boxes: list[tuple[float, float, float, float]] = []  # occupied pixel boxes: nodes, then placed labels
    labels = {0: "$c_{k-2}$", 1: "$c_{k-1}$", -1: "$c_{k}$"} | {j + 2: str(j) for j in range(steps)}
    for node, (x, y) in position.items():
        kind = "input" if node in (0, 1) else "output" if node == -1 else "node"
        ax.text(x, y, labels[node], ha="center", va="center", fontsize=FONT + 2, zorder=3,
                bbox={"boxstyle": "round,pad=0.35", "fc": _NODE_COLOURS[kind], "ec": "#555555"})
        px, py = to_pixels((x, y))
        boxes.append((px - 18, py - 11, px + 18, py + 11))

    seen: set[tuple[int, int]] = set()
    for k, edge in enumerate(edges):
        source, target = edge.input, k // 2 + 2
        rad = 0.0 if source < 2 else -0.35  # node-to-node edges share a column: bow them to the right
        if (source, target) in seen:  # the same input twice: curve the second copy the other way
            rad = -0.25 if rad == 0.0 else -0.6
        seen.add((source, target))
        colour = _op_colour(edge.op)
        ax.add_patch(FancyArrowPatch(position[source], position[target], arrowstyle="-|>", mutation_scale=9,
                                     connectionstyle=f"arc3,rad={rad}", shrinkA=13, shrinkB=13, color=colour,
                                     lw=1.1, zorder=1))
        _place_label(ax, edge_label(edge), to_pixels(position[source]), to_pixels(position[target]), rad, colour,
                     boxes)
    for node in concat:
        ax.add_patch(FancyArrowPatch(position[node], position[-1], arrowstyle="-|>", mutation_scale=8,
                                     shrinkA=13, shrinkB=13, color="#999999", lw=0.8, ls="--", zorder=1))


def _place_label(ax: Axes, text: str, start: np.ndarray, end: np.ndarray, rad: float, colour: str,
                 boxes: list[tuple[float, float, float, float]]) -> None:
    """Put ``text`` on the arc3 curve from ``start`` to ``end`` (pixels), where it overlaps no node or label."""
    (x1, y1), (x2, y2) = start, end
    control = np.array([(x1 + x2) / 2 + rad * (y2 - y1), (y1 + y2) / 2 - rad * (x2 - x1)])
    half_w, half_h = 0.3 * FONT * len(text) * DPI / 72 + 3, 0.7 * FONT * DPI / 72 + 2

    def overlap(box: tuple[float, float, float, float]) -> float:
        return sum(max(0.0, min(box[2], b[2]) - max(box[0], b[0])) * max(0.0, min(box[3], b[3]) - max(box[1], b[1]))
                   for b in boxes)

    candidates = []
    for t in (0.5, 0.4, 0.6, 0.3, 0.7, 0.22, 0.78):
        x, y = (1 - t) ** 2 * np.asarray(start) + 2 * t * (1 - t) * control + t**2 * np.asarray(end)
        candidates.append((float(x - half_w), float(y - half_h), float(x + half_w), float(y + half_h)))
    best = min(candidates, key=overlap)  # the first free spot, else the least covered one
    boxes.append(best)
    x, y = ax.transData.inverted().transform(((best[0] + best[2]) / 2, (best[1] + best[3]) / 2))
    ax.text(x, y, text, ha="center", va="center", fontsize=FONT, color=colour, zorder=2,
            bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.85})


# ---------------------------------------------------------------- RandGrow architectures

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
    figure = _figure(width, strip_h + list_h)
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
    return _save(figure, path)


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
        ax.plot(xs, 0.25 + height * np.sin(theta), color=_op_colour(item.op), lw=0.8)
        ax.plot([target], [0.3], marker="v", ms=3, color="#333333")
        top = max(top, 0.25 + height)
    if inputs:
        handles = [Line2D([], [], color=_op_colour(op), lw=1.5, label=f"{op} ×{count}")
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
