"""Figures as PNG files, shared by the cell drawings, the grown-network drawings and the report.

Figures are built on matplotlib's Agg canvas directly (no pyplot, no GUI, nothing left open), and written
as 128-colour palette PNGs (tens of KB) by Pillow without metadata, so the same figure gives the same bytes.
Operators keep one colour in every figure.
"""

from __future__ import annotations

import zlib
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
        image = Image.fromarray(np.asarray(figure.canvas.buffer_rgba())).convert("RGB")  # type: ignore[attr-defined]
        image = image.quantize(colors=128, method=0, dither=0)  # median cut, no dithering (any Pillow)
        image.save(path, format="PNG", optimize=True)
    except OSError as exc:
        raise NasError(f"cannot write the drawing to {path}: {exc.strerror or exc}") from None
    finally:
        figure.clear()
    return path
