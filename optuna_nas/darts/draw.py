"""Drawings of a DARTS search as PNG trial artifacts the dashboard shows.

:func:`draw_genotype`: the normal and the reduction cell side by side, each a DAG from the cell inputs
``c_{k-2}``, ``c_{k-1}`` through the intermediate nodes ``0 .. steps-1`` to the output ``c_{k}``; every edge is
labelled with its operator and, for parameterised operators, its activation, where no label hides another or a
node (:func:`cell_text_boxes` measures that).

:func:`draw_architecture_weights`: the architecture weights α, β, γ of the last epoch and their evolution over
the epochs (which shows, e.g., the collapse to skip_connect).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from ..errors import NasError
from ..plotting import DPI, FONT, PALETTE, new_figure, op_colour, save_png
from .genotypes import Edge, Genotype

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.text import Text
    from matplotlib.transforms import Bbox

_NODE_COLOURS = {"input": "#cfe2f3", "node": "#fff2cc", "output": "#d9ead3"}


def edge_label(edge: Edge) -> str:
    """``"sep_conv_3x3 · selu"`` for a parameterised operator, the operator alone otherwise."""
    activation = edge.effective_activation
    return f"{edge.op} · {activation}" if activation else edge.op


def draw_genotype(genotype: Genotype, path: str | Path, title: str | None = None) -> Path:
    """Write the normal and the reduction cell of ``genotype`` side by side to the PNG ``path``."""
    figure, _ = _genotype_figure(genotype, title)
    return save_png(figure, path)


class TextBoxes(NamedTuple):
    """Pixel boxes ``(x0, y0, x1, y1)`` of a drawn cell's node boxes and edge-label boxes."""

    nodes: list[tuple[float, float, float, float]]
    labels: list[tuple[float, float, float, float]]


def cell_text_boxes(genotype: Genotype, title: str | None = None) -> dict[str, TextBoxes]:
    """Lay out the drawing of ``genotype`` as :func:`draw_genotype` does and measure, on the rendered figure,
    where each cell's node and label boxes landed (a check that no label hides another or a node)."""
    figure, cells = _genotype_figure(genotype, title)
    try:
        figure.canvas.draw()
        renderer = figure.canvas.get_renderer()  # type: ignore[attr-defined]

        def extent(text: Text) -> tuple[float, float, float, float]:
            patch = text.get_bbox_patch()
            box = (patch if patch is not None else text).get_window_extent(renderer)
            return (box.x0, box.y0, box.x1, box.y1)

        return {name: TextBoxes([extent(t) for t in nodes], [extent(t) for t in labels])
                for name, (nodes, labels) in cells.items()}
    finally:
        figure.clear()


_Cells = dict[str, tuple[list["Text"], list["Text"]]]  # cell name: its node texts and edge-label texts
_SCALES = (1.0, 1.25, 1.5, 2.0)  # canvas sizes tried in turn until every label finds a free spot
_SPOTS = tuple(0.2 + 0.025 * i for i in range(25))  # where a label may sit on its edge (fraction of the way)
_NODE_MARGIN = 4.0  # pixels kept free around a node box (the arrowheads end there)
_LABEL_MARGIN = 1.5  # pixels between two labels


def _genotype_figure(genotype: Genotype, title: str | None) -> tuple[Figure, _Cells]:
    """The figure and each cell's texts. Cells whose labels find no free spot are laid out again on a larger
    canvas, so crowded cells (many edges from the same inputs) stay legible."""
    for scale in _SCALES[:-1]:
        figure, cells, free = _lay_out(genotype, title, scale)
        if free:
            return figure, cells
        figure.clear()
    figure, cells, _ = _lay_out(genotype, title, _SCALES[-1])  # else the least covered spots
    return figure, cells


