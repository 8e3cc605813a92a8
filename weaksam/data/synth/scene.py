"""One image of the ``shapes`` benchmark: classes, distractors, clutter and occlusion.

Composition: a textured background (see :func:`~weaksam.data.synth.textures.background`);
``min_instances..max_instances`` class instances and ``0..num_distractors`` distractor blobs are
drawn in a random z-order (later on top). Sizes are log-uniform between ``min_scale`` and
``max_scale`` of the image side (for classes and distractors alike), rotation is uniform,
aspect is jittered, fills are random per object and independent of the class.

Ground-truth rule (occlusion and truncation): an object's *visible* mask is the set of pixels
it owns after everything above it is drawn (so visible masks are disjoint). A placement that
would leave an earlier object, or itself, less than :data:`PLACEMENT_MIN_VISIBLE` visible
(covered or outside the image) is re-sampled, up to :data:`PLACEMENT_TRIES` times, then the
object is skipped. Independently, any instance less than :data:`MIN_VISIBLE` (40 %) visible is
dropped from the ground truth (with the placement rule this cannot happen; it is the contract).
With ``occlusion=False`` objects may not overlap at all. Boxes are the tight boxes of the
visible masks (continuous XYXY, :func:`weaksam.geometry.boxes.mask_to_box`).

Determinism: :func:`image_rng` derives the generator of image ``(seed, split, index)`` from
those three values only, so a dataset's first ``n`` images do not depend on its size.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from weaksam.config import SynthConfig
from weaksam.data.synth.blobs import sample_distractor
from weaksam.data.synth.compose import Canvas, contrasting_fill
from weaksam.data.synth.shapes import SHAPE_CLASSES, Inside, Placement, rasterize, sample_shape
from weaksam.data.synth.textures import add_noise, background
from weaksam.geometry.boxes import mask_to_box

MIN_VISIBLE = 0.4
"""Instances with a smaller visible fraction of their full area are not in the ground truth."""
PLACEMENT_MIN_VISIBLE = 0.5
"""A placement may not leave any object (nor itself) less visible than this."""
PLACEMENT_TRIES = 25
"""Placements tried per object before it is skipped."""


@dataclass(frozen=True, eq=False)
class SyntheticImage:
    """One rendered image with its exact ground truth.

    Attributes:
        image: ``HxWx3`` uint8 RGB.
        boxes: ``Nx4`` float32 XYXY, continuous convention (tight boxes of ``masks``).
        classes: ``N`` int64 class ids, indices into :data:`SHAPE_CLASSES`.
        masks: ``NxHxW`` bool visible masks (disjoint), bottom to top.
        visible: ``N`` float32, each visible mask's fraction of the whole shape's area
            (below 1 when occluded or cut by the image border; at least :data:`MIN_VISIBLE`).
    """

    image: npt.NDArray[np.uint8]
    boxes: npt.NDArray[np.float32]
    classes: npt.NDArray[np.int64]
    masks: npt.NDArray[np.bool_]
    visible: npt.NDArray[np.float32]

    def __len__(self) -> int:
        return int(self.classes.shape[0])


def image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator of image ``index`` of ``split``; depends on these three values only."""
    key = zlib.crc32(split.encode("utf-8"))
    return np.random.default_rng(np.random.SeedSequence([int(seed), key, int(index)]))


def keep_visible(visible: npt.ArrayLike, full_area: npt.ArrayLike, min_visible: float) -> list[int]:
    """Indices of objects whose ``visible / full_area`` is at least ``min_visible`` (and > 0)."""
    vis = np.asarray(visible, dtype=np.float64)
    full = np.asarray(full_area, dtype=np.float64)
    ok = (vis > 0) & (vis >= min_visible * np.maximum(full, 1))
    return [int(i) for i in np.flatnonzero(ok)]


