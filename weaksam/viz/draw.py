"""Pure drawing helpers for pictures of data, proposals, detections and masks.

Every function takes an ``HxWx3`` uint8 RGB image (an ``HxW`` grayscale image is expanded to
three channels) and returns a new uint8 image; inputs are never modified. Boxes are ``Nx4`` XYXY
in the project's continuous convention (a box ``[x1, y1, x2, y2]`` covers pixel columns
``x1 .. x2 - 1``), points are ``Nx2`` ``(x, y)`` with x = column. Text uses PIL's default font.
"""

from __future__ import annotations

import colorsys
import functools
import io
from collections.abc import Sequence

import cv2
import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFont

from weaksam import storage

Color = tuple[int, int, int]
UInt8Image = npt.NDArray[np.uint8]

_PALETTE: tuple[Color, ...] = (
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
    (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212),
    (0, 128, 128), (220, 190, 255), (170, 110, 40), (255, 250, 200), (128, 0, 0),
    (170, 255, 195), (128, 128, 0), (255, 215, 180), (0, 0, 128), (128, 128, 128),
)  # fmt: skip
FONT_SIZE = 11


def class_color(i: int) -> Color:
    """A fixed RGB colour for class (or instance) ``i``: 20 distinct, then golden-ratio hues."""
    if 0 <= i < len(_PALETTE):
        return _PALETTE[i]
    hue = (i * 0.6180339887) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.75, 0.95)
    return round(r * 255), round(g * 255), round(b * 255)


@functools.lru_cache(maxsize=4)
def _font(size: int = FONT_SIZE) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _rgb(image: npt.ArrayLike) -> UInt8Image:
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ValueError(f"image must be HxW, HxWx3 or HxWx4, got shape {arr.shape}")
    if arr.dtype != np.uint8:
        raise ValueError(f"image must be uint8, got {arr.dtype}")
    return np.ascontiguousarray(arr[..., :3])


def _colors(colors: Sequence[Color] | None, n: int) -> list[Color]:
    if colors is None:
        return [class_color(i) for i in range(n)]
    if len(colors) != n:
        raise ValueError(f"got {len(colors)} colors for {n} items")
    return [tuple(int(c) for c in col) for col in colors]  # type: ignore[misc]


def _text_color(bg: Color) -> Color:
    luma = 0.299 * bg[0] + 0.587 * bg[1] + 0.114 * bg[2]
    return (0, 0, 0) if luma > 140 else (255, 255, 255)


def draw_boxes(
    image: npt.ArrayLike,
    boxes: npt.ArrayLike,
    labels: Sequence[str] | None = None,
    scores: npt.ArrayLike | None = None,
    colors: Sequence[Color] | None = None,
    width: int = 2,
) -> UInt8Image:
    """Draw ``Nx4`` XYXY boxes, with optional text ``"label score"`` on a filled tag.

    The outline lies inside the box: its outer edge is on pixels ``x1`` and ``x2 - 1``.
    Colours default to :func:`class_color` of the box index.
    """
    img = Image.fromarray(_rgb(image))
    b = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    n = b.shape[0]
    sc = None if scores is None else np.asarray(scores, dtype=np.float32).reshape(-1)
    if labels is not None and len(labels) != n:
        raise ValueError(f"got {len(labels)} labels for {n} boxes")
    if sc is not None and sc.shape[0] != n:
        raise ValueError(f"got {sc.shape[0]} scores for {n} boxes")
    cols = _colors(colors, n)
    draw = ImageDraw.Draw(img)
    font = _font()
    for i in range(n):
        x1, y1, x2, y2 = (round(float(v)) for v in b[i])
        if x2 <= x1 or y2 <= y1:
            continue
        draw.rectangle((x1, y1, x2 - 1, y2 - 1), outline=cols[i], width=width)
        parts = [labels[i]] if labels is not None else []
        if sc is not None:
            parts.append(f"{sc[i]:.2f}")
        if parts:
            text = " ".join(parts)
            left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
            tw, th = right - left + 4, bottom - top + 3
            ty = y1 - th if y1 - th >= 0 else y1
            draw.rectangle((x1, ty, x1 + tw - 1, ty + th - 1), fill=cols[i])
            draw.text((x1 + 2 - left, ty + 1 - top), text, fill=_text_color(cols[i]), font=font)
    return np.asarray(img, dtype=np.uint8).copy()