def _lay_out(genotype: Genotype, title: str | None, scale: float) -> tuple[Figure, _Cells, bool]:
    steps = max(len(genotype.normal), len(genotype.reduce)) // 2
    height = (1.0 + 0.85 * max(steps, 3)) * scale
    figure = new_figure(13.0 * scale, height)
    figure.subplots_adjust(left=0.01, right=0.99, bottom=0.02, top=1.0 - (0.55 if title else 0.35) / height,
                           wspace=0.04)
    if title:
        figure.suptitle(title, fontsize=FONT + 3, y=1.0 - 0.08 / height, va="top")
    cells: _Cells = {}
    free = True
    for ax, reduction in zip(figure.subplots(1, 2), (False, True), strict=True):
        name = "reduction cell" if reduction else "normal cell"
        nodes, labels, placed = _draw_cell(ax, *genotype.cell(reduction), name)
        cells[name] = (nodes, labels)
        free = free and placed
    return figure, cells, free


def _draw_cell(ax: Axes, edges: tuple[Edge, ...], concat: tuple[int, ...], name: str
               ) -> tuple[list[Text], list[Text], bool]:
    """Draw one cell; returns its node texts, its label texts and whether every label found a free spot."""
    from matplotlib.patches import FancyArrowPatch

    steps = len(edges) // 2
    top = (steps - 1) / 2
    spread = max(0.5, 0.6 * top)
    # node ids as in the genotype: 0 = c_{k-2}, 1 = c_{k-1}, 2 .. steps+1 = intermediate nodes; -1 = c_{k}
    position = {0: (0.0, spread), 1: (0.0, -spread), -1: (6.0, 0.0)}
    position.update({j + 2: (3.5, top - j) for j in range(steps)})
    ax.set_xlim(-0.45, 6.45)
    ax.set_ylim(-top - 0.55, top + 0.55)
    ax.set_axis_off()
    ax.set_title(name, fontsize=FONT + 2)
    renderer = ax.figure.canvas.get_renderer()  # type: ignore[attr-defined]
    to_pixels = ax.transData.transform
    frame = ax.get_window_extent(renderer)
    occupied: list[tuple[float, float, float, float]] = []  # pixel boxes: nodes, then placed labels
    names = {0: "$c_{k-2}$", 1: "$c_{k-1}$", -1: "$c_{k}$"} | {j + 2: str(j) for j in range(steps)}
    nodes = []
    for node, (x, y) in position.items():
        kind = "input" if node in (0, 1) else "output" if node == -1 else "node"
        text = ax.text(x, y, names[node], ha="center", va="center", fontsize=FONT + 2, zorder=3,
                       bbox={"boxstyle": "round,pad=0.35", "fc": _NODE_COLOURS[kind], "ec": "#555555"})
        text.update_bbox_position_size(renderer)
        box = text.get_bbox_patch().get_window_extent(renderer)  # type: ignore[union-attr]
        occupied.append((box.x0 - _NODE_MARGIN, box.y0 - _NODE_MARGIN, box.x1 + _NODE_MARGIN, box.y1 + _NODE_MARGIN))
        nodes.append(text)

    seen: set[tuple[int, int]] = set()
    curves = []  # (start, control, end) in pixels: arc3 bends in display space
    for k, edge in enumerate(edges):
        source, target = edge.input, k // 2 + 2
        rad = 0.0 if source < 2 else -0.35  # node-to-node edges share a column: bow them to the right
        if (source, target) in seen:  # the same input twice: curve the second copy the other way
            rad = -0.25 if rad == 0.0 else -0.6
        seen.add((source, target))
        ax.add_patch(FancyArrowPatch(position[source], position[target], arrowstyle="-|>", mutation_scale=9,
                                     connectionstyle=f"arc3,rad={rad}", shrinkA=13, shrinkB=13,
                                     color=op_colour(edge.op), lw=1.1, zorder=1))
        curves.append(_arc3(to_pixels(position[source]), to_pixels(position[target]), rad))
    for node in concat:
        ax.add_patch(FancyArrowPatch(position[node], position[-1], arrowstyle="-|>", mutation_scale=8,
                                     shrinkA=13, shrinkB=13, color="#999999", lw=0.8, ls="--", zorder=1))
    lines = [_points(curve) for curve in curves]
    dashed = np.concatenate([_points(_arc3(to_pixels(position[n]), to_pixels(position[-1]), 0.0)) for n in concat]
                            or [np.empty((0, 2))])
    labels, free = [], True
    for k, edge in enumerate(edges):
        text = ax.text(0.0, 0.0, edge_label(edge), ha="center", va="center", fontsize=FONT, color=op_colour(edge.op),
                       zorder=2, bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.85})
        others = [line for j, line in enumerate(lines) if j != k] + [dashed]
        free = _place_label(ax, text, curves[k], others, occupied, frame) and free
        labels.append(text)
    return nodes, labels, free


