"""A drawing of a genotype's two cells (a PNG trial artifact the dashboard shows).

The normal and the reduction cell side by side, each a DAG from the cell inputs ``c_{k-2}``, ``c_{k-1}``
through the intermediate nodes ``0 .. steps-1`` to the output ``c_{k}``; every edge is labelled with its
operator and, for parameterised operators, its activation.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..plotting import DPI, FONT, new_figure, op_colour, save_png
from .genotypes import Edge, Genotype

if TYPE_CHECKING:
    from matplotlib.axes import Axes

_NODE_COLOURS = {"input": "#cfe2f3", "node": "#fff2cc", "output": "#d9ead3"}


def edge_label(edge: Edge) -> str:
    """``"sep_conv_3x3 · selu"`` for a parameterised operator, the operator alone otherwise."""
    activation = edge.effective_activation
    return f"{edge.op} · {activation}" if activation else edge.op


def draw_genotype(genotype: Genotype, path: str | Path, title: str | None = None) -> Path:
    """Write the normal and the reduction cell of ``genotype`` side by side to the PNG ``path``."""
    steps = max(len(genotype.normal), len(genotype.reduce)) // 2
    figure = new_figure(12.0, 1.0 + 0.85 * max(steps, 3))
    figure.subplots_adjust(left=0.01, right=0.99, bottom=0.02, top=0.86 if title else 0.9, wspace=0.04)
    if title:
        figure.suptitle(title, fontsize=FONT + 3)
    for ax, reduction in zip(figure.subplots(1, 2), (False, True), strict=True):
        _draw_cell(ax, *genotype.cell(reduction), "reduction cell" if reduction else "normal cell")
    return save_png(figure, path)


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
        colour = op_colour(edge.op)
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
