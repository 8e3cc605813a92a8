"""Vectorised rasterisers for the ``shapes`` benchmark's classes.

Each class is an implicit function ``inside(u, v) -> bool`` on canonical coordinates, with its
random parameters (number of star points, ring thickness, ...) drawn by a sampler. A canonical
shape fits in the unit disc, centred at the origin; :func:`rasterize` maps it into an image with
a :class:`Placement` (centre, radius in pixels, rotation, aspect jitter), evaluating ``inside``
at pixel centres ``(col + 0.5, row + 0.5)``. The mask is exactly the set of pixels drawn.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]
BoolArray = npt.NDArray[np.bool_]
Inside = Callable[[FloatArray, FloatArray], BoolArray]
ShapeSampler = Callable[[np.random.Generator], Inside]

SHAPE_CLASSES: tuple[str, ...] = ("star", "cross", "ring", "heart", "crescent", "arrow")
"""The benchmark's classes; the index is the project class id."""


@dataclass(frozen=True)
class Placement:
    """Where a canonical shape goes in the image.

    Attributes:
        cx, cy: centre in continuous pixel coordinates (x = column).
        radius: the canonical unit disc's radius in pixels (object size = 2 * radius).
        angle: rotation in radians (counter-clockwise in canonical coordinates).
        aspect: the shape is stretched by ``sqrt(aspect)`` along its u axis and shrunk by the
            same factor along v.
    """

    cx: float
    cy: float
    radius: float
    angle: float = 0.0
    aspect: float = 1.0


@dataclass(frozen=True)
class Stamp:
    """A rasterised shape, clipped to the image: ``mask`` is the window ``[y0:y0+h, x0:x0+w]``.

    Attributes:
        mask: ``hxw`` bool, the drawn pixels inside the image.
        y0, x0: the window's top-left pixel in the image.
        full_area: pixel count of the whole shape, including any part outside the image.
    """

    mask: BoolArray
    y0: int
    x0: int
    full_area: int

    @property
    def area(self) -> int:
        """Pixels of the shape inside the image."""
        return int(self.mask.sum())

    def window(self) -> tuple[slice, slice]:
        """The (row, column) slices of the window in the image."""
        h, w = self.mask.shape
        return slice(self.y0, self.y0 + h), slice(self.x0, self.x0 + w)


def rasterize(inside: Inside, placement: Placement, height: int, width: int) -> Stamp:
    """Draw a canonical shape with ``placement`` into an ``height x width`` image.

    The shape is evaluated on its bounding window (which may extend past the image, so the
    full area is known), then clipped to the image.
    """
    p = placement
    sa = float(np.sqrt(p.aspect))
    ru, rv = p.radius * sa, p.radius / sa
    c, s = float(np.cos(p.angle)), float(np.sin(p.angle))
    # Half-extents of the rotated ellipse that bounds the (stretched) unit disc, plus a margin.
    hx = float(np.hypot(ru * c, rv * s)) * 1.05 + 1
    hy = float(np.hypot(ru * s, rv * c)) * 1.05 + 1
    gx0, gx1 = int(np.floor(p.cx - hx)), int(np.ceil(p.cx + hx))
    gy0, gy1 = int(np.floor(p.cy - hy)), int(np.ceil(p.cy + hy))
    ys, xs = np.mgrid[gy0:gy1, gx0:gx1].astype(np.float32)
    dx, dy = xs + 0.5 - p.cx, ys + 0.5 - p.cy
    u = (c * dx + s * dy) / ru
    v = (-s * dx + c * dy) / rv
    full = inside(u.astype(np.float32), v.astype(np.float32))
    x0, y0 = max(gx0, 0), max(gy0, 0)
    x1, y1 = min(gx1, width), min(gy1, height)
    if x1 <= x0 or y1 <= y0:
        clipped = np.zeros((0, 0), dtype=bool)
    else:
        clipped = full[y0 - gy0 : y1 - gy0, x0 - gx0 : x1 - gx0]
    return Stamp(np.ascontiguousarray(clipped), y0, x0, int(full.sum()))


def stamp_to_mask(stamp: Stamp, height: int, width: int) -> BoolArray:
    """The stamp as a full ``HxW`` bool mask."""
    out = np.zeros((height, width), dtype=bool)
    out[stamp.window()] = stamp.mask
    return out


# --------------------------------------------------------------------------- the classes


