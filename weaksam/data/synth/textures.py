"""Colours, fills and cluttered backgrounds for the synthetic sets.

Every function takes the ``np.random.Generator`` to draw from, so an image is a pure function of
its seed. Images here are float32 ``HxWx3`` RGB in ``[0, 255]`` until the scene converts them to
``uint8``. Object fills are drawn from one distribution whatever the object is (benchmark
class, distractor or blob), so colour and texture carry no class information.
"""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt

FloatImage = npt.NDArray[np.float32]

FILL_KINDS = ("solid", "gradient", "stripes", "checker", "noise", "spots")


def random_color(rng: np.random.Generator) -> npt.NDArray[np.float32]:
    """One RGB colour, shape ``3``, float32 in ``[0, 255]`` (uniform hue, broad S and V)."""
    hsv = np.array(
        [[[rng.uniform(0, 180), rng.uniform(40, 255), rng.uniform(50, 255)]]], dtype=np.float32
    ).astype(np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)


def value_noise(rng: np.random.Generator, height: int, width: int, cell: float) -> FloatImage:
    """Smooth value noise in ``[0, 1]``, shape ``HxW``; ``cell`` is the feature size in pixels."""
    cell = max(float(cell), 2.0)
    gh, gw = int(height / cell) + 3, int(width / cell) + 3
    grid = rng.random((gh, gw), dtype=np.float32)
    big = cv2.resize(grid, (int(gw * cell), int(gh * cell)), interpolation=cv2.INTER_CUBIC)
    oy = int(rng.integers(0, max(big.shape[0] - height - int(cell), 0) + 1))
    ox = int(rng.integers(0, max(big.shape[1] - width - int(cell), 0) + 1))
    out = big[oy : oy + height, ox : ox + width]
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def fractal_noise(rng: np.random.Generator, height: int, width: int, cell: float) -> FloatImage:
    """Three octaves of :func:`value_noise`, normalised to ``[0, 1]``. Shape ``HxW``."""
    acc = np.zeros((height, width), dtype=np.float32)
    for octave in range(3):
        acc += value_noise(rng, height, width, cell / 2**octave) / 2**octave
    lo, hi = float(acc.min()), float(acc.max())
    return (acc - lo) / max(hi - lo, 1e-6)


def _coords(height: int, width: int) -> tuple[FloatImage, FloatImage]:
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    return xs, ys


def ramp(rng: np.random.Generator, height: int, width: int) -> FloatImage:
    """A linear ramp in ``[0, 1]`` along a random direction. Shape ``HxW``."""
    xs, ys = _coords(height, width)
    theta = rng.uniform(0, 2 * np.pi)
    t = xs * np.cos(theta) + ys * np.sin(theta)
    lo, hi = float(t.min()), float(t.max())
    return ((t - lo) / max(hi - lo, 1e-6)).astype(np.float32)


def stripes(
    rng: np.random.Generator, height: int, width: int, period: float, soft: bool = False
) -> FloatImage:
    """Stripes of ``period`` pixels at a random angle, values in ``[0, 1]``. Shape ``HxW``."""
    xs, ys = _coords(height, width)
    theta = rng.uniform(0, np.pi)
    t = (xs * np.cos(theta) + ys * np.sin(theta)) / period + rng.uniform(0, 1)
    if soft:
        return (0.5 + 0.5 * np.sin(2 * np.pi * t)).astype(np.float32)
    duty = rng.uniform(0.35, 0.65)
    return (np.mod(t, 1.0) < duty).astype(np.float32)


def checker(rng: np.random.Generator, height: int, width: int, cell: float) -> FloatImage:
    """A checkerboard of ``cell``-pixel squares at a random angle, values 0/1. Shape ``HxW``."""
    xs, ys = _coords(height, width)
    theta = rng.uniform(0, np.pi / 2)
    c, s = np.cos(theta), np.sin(theta)
    u = (xs * c + ys * s) / cell + rng.uniform(0, 1)
    v = (-xs * s + ys * c) / cell + rng.uniform(0, 1)
    return ((np.floor(u) + np.floor(v)) % 2).astype(np.float32)


def spots(rng: np.random.Generator, height: int, width: int) -> FloatImage:
    """Random round spots (polka dots), values 0/1. Shape ``HxW``."""
    out = np.zeros((height, width), dtype=np.float32)
    radius = rng.uniform(1.5, 4.0)
    count = int(height * width / (radius * radius * rng.uniform(12, 30))) + 1
    for _ in range(count):
        center = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        cv2.circle(out, center, round(radius), 1.0, -1)
    return out


