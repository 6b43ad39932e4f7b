"""The shared figure helpers: curves, exact operator colours in the palette PNG, text-overlap measurement."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
from PIL import Image

from optuna_nas.errors import NasError
from optuna_nas.plotting import PALETTE, draw_curve, new_figure, save_png, text_boxes

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
GROWTH = {"validation error %": [61.0, 48.5, 40.2, 37.9, 36.4], "training loss": [1.9, 1.4, 1.1, 0.95, 0.9]}


def _is_small_png(path: Path) -> bool:
    data = path.read_bytes()
    return data.startswith(PNG_SIGNATURE) and 1_000 < len(data) < 100_000


def test_a_curve_draws_to_a_small_deterministic_png(tmp_path: Path) -> None:
    first = draw_curve(GROWTH, tmp_path / "curve.png", title="trial 3 · growth")
    assert first == tmp_path / "curve.png" and _is_small_png(first)
    second = draw_curve(GROWTH, str(tmp_path / "again.png"), title="trial 3 · growth")
    assert second.read_bytes() == first.read_bytes()
    assert plt.get_fignums() == []  # nothing left open in pyplot


def test_a_one_point_series_draws(tmp_path: Path) -> None:
    path = draw_curve({"validation error %": [42.0]}, tmp_path / "curve.png", ylabel="%")
    assert _is_small_png(path)
    marked = np.asarray(Image.open(path).convert("RGB")) == np.array([0x1F, 0x77, 0xB4])  # the first series' colour
    assert marked.all(axis=2).sum() > 10  # a marker, not a zero-length line


@pytest.mark.parametrize(("series", "message"), [
    ({}, "at least one named series"),
    ({"validation error %": []}, "'validation error %' has no values"),
    ({"loss": [1.0, "x"]}, "'loss' holds a value that is not a number"),
])
def test_an_empty_or_bad_series_is_one_clear_error(tmp_path: Path, series: dict, message: str) -> None:
    with pytest.raises(NasError, match=message) as info:
        draw_curve(series, tmp_path / "curve.png")
    assert "\n" not in str(info.value) and not (tmp_path / "curve.png").exists()


def test_a_curve_to_an_unwritable_path_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "missing" / "curve.png"
    with pytest.raises(NasError, match="cannot write the drawing to"):
        draw_curve(GROWTH, path)


def test_thin_lines_keep_their_operator_colour_exactly(tmp_path: Path) -> None:
    # a gradient spends the 128 colours of a plain median cut; the operator colours must survive it
    figure = new_figure(4.0, 3.0)
    ax = figure.add_subplot()
    ax.imshow(np.linspace(0.0, 1.0, 64 * 64).reshape(64, 64), cmap="viridis", extent=(0, 10, 0, 10))
    for k, colour in enumerate(PALETTE):
        ax.plot([0, 10], [k + 0.5, k + 0.5], color=colour, lw=1.0)
    path = save_png(figure, tmp_path / "lines.png")
    image = Image.open(path)
    assert image.mode == "P" and len(image.getpalette() or []) <= 3 * 128
    pixels = {tuple(p) for p in np.asarray(image.convert("RGB")).reshape(-1, 3).tolist()}
    assert {tuple(int(c[i : i + 2], 16) for i in (1, 3, 5)) for c in PALETTE} <= pixels
    assert (255, 255, 255) in pixels  # the background stays white


def test_text_boxes_find_overlapping_labels() -> None:
    figure = new_figure(3.0, 2.0)
    ax = figure.add_subplot()
    ax.text(0.5, 0.5, "sep_conv_3x3")
    ax.text(0.52, 0.5, "skip_connect")  # on top of the first
    ax.text(0.05, 0.05, "elsewhere")
    boxes = dict(text_boxes(figure))
    assert {"sep_conv_3x3", "skip_connect", "elsewhere"} <= set(boxes)

    def intersect(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
        return min(a[2], b[2]) > max(a[0], b[0]) and min(a[3], b[3]) > max(a[1], b[1])

    assert intersect(boxes["sep_conv_3x3"], boxes["skip_connect"])
    assert not intersect(boxes["sep_conv_3x3"], boxes["elsewhere"])
    ticks = [text for text in boxes if text.replace(".", "").replace("−", "").isdigit()]
    assert ticks and all(0.0 <= float(t.replace("−", "-")) <= 1.0 for t in ticks)  # only ticks inside the view
    figure.clear()