def _arc3(start: np.ndarray, end: np.ndarray, rad: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The quadratic Bézier matplotlib's ``arc3`` draws from ``start`` to ``end`` (pixels)."""
    (x1, y1), (x2, y2) = start, end
    control = np.array([(x1 + x2) / 2 + rad * (y2 - y1), (y1 + y2) / 2 - rad * (x2 - x1)])
    return np.asarray(start, dtype=float), control, np.asarray(end, dtype=float)


def _at(curve: tuple[np.ndarray, np.ndarray, np.ndarray], t: float | np.ndarray) -> np.ndarray:
    start, control, end = curve
    t = np.asarray(t, dtype=float)[..., None]
    return (1 - t) ** 2 * start + 2 * t * (1 - t) * control + t**2 * end


def _points(curve: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
    return _at(curve, np.linspace(0.0, 1.0, 60))


def _place_label(ax: Axes, text: Text, curve: tuple[np.ndarray, np.ndarray, np.ndarray], others: list[np.ndarray],
                 occupied: list[tuple[float, float, float, float]], frame: Bbox) -> bool:
    """Move ``text`` onto its edge ``curve``: to a spot that overlaps no node or placed label (measured with the
    renderer), crosses the fewest other edges (so it reads as this edge's label) and is nearest the middle.
    Without a free spot, to the least covered one (returns False)."""
    renderer = ax.figure.canvas.get_renderer()  # type: ignore[attr-defined]
    text.update_bbox_position_size(renderer)
    size = text.get_bbox_patch().get_window_extent(renderer)  # type: ignore[union-attr]
    half = np.array([size.width / 2 + _LABEL_MARGIN, size.height / 2 + _LABEL_MARGIN])

    def covered(low: np.ndarray, high: np.ndarray) -> float:  # px² on nodes and labels; leaving the cell: worse
        outside = max(0.0, frame.x0 - low[0]) + max(0.0, high[0] - frame.x1) + max(0.0, frame.y0 - low[1]) \
            + max(0.0, high[1] - frame.y1)
        return outside * 1e3 + sum(max(0.0, min(high[0], b[2]) - max(low[0], b[0]))
                                   * max(0.0, min(high[1], b[3]) - max(low[1], b[1])) for b in occupied)

    def crossings(low: np.ndarray, high: np.ndarray) -> int:  # other edges passing through the box
        return sum(bool(np.any(np.all((line >= low) & (line <= high), axis=1))) for line in others)

    best: tuple[float, int, float] | None = None
    spot = np.zeros(2)
    for t in _SPOTS:
        centre = _at(curve, t)
        key = (covered(centre - half, centre + half), crossings(centre - half, centre + half), abs(t - 0.5))
        if best is None or key < best:
            best, spot = key, centre
    assert best is not None
    low, high = spot - half, spot + half
    occupied.append((float(low[0]), float(low[1]), float(high[0]), float(high[1])))
    text.set_position(ax.transData.inverted().transform(spot))
    return best[0] == 0.0


# ---- architecture weights over a search (α, β, γ per epoch)

_CELLS = (("normal", "normal cell"), ("reduce", "reduction cell"))
# dash patterns that tell apart lines of one colour (the activations of one operator, or the 10th+ activation)
_DASHES: tuple[str | tuple[int, tuple[int, ...]], ...] = (
    "-", "--", ":", "-.", (0, (5, 1, 1, 1, 1, 1)), (0, (8, 2)), (0, (1, 3)), (0, (8, 2, 2, 2)), (0, (3, 3)))
_WEIGHT_CMAP = "viridis"
_SHADES = 10
_MARK = "#d62728"  # outline of each edge's strongest candidate


class _CellWeights(NamedTuple):
    alpha: np.ndarray  # [epochs, edges, candidates]
    beta: np.ndarray | None  # [epochs, edges, activations]
    gamma: np.ndarray | None  # [epochs, edges]


def edge_names(n_edges: int) -> list[str]:
    """Labels of a search cell's edges in α-row order: node i reads c_{k-2}, c_{k-1}, then nodes 0 .. i-1."""
    steps = int(round((np.sqrt(9 + 8 * n_edges) - 3) / 2))
    if n_edges < 2 or steps * (steps + 3) // 2 != n_edges:
        raise NasError(f"architecture weights: {n_edges} edges is no cell "
                       "(a cell of n steps has n(n+3)/2 edges: 2, 5, 9, 14, 20, ...)")
    inputs = ["$c_{k-2}$", "$c_{k-1}$"] + [str(j) for j in range(steps)]
    return [f"{inputs[i]}→{node}" for node in range(steps) for i in range(node + 2)]


def draw_architecture_weights(epochs: Sequence[Mapping[str, Any]], candidates: Sequence[str],
                              activations: Sequence[str], path: str | Path, title: str | None = None) -> Path:
    """Write how a DARTS search's architecture weights evolve to the PNG ``path``.

    ``epochs``: one ``{"epoch": int, "normal": CELL, "reduce": CELL}`` per finished epoch, in order, where CELL is
    ``{"alpha": softmax(α) [edges][candidates], "beta": softmax(β) [edges][activations] or None, "gamma":
    per-node-normalised γ [edges] or None}``. Per cell: heatmaps of the last epoch's α (each edge's strongest
    candidate outlined), β and γ; below, each candidate's mean α over the edges per epoch (a collapse to
    skip_connect shows as its line rising) and each activation's mean β.
    """
    return save_png(architecture_weights_figure(epochs, candidates, activations, title), path)


def architecture_weights_figure(epochs: Sequence[Mapping[str, Any]], candidates: Sequence[str],
                                activations: Sequence[str], title: str | None = None) -> Figure:
    """The figure :func:`draw_architecture_weights` writes (Agg canvas, not saved)."""
    numbers, cells = _architecture_weights(epochs, list(candidates), list(activations))
    return _weights_figure(numbers, cells, list(candidates), list(activations), title)


def _architecture_weights(epochs: Sequence[Mapping[str, Any]], candidates: list[str], activations: list[str]
                          ) -> tuple[list[int], dict[str, _CellWeights]]:
    """Check the plain-data input against the names and stack it into arrays; bad input is one NasError line."""
    if isinstance(epochs, str | bytes | Mapping) or not isinstance(epochs, Sequence) or not epochs:
        raise NasError("architecture weights: no epochs to draw (expected a non-empty list of epochs)")
    if not candidates:
        raise NasError("architecture weights: no candidate names")
    numbers: list[int] = []
    rows: dict[str, dict[str, list[Any]]] = {cell: {"alpha": [], "beta": [], "gamma": []} for cell, _ in _CELLS}
    n_edges: int | None = None
    presence: dict[str, bool] | None = None
    for index, epoch in enumerate(epochs):
        where = f"architecture weights: epoch entry {index}"
        if not isinstance(epoch, Mapping):
            raise NasError(f"{where} is not a mapping with 'epoch', 'normal' and 'reduce'")
        number = epoch.get("epoch")
        if not isinstance(number, int | np.integer) or isinstance(number, bool):
            raise NasError(f"{where} has no integer 'epoch'")
        numbers.append(int(number))
        for cell, _ in _CELLS:
            weights = epoch.get(cell)
            at = f"architecture weights: epoch {number} {cell}"
            if not isinstance(weights, Mapping):
                raise NasError(f"{at}: missing (expected {{'alpha', 'beta', 'gamma'}})")
            alpha = _matrix(weights.get("alpha"), candidates, "candidate", f"{at} alpha", n_edges)
            n_edges = len(alpha)
            edge_names(n_edges)  # a count no cell has is an error
            rows[cell]["alpha"].append(alpha)
            if presence is None:  # the first cell read decides which of β, γ the search has
                presence = {key: weights.get(key) is not None for key in ("beta", "gamma")}
            for key, present in presence.items():
                value = weights.get(key)
                if (value is not None) != present:
                    raise NasError(f"{at}: {key} is {'present' if value is not None else 'missing'}, "
                                   f"unlike in epoch {numbers[0]} normal")
                if value is None:
                    continue
                if key == "gamma" and (isinstance(value, str | bytes | Mapping) or not isinstance(value, Sequence)
                                       or len(value) != n_edges):
                    size = f"{len(value)} weights" if isinstance(value, Sequence) else "no list"
                    raise NasError(f"{at} gamma has {size}, expected {n_edges} (one per edge)")
                if key == "beta" and not activations:
                    raise NasError(f"{at}: beta is given but there are no activation names")
                array = (_matrix(value, activations, "activation", f"{at} beta", n_edges) if key == "beta"
                         else _matrix([value], ["edge"] * n_edges, "edge", f"{at} gamma", 1)[0])
                rows[cell][key].append(array)
    cells = {cell: _CellWeights(np.stack(r["alpha"]), np.stack(r["beta"]) if r["beta"] else None,
                                np.stack(r["gamma"]) if r["gamma"] else None) for cell, r in rows.items()}
    return numbers, cells


def _matrix(value: Any, names: Sequence[str], what: str, at: str, n_rows: int | None) -> np.ndarray:
    """``value`` as a finite [rows, len(names)] array: one row per edge, one weight per name."""
    if isinstance(value, str | bytes | Mapping) or not isinstance(value, Sequence) or not value:
        raise NasError(f"{at} is not a non-empty list (one entry per edge)")
    if n_rows is not None and len(value) != n_rows:
        raise NasError(f"{at} has {len(value)} rows, expected {n_rows} (one per edge, as in the first epoch)")
    for r, row in enumerate(value):
        if isinstance(row, str | bytes | Mapping) or not isinstance(row, Sequence) or len(row) != len(names):
            size = f"{len(row)} weights" if isinstance(row, Sequence) else "no list"
            raise NasError(f"{at} row {r} has {size}, expected {len(names)} (one per {what})")
    try:
        array = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        raise NasError(f"{at} holds a value that is not a number") from None
    if array.ndim != 2:
        raise NasError(f"{at} holds a value that is not a number")
    if not np.all(np.isfinite(array)):
        raise NasError(f"{at} holds a weight that is not finite")
    return array


def _candidate_styles(candidates: list[str]) -> list[tuple[str, Any]]:
    """Colour by the operator (the part before ``@``), dash by the activation (after ``@``): ``op@act`` lines
    of one operator differ by dash, and one dash means one activation in every colour."""
    acts = list(dict.fromkeys(name.partition("@")[2] for name in candidates if "@" in name))
    return [(op_colour(name.partition("@")[0]),
             _DASHES[acts.index(name.partition("@")[2]) % len(_DASHES)] if "@" in name else "-")
            for name in candidates]


def _activation_styles(activations: list[str]) -> list[tuple[str, Any]]:
    return [(PALETTE[i % len(PALETTE)], _DASHES[i // len(PALETTE) % len(_DASHES)]) for i in range(len(activations))]


def _weights_figure(numbers: list[int], cells: dict[str, _CellWeights], candidates: list[str],
                    activations: list[str], title: str | None) -> Figure:
    from matplotlib import colormaps
    from matplotlib.colors import BoundaryNorm, ListedColormap
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    n_epochs, n_edges, n_cand = cells["normal"].alpha.shape
    has_beta, has_gamma = cells["normal"].beta is not None, cells["normal"].gamma is not None
    n_act = len(activations) if has_beta else 0
    units = n_cand + n_act + has_gamma
    column = float(np.clip(5.6 / units, 0.12, 0.4))  # inches per heatmap column: 40+ candidates stay legible
    row = 0.2
    tick = min(FONT - 0.5, column * 72 / 1.5)  # rotated names one per column, never touching
    small = FONT - 0.5

    figure = new_figure(1.0, 1.0)
    renderer = figure.canvas.get_renderer()  # type: ignore[attr-defined]

    def width(text: str, size: float) -> float:  # inches, as the renderer sets it
        artist = figure.text(0, 0, text, fontsize=size)
        extent = artist.get_window_extent(renderer).width / DPI
        artist.remove()
        return extent

    names = candidates + (activations if has_beta else [])
    label_h = max(width(n, tick) for n in names) + 0.1
    edge_w = max(width(n, small) for n in edge_names(n_edges))
    cell_w = max(4.6, edge_w + 0.35 + units * column + 0.12 * (has_beta + has_gamma) + 0.55)
    fig_w = 2 * cell_w + 0.3
    # one legend row for the candidates and one for the activations, side by side: the fewest rows that fit
    handle = 2.6 * small / 72 + 0.3
    entry_a = max(width(n, small) for n in candidates) + handle
    entry_b = max((width(n, small) for n in activations), default=0.0) + handle if has_beta else 0.0
    rows = next(r for r in range(1, len(candidates) + n_act + 1)
                if -(-n_cand // r) * entry_a + (-(-n_act // r) * entry_b if has_beta else 0.0) <= fig_w - 0.8)
    legend_h = rows * small * 1.55 / 72 + 0.35
    heat_h, evo_h = max(n_edges * row, 1.2), 2.0  # a tall enough colour bar for the smallest cells
    fig_h = 0.5 + 0.3 + heat_h + label_h + 0.3 + evo_h + 0.5 + legend_h + 0.1
    figure.set_size_inches(fig_w, fig_h)
    figure.set_layout_engine("constrained", w_pad=0.04, h_pad=0.04, wspace=0.02, hspace=0.02)
    last = numbers[-1]
    epochs_text = f"{n_epochs} epoch{'s' if n_epochs != 1 else ''}"
    figure.suptitle(f"{title or 'architecture weights'} · {epochs_text} (heatmaps: epoch {last})", fontsize=FONT + 3)

    grid = figure.add_gridspec(3, 2, height_ratios=[heat_h + label_h, evo_h, legend_h])
    # ten shades on a √ scale (a uniform 1/40 is not lost in the dark); few colours also keep the palette PNG's
    # 128 colours free for the lines
    bounds = np.linspace(0.0, 1.0, _SHADES + 1) ** 2
    cmap = ListedColormap(colormaps[_WEIGHT_CMAP](np.linspace(0.0, 1.0, _SHADES)))
    norm = BoundaryNorm(bounds, _SHADES)
    annotate = column * DPI >= 22 and row * DPI >= 11
    cand_styles, act_styles = _candidate_styles(candidates), _activation_styles(activations)
    marker = "o" if n_epochs == 1 else None  # one epoch: a point per line
    for c, (cell, cell_name) in enumerate(_CELLS):
        weights = cells[cell]
        ratios = [n_cand] + [n_act] * has_beta + [1] * has_gamma + [0.12 * units / (cell_w - edge_w - 0.9)]
        heat = grid[0, c].subgridspec(1, len(ratios), width_ratios=ratios)
        maps: list[tuple[np.ndarray, list[str], str]] = [(weights.alpha[-1], candidates, "softmax(α)")]
        if weights.beta is not None:
            maps.append((weights.beta[-1], activations, "softmax(β)"))
        if weights.gamma is not None:
            maps.append((weights.gamma[-1][:, None], ["γ"], "γ"))
        image = None
        for k, (matrix, labels, what) in enumerate(maps):
            ax = figure.add_subplot(heat[0, k])
            image = ax.imshow(matrix, cmap=cmap, norm=norm, aspect="auto", interpolation="nearest")
            ax.set_title(f"{cell_name} · {what}" if k == 0 else what, fontsize=FONT + 1)
            ax.set_xticks(range(len(labels)), labels, rotation=90 if len(labels) > 1 else 0, fontsize=tick)
            ax.set_yticks(range(n_edges), edge_names(n_edges) if k == 0 else [""] * n_edges, fontsize=small)
            ax.tick_params(length=2, pad=1.5)
            if len(labels) > 1:  # the strongest candidate (activation) of each edge, where one is
                for e, weights_row in enumerate(matrix):
                    if np.count_nonzero(weights_row == weights_row.max()) == 1:
                        ax.add_patch(_outline(int(np.argmax(weights_row)), e))
            if annotate:
                for (e, j), value in np.ndenumerate(matrix):
                    ax.text(j, e, f"{value:.2f}".removeprefix("0"), ha="center", va="center", fontsize=FONT - 1.5,
                            color="white" if norm(value) < 0.6 * _SHADES else "black",
                            in_layout=False)  # inside its cell: no need to measure it for the layout
        bar = figure.colorbar(image, cax=figure.add_subplot(heat[0, len(maps)]))
        bar.set_ticks([0.0, 0.04, 0.16, 0.36, 0.64, 1.0])
        bar.ax.tick_params(labelsize=small, length=2)
        bar.set_label("weight (√ scale)", fontsize=small)

        evo = grid[1, c].subgridspec(1, 1 + has_beta, width_ratios=[3, 2] if has_beta else [1])
        series = [(weights.alpha.mean(axis=1), cand_styles, f"{cell_name} · mean α over edges")]
        if weights.beta is not None:
            series.append((weights.beta.mean(axis=1), act_styles, "mean β over edges"))
        for k, (means, styles, what) in enumerate(series):
            ax = figure.add_subplot(evo[0, k])
            for j, (colour, dash) in enumerate(styles):
                ax.plot(numbers, means[:, j], color=colour, linestyle=dash, lw=1.0, marker=marker, ms=3)
            ax.set_title(what, fontsize=FONT + 1)
            ax.set_xlabel("epoch", fontsize=small)
            ax.set_ylim(0.0, float(means.max()) * 1.12 or 1.0)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            if n_epochs == 1:  # else an axis of ±0.05 around the one epoch
                ax.set_xlim(numbers[0] - 1, numbers[0] + 1)
                ax.set_xticks(numbers)
            ax.tick_params(labelsize=small, length=2)
            ax.grid(alpha=0.3, lw=0.5)

    legends = grid[2, :].subgridspec(1, 1 + has_beta, width_ratios=[
        -(-n_cand // rows) * entry_a] + ([-(-n_act // rows) * entry_b] if has_beta else []))
    for k, (labels, styles, what) in enumerate([(candidates, cand_styles, "candidate (α)"),
                                                (activations, act_styles, "activation (β)")][: 1 + has_beta]):
        ax = figure.add_subplot(legends[0, k])
        ax.set_axis_off()
        handles = [Line2D([], [], color=colour, linestyle=dash, lw=1.2, marker=marker, ms=3)
                   for colour, dash in styles]
        ax.legend(handles, labels, loc="upper center", ncols=-(-len(labels) // rows), fontsize=small,
                  title=what, title_fontsize=small, frameon=False, handlelength=2.6, columnspacing=1.0,
                  borderaxespad=0.0)
    return figure


def _outline(column: int, row: int) -> Any:
    from matplotlib.patches import Rectangle

    return Rectangle((column - 0.5, row - 0.5), 1.0, 1.0, fill=False, ec=_MARK, lw=1.2)
