"""Class-agnostic blobs: distractors for ``shapes`` and the ``blobs`` set for pre-training SAM.

The primitives are smooth or convex on purpose (ellipses, low-frequency Fourier blobs,
superellipses with exponent > 1, convex polygons, short thick random-walk "beans"), so that none
looks like a star, cross, ring, heart, crescent or arrow: SAM pre-trained on ``blobs`` never sees
the benchmark's classes, and the benchmark's distractors never resemble a class.
Each sampler returns an ``inside(u, v)`` function on canonical coordinates in the unit disc, as
the class rasterisers in :mod:`weaksam.data.synth.shapes` do.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from weaksam.data.synth.compose import Canvas, contrasting_fill
from weaksam.data.synth.shapes import (
    BoolArray,
    FloatArray,
    Inside,
    Placement,
    ShapeSampler,
    rasterize,
)
from weaksam.data.synth.textures import add_noise, background


def ellipse(rng: np.random.Generator) -> Inside:
    """The unit disc (the placement's aspect jitter makes it an ellipse)."""

    def inside(u: FloatArray, v: FloatArray) -> BoolArray:
        return np.asarray(u * u + v * v <= 1.0)

    return inside


def fourier_blob(rng: np.random.Generator) -> Inside:
    """A smooth blob ``r <= R(θ)``: harmonics 2–3 with small amplitudes (no points, no holes)."""
    amps = rng.uniform(0.0, 0.12, 2)
    phases = rng.uniform(0, 2 * np.pi, 2)
    base = 1.0 / (1.0 + float(amps.sum()))

    def inside(u: FloatArray, v: FloatArray) -> BoolArray:
        theta = np.arctan2(v, u)
        radius = (
            1.0 + amps[0] * np.cos(2 * theta + phases[0]) + amps[1] * np.cos(3 * theta + phases[1])
        )
        return np.asarray(np.hypot(u, v) <= base * radius)

    return inside


def superellipse(rng: np.random.Generator) -> Inside:
    """``|u|^p + |v|^p <= 1`` with ``p`` in 1.3–5 (diamond-ish to rounded square; never a star)."""
    p = float(rng.uniform(1.3, 5.0))
    scale = 2.0 ** (0.5 - 1.0 / p) if p > 2 else 1.0  # fit the corners into the unit disc

    def inside(u: FloatArray, v: FloatArray) -> BoolArray:
        return np.asarray(np.abs(u * scale) ** p + np.abs(v * scale) ** p <= 1.0)

    return inside


def convex_polygon(rng: np.random.Generator) -> Inside:
    """A convex polygon with 4–8 vertices on the unit circle (intersection of half-planes)."""
    n = int(rng.integers(4, 9))
    gaps = rng.uniform(0.5, 1.5, n)
    angles = np.cumsum(gaps / gaps.sum() * 2 * np.pi) + rng.uniform(0, 2 * np.pi)
    vx, vy = np.cos(angles), np.sin(angles)
    # Vertices are counter-clockwise: inside is left of every edge.
    ex, ey = np.roll(vx, -1) - vx, np.roll(vy, -1) - vy

    def inside(u: FloatArray, v: FloatArray) -> BoolArray:
        ok = np.ones(u.shape, dtype=bool)
        for i in range(n):
            ok &= ex[i] * (v - vy[i]) - ey[i] * (u - vx[i]) >= 0
        return ok

    return inside


def random_walk_blob(rng: np.random.Generator) -> Inside:
    """A union of 3–6 thick discs along a nearly straight walk (a bean or capsule)."""
    n = int(rng.integers(3, 7))
    heading = rng.uniform(0, 2 * np.pi) + np.cumsum(rng.uniform(-0.25, 0.25, n))
    steps = np.stack([np.cos(heading), np.sin(heading)], 1) * 0.35
    centres = np.cumsum(steps, axis=0)
    radii = rng.uniform(0.45, 0.7, n)
    centres -= centres.mean(0)
    reach = float((np.hypot(centres[:, 0], centres[:, 1]) + radii).max())
    centres, radii = centres / reach, radii / reach

    def inside(u: FloatArray, v: FloatArray) -> BoolArray:
        ok = np.zeros(u.shape, dtype=bool)
        for (cx, cy), r in zip(centres, radii, strict=True):
            ok |= (u - cx) ** 2 + (v - cy) ** 2 <= r * r
        return ok

    return inside


DISTRACTOR_SAMPLERS: tuple[ShapeSampler, ...] = (ellipse, fourier_blob, convex_polygon)
BLOB_SAMPLERS: tuple[ShapeSampler, ...] = (
    ellipse,
    fourier_blob,
    superellipse,
    convex_polygon,
    random_walk_blob,
)


def sample_distractor(rng: np.random.Generator) -> Inside:
    """A non-class distractor shape for the ``shapes`` benchmark."""
    return DISTRACTOR_SAMPLERS[int(rng.integers(len(DISTRACTOR_SAMPLERS)))](rng)


def sample_blob(rng: np.random.Generator) -> Inside:
    """A ``blobs`` shape: any of :data:`BLOB_SAMPLERS`."""
    return BLOB_SAMPLERS[int(rng.integers(len(BLOB_SAMPLERS)))](rng)


BLOB_MIN_VISIBLE = 0.3
"""A blob placement may not leave an earlier blob (or itself) less visible than this."""
BLOB_MIN_AREA = 16
"""Blobs with fewer visible pixels are dropped from the masks."""


def render_blobs_image(
    rng: np.random.Generator, size: int
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.bool_]]:
    """One ``blobs`` image: 2–8 textured, overlapping blobs on a cluttered background.

    Returns:
        ``(image, masks)``: ``image`` is ``size x size x 3`` uint8 RGB; ``masks`` is ``KxHxW``
        bool, the *visible* mask of each blob (disjoint), bottom to top, ``K >= 1``.
    """
    canvas = Canvas(background(rng, size, size))
    for _ in range(int(rng.integers(2, 9))):
        inside = sample_blob(rng)
        for _try in range(20):
            radius = 0.5 * size * float(np.exp(rng.uniform(np.log(0.08), np.log(0.5))))
            placement = Placement(
                cx=float(rng.uniform(0, size)),
                cy=float(rng.uniform(0, size)),
                radius=radius,
                angle=float(rng.uniform(0, 2 * np.pi)),
                aspect=float(np.exp(rng.uniform(-0.9, 0.9))),
            )
            stamp = rasterize(inside, placement, size, size)
            if canvas.can_place(stamp, BLOB_MIN_VISIBLE):
                h, w = stamp.mask.shape
                canvas.paint(stamp, contrasting_fill(rng, canvas.under(stamp), h, w))
                canvas.place(stamp)
                break
    keep = [i for i in range(len(canvas)) if canvas.visible[i] >= BLOB_MIN_AREA]
    masks = (
        np.stack([canvas.visible_mask(i) for i in keep])
        if keep
        else np.zeros((0, size, size), bool)
    )
    return add_noise(rng, canvas.image), masks