def _sample_placement(
    rng: np.random.Generator, cfg: SynthConfig, size: int, max_aspect: float
) -> Placement:
    lo, hi = np.log(cfg.min_scale), np.log(max(cfg.max_scale, cfg.min_scale))
    radius = 0.5 * size * float(np.exp(rng.uniform(lo, hi)))
    margin = 0.6 * radius
    return Placement(
        cx=float(rng.uniform(margin, max(size - margin, margin + 1))),
        cy=float(rng.uniform(margin, max(size - margin, margin + 1))),
        radius=radius,
        angle=float(rng.uniform(0, 2 * np.pi)),
        aspect=float(np.exp(rng.uniform(-np.log(max_aspect), np.log(max_aspect)))),
    )


def _draw(
    rng: np.random.Generator, canvas: Canvas, inside: Inside, cfg: SynthConfig, max_aspect: float
) -> int | None:
    """Place and paint one object; its canvas index, or None when every try was refused."""
    for _ in range(PLACEMENT_TRIES):
        placement = _sample_placement(rng, cfg, canvas.width, max_aspect)
        stamp = rasterize(inside, placement, canvas.height, canvas.width)
        if canvas.can_place(stamp, PLACEMENT_MIN_VISIBLE, allow_overlap=cfg.occlusion):
            h, w = stamp.mask.shape
            canvas.paint(stamp, contrasting_fill(rng, canvas.under(stamp), h, w))
            return canvas.place(stamp)
    return None


def render_shapes_image(rng: np.random.Generator, cfg: SynthConfig) -> SyntheticImage:
    """Render one ``shapes`` image of side ``cfg.image_size`` (see the module docstring).

    Args:
        rng: the image's generator (use :func:`image_rng` for dataset images).
        cfg: sizes, counts and the occlusion switch.
    """
    size = int(cfg.image_size)
    if size < 16:
        raise ValueError(f"image_size must be at least 16, got {size}")
    if not 1 <= cfg.min_instances <= cfg.max_instances:
        raise ValueError(
            f"need 1 <= min_instances <= max_instances, got {cfg.min_instances}, "
            f"{cfg.max_instances}"
        )
    if not 0 < cfg.min_scale <= cfg.max_scale <= 1:
        raise ValueError(
            f"need 0 < min_scale <= max_scale <= 1, got {cfg.min_scale}, {cfg.max_scale}"
        )
    canvas = Canvas(background(rng, size, size))
    num_instances = int(rng.integers(cfg.min_instances, cfg.max_instances + 1))
    num_distractors = int(rng.integers(0, max(cfg.num_distractors, 0) + 1))
    kinds = rng.permutation(
        np.r_[rng.integers(0, len(SHAPE_CLASSES), num_instances), np.full(num_distractors, -1)]
    )
    drawn: list[tuple[int, int]] = []  # (canvas index, class id)
    for kind in kinds.tolist():
        if kind >= 0:
            index = _draw(rng, canvas, sample_shape(SHAPE_CLASSES[kind], rng), cfg, 1.35)
            if index is not None:
                drawn.append((index, kind))
        else:
            _draw(rng, canvas, sample_distractor(rng), cfg, 2.0)
    idx = [i for i, _ in drawn]
    keep = keep_visible(
        [canvas.visible[i] for i in idx], [canvas.full_area[i] for i in idx], MIN_VISIBLE
    )
    kept = [drawn[k] for k in keep]
    if kept:
        masks = np.stack([canvas.visible_mask(i) for i, _ in kept])
        boxes = np.stack([mask_to_box(m) for m in masks]).astype(np.float32)
    else:
        masks = np.zeros((0, size, size), dtype=bool)
        boxes = np.zeros((0, 4), dtype=np.float32)
    classes = np.array([c for _, c in kept], dtype=np.int64)
    visible = np.array([canvas.visible_fraction(i) for i, _ in kept], dtype=np.float32)
    return SyntheticImage(add_noise(rng, canvas.image), boxes, classes, masks, visible)
