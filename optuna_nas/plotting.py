"""Figures as PNG files, shared by the cell drawings, the grown-network drawings, the curves and the report.

Figures are built on matplotlib's Agg canvas directly (no pyplot, no GUI, nothing left open), and written
as 128-colour palette PNGs (tens of KB) by Pillow without metadata, so the same figure gives the same bytes.
Operators keep one colour in every figure: the palette holds their colours exactly.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .errors import NasError
from .ops import DARTS_OPERATORS

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DPI = 100
FONT = 7.0
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#7f7f7f")


def op_colour(op: str) -> str:
    """A fixed colour per operator (the DARTS operators in their order, any other by a hash of its name)."""
    index = DARTS_OPERATORS.index(op) if op in DARTS_OPERATORS else zlib.crc32(op.encode())
    return PALETTE[index % len(PALETTE)]


def new_figure(width: float, height: float) -> Figure:
    """A figure on its own Agg canvas (inches), not registered with pyplot."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(figure)
    return figure


def save_png(figure: Figure, path: str | Path) -> Path:
    """Render, reduce to a 128-colour palette (a third of the bytes of antialiased RGBA) and write a PNG."""
    from PIL import Image

    path = Path(path)
    try:
        figure.canvas.draw()
        rgb = np.asarray(figure.canvas.buffer_rgba())[..., :3]  # type: ignore[attr-defined]
        image = Image.fromarray(_palette_indices(rgb, palette := _palette(rgb)))
        image.putpalette(palette.astype(np.uint8).ravel().tolist())
        image.save(path, format="PNG", optimize=True)
    except OSError as exc:
        raise NasError(f"cannot write the drawing to {path}: {exc.strerror or exc}") from None
    finally:
        figure.clear()
    return path


def _palette(rgb: np.ndarray) -> np.ndarray:
    """[128, 3]: a median cut of the image (no dithering, any Pillow) and, exactly, the operator colours, white
    and black: thin lines are too few pixels for the median cut to keep their colour."""
    from PIL import Image

    keys = np.array([[int(c[i : i + 2], 16) for i in (1, 3, 5)] for c in (*PALETTE, "#ffffff", "#000000")])
    cut = Image.fromarray(np.ascontiguousarray(rgb)).quantize(colors=128 - len(keys), method=0, dither=0)
    cut_colours = np.asarray(cut.getpalette(), dtype=np.int64).reshape(-1, 3)[: 128 - len(keys)]  # type: ignore[arg-type]
    return np.concatenate([cut_colours, keys])


def _palette_indices(rgb: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """Each pixel's nearest palette entry (exact: Pillow's own mapping rounds, and turns white into grey)."""
    packed = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    colours, inverse = np.unique(packed.ravel(), return_inverse=True)
    unpacked = np.stack([colours >> 16, (colours >> 8) & 255, colours & 255], axis=1)
    nearest = np.argmin(((unpacked[:, None, :] - palette[None, :, :]) ** 2).sum(axis=2), axis=1)
    return nearest[inverse].reshape(rgb.shape[:2]).astype(np.uint8)


def draw_curve(series: Mapping[str, Sequence[float]], path: str | Path, xlabel: str = "epoch", ylabel: str = "",
               title: str | None = None) -> Path:
    """Write a line chart of the named ``series`` (x = 1 .. len of each) to the PNG ``path``.

    A trial artifact for values a multi-objective trial cannot ``report`` (e.g. a grown network's validation
    error per epoch). One series is named by the y label (unless ``ylabel`` is given), several by a legend;
    short series get a marker per point, so a one-point series still shows. Non-finite values leave gaps.
    """
    from matplotlib.ticker import MaxNLocator

    if not isinstance(series, Mapping) or not series:
        raise NasError("a curve needs at least one named series of values")
    curves: dict[str, np.ndarray] = {}
    for name, values in series.items():
        if isinstance(values, str | bytes) or not isinstance(values, Sequence | np.ndarray) or len(values) == 0:
            raise NasError(f"curve series {name!r} has no values")
        try:
            curves[str(name)] = np.asarray(values, dtype=float).reshape(len(values))
        except (TypeError, ValueError):
            raise NasError(f"curve series {name!r} holds a value that is not a number") from None
    longest = max(len(values) for values in curves.values())
    figure = new_figure(6.0 if len(curves) == 1 else 7.5, 3.2)
    figure.set_layout_engine("constrained", w_pad=0.06, h_pad=0.06)
    ax = figure.add_subplot()
    for k, (name, values) in enumerate(curves.items()):
        ax.plot(np.arange(1, len(values) + 1), values, color=PALETTE[k % len(PALETTE)], lw=1.3, label=name,
                marker="o" if len(values) <= 30 else None, ms=5.0 if len(values) == 1 else 3.5)
    if len(curves) > 1:  # beside the plot: never on a line
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=FONT + 1, frameon=False, borderaxespad=0.0)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if longest == 1:  # else an axis of ±0.05 around the one point
        ax.set_xlim(0.0, 2.0)
        ax.set_xticks([1])
    ax.set_xlabel(xlabel, fontsize=FONT + 1)
    ax.set_ylabel(ylabel or (next(iter(curves)) if len(curves) == 1 else ""), fontsize=FONT + 1)
    ax.tick_params(labelsize=FONT + 1)
    ax.grid(alpha=0.3, lw=0.5)
    if title:
        ax.set_title(title, fontsize=FONT + 2)
    return save_png(figure, path)


def text_boxes(figure: Figure) -> list[tuple[str, tuple[float, float, float, float]]]:
    """Render ``figure`` and return each drawn, non-empty text with its pixel box ``(x0, y0, x1, y1)``: a way to
    check that no label overlaps another. Tick labels count only for ticks inside their axis's view."""
    from matplotlib.text import Text

    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()  # type: ignore[attr-defined]
    texts: list[Text] = []
    ticks: set[int] = set()
    for axes in figure.get_axes():
        for axis in (axes.xaxis, axes.yaxis):
            low, high = sorted(axis.get_view_interval())
            slack = 1e-9 * max(1.0, high - low)
            for tick in (*axis.get_major_ticks(), *axis.get_minor_ticks()):
                ticks.update((id(tick.label1), id(tick.label2)))
                if low - slack <= tick.get_loc() <= high + slack and tick.get_visible():
                    texts.extend(label for label in (tick.label1, tick.label2) if label.get_visible())
    texts.extend(t for t in figure.findobj(Text) if id(t) not in ticks and t.get_visible())  # type: ignore[misc]
    out = []
    for text in texts:
        if text.get_text().strip():
            box = text.get_window_extent(renderer)
            out.append((text.get_text(), (box.x0, box.y0, box.x1, box.y1)))
    return out