def star(rng: np.random.Generator) -> Inside:
    """A 5- or 6-pointed star; inner radius 0.38–0.52 of the outer one."""
    n = int(rng.integers(5, 7))
    inner = float(rng.uniform(0.38, 0.52))
    sector = 2 * np.pi / n
    # Fold every point into the half-sector [0, sector/2] next to the outer vertex A = (1, 0);
    # inside means on the origin's side of the edge from A to the inner vertex B.
    bx, by = inner * np.cos(sector / 2), inner * np.sin(sector / 2)

    def inside(u: FloatArray, v: FloatArray) -> BoolArray:
        r = np.hypot(u, v)
        phi = np.abs(np.mod(np.arctan2(v, u) + sector / 2, sector) - sector / 2)
        px, py = r * np.cos(phi), r * np.sin(phi)
        return np.asarray((bx - 1.0) * py - by * (px - 1.0) > 0)

    return inside


def cross(rng: np.random.Generator) -> Inside:
    """A plus-shaped cross; arm half-width 0.24–0.36 of the arm length."""
    w = float(rng.uniform(0.24, 0.36))
    reach = float(np.sqrt(1.0 - w * w))  # the arm corners lie on the unit circle

    def inside(u: FloatArray, v: FloatArray) -> BoolArray:
        au, av = np.abs(u), np.abs(v)
        return np.asarray(((au <= w) & (av <= reach)) | ((av <= w) & (au <= reach)))

    return inside


def ring(rng: np.random.Generator) -> Inside:
    """An annulus; inner radius 0.45–0.68 of the outer one."""
    inner = float(rng.uniform(0.45, 0.68))

    def inside(u: FloatArray, v: FloatArray) -> BoolArray:
        r2 = u * u + v * v
        return np.asarray((r2 <= 1.0) & (r2 >= inner * inner))

    return inside


def heart(rng: np.random.Generator) -> Inside:
    """The quartic heart ``(x² + y² − 1)³ − x²y³ ≤ 0``, scaled into the unit disc."""
    lobes = float(rng.uniform(0.88, 1.12))  # widens or narrows the heart a little
    k = 1.25 / min(lobes, 1.0)  # (x, y) = (0, 0.25) at the centre; fits the unit disc

    def inside(u: FloatArray, v: FloatArray) -> BoolArray:
        x = u * k * lobes
        y = -v * k + 0.25  # image v points down; the heart's tip points down
        return np.asarray((x * x + y * y - 1.0) ** 3 - x * x * y**3 <= 0)

    return inside


def crescent(rng: np.random.Generator) -> Inside:
    """The unit disc minus an offset disc (radius 0.72–0.92, offset 0.38–0.6)."""
    rc = float(rng.uniform(0.72, 0.92))
    d = float(rng.uniform(0.38, 0.6))

    def inside(u: FloatArray, v: FloatArray) -> BoolArray:
        return np.asarray((u * u + v * v <= 1.0) & ((u - d) ** 2 + v * v > rc * rc))

    return inside


def arrow(rng: np.random.Generator) -> Inside:
    """A straight arrow along +u: a shaft and a triangular head."""
    head = float(rng.uniform(0.0, 0.3))  # u where the head starts
    shaft = float(rng.uniform(0.13, 0.22))  # shaft half-width
    wing = float(rng.uniform(0.5, 0.7))  # head half-width at its base

    def inside(u: FloatArray, v: FloatArray) -> BoolArray:
        av = np.abs(v)
        in_shaft = (u >= -0.97) & (u <= head) & (av <= shaft)
        in_head = (u >= head) & (u <= 1.0) & (av <= wing * (1.0 - u) / (1.0 - head))
        return np.asarray(in_shaft | in_head)

    return inside


SHAPE_SAMPLERS: dict[str, ShapeSampler] = {
    "star": star,
    "cross": cross,
    "ring": ring,
    "heart": heart,
    "crescent": crescent,
    "arrow": arrow,
}


def sample_shape(name: str, rng: np.random.Generator) -> Inside:
    """Draw the random parameters of class ``name``; returns its ``inside(u, v)`` function."""
    try:
        sampler = SHAPE_SAMPLERS[name]
    except KeyError:
        raise ValueError(f"unknown shape {name!r}; known: {sorted(SHAPE_SAMPLERS)}") from None
    return sampler(rng)