def overlay_masks(
    image: npt.ArrayLike,
    masks: npt.ArrayLike,
    alpha: float = 0.45,
    colors: Sequence[Color] | None = None,
) -> UInt8Image:
    """Blend ``NxHxW`` boolean masks over the image and outline each one in its colour.

    Pixels outside every mask are unchanged; the outline is the mask's inner boundary.
    Later masks are drawn over earlier ones.
    """
    out = _rgb(image).astype(np.float32)
    m = np.asarray(masks).astype(bool)
    if m.ndim == 2:
        m = m[None]
    if m.ndim != 3 or m.shape[1:] != out.shape[:2]:
        raise ValueError(f"masks must be NxHxW matching the image {out.shape[:2]}, got {m.shape}")
    cols = _colors(colors, m.shape[0])
    kernel = np.ones((3, 3), dtype=np.uint8)
    for mask, col in zip(m, cols, strict=True):
        if not mask.any():
            continue
        c = np.asarray(col, dtype=np.float32)
        out[mask] = out[mask] * (1.0 - alpha) + c * alpha
        inner = cv2.erode(
            mask.astype(np.uint8), kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0
        )
        out[mask & ~inner.astype(bool)] = c
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def draw_points(
    image: npt.ArrayLike,
    points: npt.ArrayLike,
    labels: npt.ArrayLike | None = None,
    colors: Sequence[Color] | None = None,
    radius: int = 3,
) -> UInt8Image:
    """Draw ``Nx2`` ``(x, y)`` points as filled discs with a white rim.

    ``labels`` follow SAM's prompt convention (1 = positive, green; 0 = negative, red) and
    are used when ``colors`` is None; without both, points are yellow.
    """
    img = Image.fromarray(_rgb(image))
    p = np.asarray(points, dtype=np.float32).reshape(-1, 2)
    n = p.shape[0]
    if colors is not None:
        cols = _colors(colors, n)
    elif labels is not None:
        lab = np.asarray(labels).reshape(-1)
        if lab.shape[0] != n:
            raise ValueError(f"got {lab.shape[0]} labels for {n} points")
        cols = [(40, 220, 60) if int(v) > 0 else (235, 40, 40) for v in lab]
    else:
        cols = [(255, 230, 0)] * n
    draw = ImageDraw.Draw(img)
    for (x, y), col in zip(p, cols, strict=True):
        # Continuous (x, y) is a pixel centre at (col + 0.5, row + 0.5).
        cx, cy = float(x) - 0.5, float(y) - 0.5
        box = (cx - radius, cy - radius, cx + radius, cy + radius)
        draw.ellipse(box, fill=col, outline=(255, 255, 255), width=1)
    return np.asarray(img, dtype=np.uint8).copy()


def contact_sheet(
    images: Sequence[npt.ArrayLike],
    ncols: int,
    pad: int = 4,
    titles: Sequence[str] | None = None,
    background: Color = (32, 32, 32),
) -> UInt8Image:
    """Tile images in a grid of ``ncols`` columns, each cell the size of the largest image.

    The sheet is ``rows * (cell_h + title_h) + (rows + 1) * pad`` high and
    ``ncols * cell_w + (ncols + 1) * pad`` wide, where ``title_h`` is 0 without titles and
    ``FONT_SIZE + 5`` with them. Images are placed at their cell's top-left corner.
    """
    if ncols < 1:
        raise ValueError(f"ncols must be >= 1, got {ncols}")
    if not images:
        raise ValueError("contact_sheet needs at least one image")
    if titles is not None and len(titles) != len(images):
        raise ValueError(f"got {len(titles)} titles for {len(images)} images")
    tiles = [_rgb(im) for im in images]
    cell_h = max(t.shape[0] for t in tiles)
    cell_w = max(t.shape[1] for t in tiles)
    title_h = 0 if titles is None else FONT_SIZE + 5
    ncols = min(ncols, len(tiles))
    rows = -(-len(tiles) // ncols)
    sheet_h = rows * (cell_h + title_h) + (rows + 1) * pad
    sheet_w = ncols * cell_w + (ncols + 1) * pad
    sheet = np.empty((sheet_h, sheet_w, 3), dtype=np.uint8)
    sheet[:] = background
    for k, tile in enumerate(tiles):
        r, c = divmod(k, ncols)
        y = pad + r * (cell_h + title_h + pad) + title_h
        x = pad + c * (cell_w + pad)
        sheet[y : y + tile.shape[0], x : x + tile.shape[1]] = tile
    if titles is not None:
        img = Image.fromarray(sheet)
        draw = ImageDraw.Draw(img)
        for k, title in enumerate(titles):
            r, c = divmod(k, ncols)
            y = pad + r * (cell_h + title_h + pad)
            x = pad + c * (cell_w + pad)
            draw.text((x + 1, y + 1), title, fill=(235, 235, 235), font=_font())
        sheet = np.asarray(img, dtype=np.uint8).copy()
    return sheet


def fit_image(image: npt.ArrayLike, max_side: int) -> tuple[UInt8Image, float]:
    """Shrink ``image`` so its longer side is at most ``max_side`` (area interpolation).

    Returns the RGB image and the scale applied to coordinates (``1.0`` when it already
    fits, never an enlargement): multiply XYXY boxes and ``(x, y)`` points by it.
    """
    if max_side < 1:
        raise ValueError(f"max_side must be >= 1, got {max_side}")
    img = _rgb(image)
    h, w = img.shape[:2]
    scale = min(1.0, max_side / max(h, w, 1))
    if scale == 1.0:
        return img.copy(), 1.0
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    out = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
    return np.asarray(out, dtype=np.uint8), scale


def fit_masks(masks: npt.ArrayLike, height: int, width: int) -> npt.NDArray[np.bool_]:
    """Resize ``NxHxW`` boolean masks to ``height x width`` (nearest neighbour)."""
    m = np.asarray(masks).astype(np.uint8)
    if m.ndim != 3:
        raise ValueError(f"masks must be NxHxW, got shape {m.shape}")
    if m.shape[1:] == (height, width):
        return m.astype(bool)
    out = np.zeros((m.shape[0], height, width), dtype=bool)
    for i, mask in enumerate(m):
        out[i] = cv2.resize(mask, (width, height), interpolation=cv2.INTER_NEAREST) > 0
    return out


def png_bytes(image: npt.ArrayLike) -> bytes:
    """``image`` (``HxW`` or ``HxWx3`` uint8) encoded as PNG (what :func:`save_png` writes)."""
    buf = io.BytesIO()
    Image.fromarray(_rgb(image)).save(buf, format="PNG")
    return buf.getvalue()


def save_png(path: str, image: npt.ArrayLike) -> str:
    """Write ``image`` (``HxW`` or ``HxWx3`` uint8) as PNG at ``path`` (a local path, creating
    folders, or a ``file://`` / ``s3://`` location; written atomically through
    :mod:`weaksam.storage`); returns ``path``."""
    storage.write_bytes(path, png_bytes(image))
    return path