def _mix(a: npt.NDArray[np.float32], b: npt.NDArray[np.float32], t: FloatImage) -> FloatImage:
    """Per-pixel blend of colours ``a`` and ``b`` (shape 3) by ``t`` (``HxW`` in [0, 1])."""
    a32, b32 = np.asarray(a, np.float32), np.asarray(b, np.float32)
    return a32 + (b32 - a32) * t[..., None]


def object_fill(rng: np.random.Generator, height: int, width: int) -> FloatImage:
    """An object's texture: one of :data:`FILL_KINDS` with random colours. ``HxWx3`` float32.

    The distribution does not depend on what the object is, so the fill carries no class cue.
    """
    kind = FILL_KINDS[int(rng.integers(len(FILL_KINDS)))]
    c0 = random_color(rng)
    c1 = random_color(rng) if rng.random() < 0.6 else np.clip(c0 * rng.uniform(0.4, 0.75), 0, 255)
    if kind == "solid":
        t = np.zeros((height, width), dtype=np.float32)
    elif kind == "gradient":
        t = ramp(rng, height, width)
    elif kind == "stripes":
        t = stripes(rng, height, width, rng.uniform(4, 12))
    elif kind == "checker":
        t = checker(rng, height, width, rng.uniform(3, 9))
    elif kind == "noise":
        t = fractal_noise(rng, height, width, rng.uniform(4, 16))
    else:
        t = spots(rng, height, width)
    fill = _mix(c0, c1.astype(np.float32), t)
    # A soft shading ramp so that objects are not flat.
    shade = 1.0 + rng.uniform(-0.25, 0.25) * (ramp(rng, height, width) - 0.5)
    return np.clip(fill * shade[..., None], 0, 255).astype(np.float32)


def background(rng: np.random.Generator, height: int, width: int) -> FloatImage:
    """A textured, cluttered background. ``HxWx3`` float32 RGB in ``[0, 255]``.

    A gradient between two colours, blended with one or two of: fractal value noise, soft
    stripes, a checkerboard; then random low-contrast lines and a few short scribbles.
    """
    c0, c1 = random_color(rng), random_color(rng)
    img = _mix(c0, c1, ramp(rng, height, width) * rng.uniform(0.3, 1.0))
    layers = rng.permutation(3)[: int(rng.integers(1, 3))]
    for layer in layers:
        if layer == 0:
            t = fractal_noise(rng, height, width, rng.uniform(16, 64))
            alpha = rng.uniform(0.3, 0.7)
        elif layer == 1:
            t = stripes(rng, height, width, rng.uniform(6, 24), soft=rng.random() < 0.5)
            alpha = rng.uniform(0.12, 0.3)
        else:
            t = checker(rng, height, width, rng.uniform(8, 32))
            alpha = rng.uniform(0.1, 0.25)
        img = img * (1.0 - alpha) + _mix(img.mean((0, 1)), random_color(rng), t) * alpha
    _clutter_lines(rng, img)
    return np.clip(img, 0, 255).astype(np.float32)


def _clutter_lines(rng: np.random.Generator, img: FloatImage) -> None:
    """Draw random low-contrast straight lines and short polylines into ``img`` in place."""
    height, width = img.shape[:2]
    mean = img.mean((0, 1))
    for _ in range(int(rng.integers(4, 14))):
        p0 = (int(rng.integers(-width // 4, width)), int(rng.integers(-height // 4, height)))
        length = rng.uniform(0.2, 1.2) * max(height, width)
        theta = rng.uniform(0, 2 * np.pi)
        p1 = (int(p0[0] + length * np.cos(theta)), int(p0[1] + length * np.sin(theta)))
        color = np.clip(mean + rng.normal(0, 22, 3), 0, 255)
        thickness = int(rng.integers(1, 4))
        cv2.line(img, p0, p1, tuple(float(c) for c in color), thickness, cv2.LINE_AA)
    for _ in range(int(rng.integers(0, 6))):
        n = int(rng.integers(3, 7))
        start = rng.uniform(0, 1, 2) * (width, height)
        steps = rng.normal(0, 0.05 * max(height, width), (n, 2))
        pts = np.round(start + np.cumsum(steps, axis=0)).astype(np.int32)
        color = np.clip(mean + rng.normal(0, 35, 3), 0, 255)
        cv2.polylines(img, [pts], False, tuple(float(c) for c in color), 1, cv2.LINE_AA)


def add_noise(rng: np.random.Generator, img: FloatImage) -> npt.NDArray[np.uint8]:
    """Add Gaussian pixel noise (sigma 1.5–5) and convert to ``uint8``. Shape unchanged."""
    sigma = rng.uniform(1.5, 5.0)
    noisy = img + rng.standard_normal(img.shape, dtype=np.float32) * np.float32(sigma)
    return np.clip(np.round(noisy), 0, 255).astype(np.uint8)
