"""Drawing helpers: pixels change where expected and nowhere else."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from weaksam.viz.draw import (
    FONT_SIZE,
    class_color,
    contact_sheet,
    draw_boxes,
    draw_points,
    overlay_masks,
    save_png,
)


def _gray(h: int = 40, w: int = 50, value: int = 100) -> np.ndarray:
    return np.full((h, w, 3), value, dtype=np.uint8)


def test_class_color_is_fixed_and_distinct() -> None:
    colors = [class_color(i) for i in range(40)]
    assert colors[0] == (230, 25, 75)
    # past the palette: golden-ratio hues, hue(20) = 20 * 0.6180... mod 1 = 0.3607 at s 0.75,
    # v 0.95 (sector 2: r = v(1 - s), g = v, b = v(1 - s(1 - 0.164)))
    assert colors[20] == (61, 242, 90)
    assert len(set(colors[:20])) == 20
    assert all(len(c) == 3 and all(0 <= v <= 255 and isinstance(v, int) for v in c) for c in colors)


def test_draw_boxes_outline_inside_the_box() -> None:
    img = _gray()
    out = draw_boxes(img, np.array([[10, 5, 20, 15]], np.float32), colors=[(255, 0, 0)], width=1)
    red = np.array([255, 0, 0], np.uint8)
    # Continuous box [10, 20) x [5, 15): the outline is on columns 10 and 19, rows 5 and 14.
    for y, x in [(5, 10), (5, 19), (14, 10), (14, 19), (9, 10), (9, 19), (5, 15), (14, 15)]:
        assert (out[y, x] == red).all(), (y, x)
    for y, x in [(4, 10), (5, 20), (15, 15), (9, 15), (0, 0)]:
        assert (out[y, x] == 100).all(), (y, x)
    changed = (out != img).any(axis=2)
    assert changed.sum() == 2 * 10 + 2 * 8
    assert (img == 100).all()  # input untouched


def test_draw_boxes_label_tag_and_validation() -> None:
    img = _gray(60, 80)
    out = draw_boxes(img, [[20, 30, 60, 50]], labels=["star"], scores=[0.9])
    above = (out[:30] != 100).any(axis=2)
    assert above.any()  # the tag sits above the box when there is room
    with pytest.raises(ValueError):
        draw_boxes(img, [[0, 0, 5, 5]], labels=["a", "b"])
    with pytest.raises(ValueError):
        draw_boxes(img, [[0, 0, 5, 5]], scores=[0.1, 0.2])
    assert (draw_boxes(img, np.zeros((0, 4))) == img).all()


def test_overlay_masks_blends_inside_only() -> None:
    img = _gray(20, 20)
    mask = np.zeros((1, 20, 20), bool)
    mask[0, 5:15, 5:15] = True
    out = overlay_masks(img, mask, alpha=0.5, colors=[(200, 0, 50)])
    assert (out[~mask[0]] == 100).all()
    assert tuple(out[10, 10]) == (150, 50, 75)  # interior: 0.5 * 100 + 0.5 * colour
    assert tuple(out[5, 7]) == (200, 0, 50)  # boundary: the colour itself
    assert tuple(out[14, 14]) == (200, 0, 50)
    with pytest.raises(ValueError):
        overlay_masks(img, np.zeros((1, 10, 10), bool))


def test_draw_points_labels_and_colours() -> None:
    img = _gray(30, 30)
    out = draw_points(img, [[10.5, 10.5], [20.5, 20.5]], labels=[1, 0], radius=3)
    assert tuple(out[10, 10]) == (40, 220, 60)
    assert tuple(out[20, 20]) == (235, 40, 40)
    assert (out[0, 0] == 100).all() and (out[15, 28] == 100).all()
    plain = draw_points(img, [[5, 5]], colors=[(1, 2, 3)])
    assert tuple(plain[4, 4]) == (1, 2, 3)


def test_contact_sheet_layout() -> None:
    a = np.full((10, 12, 3), 200, np.uint8)
    b = np.full((8, 6), 50, np.uint8)  # grayscale is expanded
    sheet = contact_sheet([a, b, a], ncols=2, pad=3)
    assert sheet.shape == (2 * 10 + 3 * 3, 2 * 12 + 3 * 3, 3)
    assert (sheet[3:13, 3:15] == 200).all()
    assert (sheet[3:11, 18:24] == 50).all()
    assert (sheet[16:26, 3:15] == 200).all()
    assert tuple(sheet[0, 0]) == (32, 32, 32)
    titled = contact_sheet([a, b, a], ncols=2, pad=3, titles=["a", "b", "c"])
    assert titled.shape == (2 * (10 + FONT_SIZE + 5) + 3 * 3, 2 * 12 + 3 * 3, 3)
    with pytest.raises(ValueError):
        contact_sheet([], ncols=2)


def test_save_png_round_trip(tmp_path: Path) -> None:
    img = np.random.default_rng(0).integers(0, 256, (7, 9, 3), dtype=np.uint8)
    path = save_png(str(tmp_path / "sub" / "x.png"), img)
    with Image.open(path) as pil:
        assert pil.format == "PNG"
        assert (np.asarray(pil) == img).all()
