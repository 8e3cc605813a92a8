"""Training samples of the retrained detectors: images plus PGT boxes (and masks).

A :class:`DetectionSample` is one training image with its targets; :func:`read_pgt_samples`
joins the manifest's image paths (never its ``gt_*`` columns) with a ``pgt`` table.
:class:`Sampler` draws each step's images and flips from ``(seed, rank, step)``, so a resumed
run sees the same batches as an uninterrupted one, and :func:`to_model_inputs` decodes them
into torchvision's format: ``3xHxW`` float images in ``[0, 1]`` and target dicts with
``boxes`` (``Gx4`` XYXY float32, original pixels), ``labels`` (``G`` int64, ``1..C``) and,
for Mask R-CNN, ``masks`` (``GxHxW`` uint8).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np
import numpy.typing as npt
import torch

from weaksam.data.imageio import load_image
from weaksam.geometry.boxes import as_boxes, clip_boxes
from weaksam.io.rle import decode_masks, rle_area
from weaksam.io.tables import iter_batches, read_table
from weaksam.train.cache import ImageCache

log = logging.getLogger(__name__)

# The manifest columns a PGT-trained detector may read: paths and sizes, no ground truth.
IMAGE_COLUMNS = ("image_id", "image_index", "height", "width", "path", "split", "error")
PGT_COLUMNS = ("image_id", "boxes", "classes", "masks", "error")
MIN_SIDE = 1.0  # torchvision rejects boxes without positive width and height


@dataclass(frozen=True)
class DetectionSample:
    """One training image and its targets.

    Attributes:
        boxes: ``Gx4`` float32 XYXY, continuous convention, original pixels.
        classes: ``G`` int64 project class ids (0-based; the model adds 1).
        masks: ``G`` RLE counts sized ``(height, width)``, or ``None``.
    """

    image_id: str
    image_index: int
    path: str
    height: int
    width: int
    boxes: npt.NDArray[np.float32]
    classes: npt.NDArray[np.int64]
    masks: list[bytes] | None = None

    def __len__(self) -> int:
        return int(self.boxes.shape[0])


def image_rows(manifest: str, split: str) -> dict[str, dict[str, object]]:
    """``image_id → row`` of the good manifest rows of ``split`` (image columns only)."""
    tbl = read_table(manifest, "manifest", columns=IMAGE_COLUMNS)
    return {
        str(r["image_id"]): r for r in tbl.to_pylist() if r["split"] == split and not r["error"]
    }


def nonempty_masks(masks: Sequence[bytes], height: int, width: int) -> npt.NDArray[np.bool_]:
    """``N`` bool: which RLE masks have at least one pixel."""
    if not masks:
        return np.zeros(0, dtype=bool)
    return np.asarray(rle_area(masks, height, width) > 0, dtype=bool)


def make_sample(
    row: dict[str, object],
    boxes: Sequence[float] | npt.NDArray[np.float32],
    classes: Sequence[int],
    masks: Sequence[bytes] | None,
    *,
    drop_empty_masks: bool = False,
) -> DetectionSample | None:
    """A sample from an image row and flat targets; boxes are clipped to the image and
    degenerate ones (side < 1 px) dropped, and with ``drop_empty_masks`` the boxes whose mask
    is empty (an empty SAM mask is no Mask R-CNN target). ``None`` when no box is left."""
    h, w = int(row["height"] or 0), int(row["width"] or 0)  # type: ignore[call-overload]
    b = clip_boxes(as_boxes(boxes), h, w)
    c = np.asarray(classes, dtype=np.int64).reshape(-1)
    keep = ((b[:, 2] - b[:, 0]) >= MIN_SIDE) & ((b[:, 3] - b[:, 1]) >= MIN_SIDE)
    if drop_empty_masks and masks is not None and len(masks) == len(keep):
        keep &= nonempty_masks(masks, h, w)
    if not keep.any():
        return None
    m = [bytes(x) for x, k in zip(masks, keep, strict=True) if k] if masks is not None else None
    return DetectionSample(
        str(row["image_id"]),
        int(row["image_index"]),  # type: ignore[call-overload]
        str(row["path"]),
        h,
        w,
        b[keep],
        c[keep],
        m,
    )


def read_pgt_samples(
    manifest: str, pgt: str, split: str, *, with_masks: bool = False
) -> tuple[list[DetectionSample], int]:
    """Samples of ``split`` from a ``pgt`` table (streamed: one record batch at a time as
    Python rows, not the whole table); ``with_masks`` (Mask R-CNN): boxes whose SAM mask is
    empty are left out (:func:`make_sample`). Returns the samples and how many images were
    left out (error rows, no usable PGT box, not in the manifest)."""
    images = image_rows(manifest, split)
    samples: list[DetectionSample] = []
    left_out = 0
    rows = (r for b in iter_batches(pgt, PGT_COLUMNS) for r in b.to_pylist())  # a batch at a time
    for r in rows:
        row = images.get(str(r["image_id"]))
        if row is None or r["error"]:
            left_out += 1
            continue
        s = make_sample(
            row, r["boxes"] or [], r["classes"] or [], r["masks"], drop_empty_masks=with_masks
        )
        if s is None:
            left_out += 1
            continue
        samples.append(s)
    return samples, left_out


class Sampler:
    """This worker's images and each step's draw.

    Args:
        samples: every training sample; worker ``rank`` of ``world`` takes ``samples[rank::world]``.
        per_step: images per step on this worker.
        hflip: draw horizontal flips (p = 0.5).
    """

    def __init__(
        self,
        samples: Sequence[DetectionSample],
        per_step: int,
        seed: int,
        rank: int = 0,
        world: int = 1,
        hflip: bool = True,
    ) -> None:
        self.samples = list(samples)[rank::world]
        if not self.samples:
            raise ValueError(f"worker {rank} of {world} has no training images")
        self.per_step, self.seed, self.rank, self.hflip = per_step, seed, rank, hflip

    def draw(self, step: int) -> list[tuple[DetectionSample, bool]]:
        """The ``(sample, flip)`` pairs of ``step`` (a function of seed, rank and step)."""
        rng = np.random.default_rng([self.seed, self.rank, step])
        n = len(self.samples)
        idx = rng.choice(n, self.per_step, replace=n < self.per_step)
        flips = rng.random(self.per_step) < 0.5 if self.hflip else np.zeros(self.per_step, bool)
        return [(self.samples[int(i)], bool(f)) for i, f in zip(idx, flips, strict=True)]


def image_tensor(image: npt.NDArray[np.uint8]) -> torch.Tensor:
    """``HxWx3`` uint8 RGB → ``3xHxW`` float32 in ``[0, 1]``."""
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255.0)


def _decode(path: str) -> torch.Tensor:
    return image_tensor(load_image(path))


def to_model_inputs(
    drawn: Sequence[tuple[DetectionSample, bool]],
    with_masks: bool,
    cache: ImageCache | None = None,
) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    """Decode drawn samples (flipped as drawn) into torchvision's inputs and targets; decoded
    images come from ``cache`` when it holds them (nothing here modifies them in place)."""
    images, targets = [], []
    cache = cache if cache is not None else ImageCache(0)
    for s, flip in drawn:
        img = cache.get(s.image_id, partial(_decode, s.path))
        boxes = torch.from_numpy(s.boxes.copy())
        target = {"boxes": boxes, "labels": torch.from_numpy(s.classes + 1)}
        if with_masks:
            if s.masks is None:
                raise ValueError(f"image {s.image_id!r} has no masks to train Mask R-CNN on")
            target["masks"] = torch.from_numpy(decode_masks(s.masks, s.height, s.width)).to(
                torch.uint8
            )
        if flip:
            img = img.flip(-1)
            w = float(img.shape[-1])
            target["boxes"] = torch.stack(
                [w - boxes[:, 2], boxes[:, 1], w - boxes[:, 0], boxes[:, 3]], 1
            )
            if with_masks:
                target["masks"] = target["masks"].flip(-1)
        images.append(img)
        targets.append(target)
    return images, targets
