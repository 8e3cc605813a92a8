"""WSOD data: proposals joined to the manifest, filtered, and sampled into training batches.

Only image-level ``labels`` reach training: the manifest is read with :data:`WEAK_COLUMNS`
(no ``gt_*`` column is ever loaded here; the supervised upper bound reads ground truth in
:mod:`weaksam.wsod.supervised`).

Proposal filtering per image (:func:`filter_proposals`), in this order, in original pixels:

1. clip to the image;
2. drop exact duplicates (after clipping; the first occurrence is kept);
3. drop boxes narrower or shorter than ``min_size * max(H, W) / min_size_ref`` pixels
   (the method's 20 px at VOC's ~500 px side);
4. cap at ``max_proposals`` (0 = no cap): the first N in stored order (``cap_order:
   stored``) or the N with the highest SAM score (``score``; stored order breaks ties).

An image is skipped, with a counted reason, when its manifest or proposals row is an error
row, when it has no proposals row, when no proposal survives the filter, or (training) when
it has no label.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from weaksam.data.imageio import ImageDecodeError, load_image
from weaksam.geometry.boxes import as_boxes, clip_boxes
from weaksam.io.tables import read_table
from weaksam.train.cache import ImageCache
from weaksam.wsod.config import WSODDataConfig

FloatArray = npt.NDArray[np.float32]

# The manifest columns a weakly-supervised stage may read: no ground truth.
WEAK_COLUMNS = ("image_id", "image_index", "height", "width", "path", "split", "labels", "error")
PROPOSAL_COLUMNS = ("image_id", "boxes", "scores", "error")


@dataclass
class WSODImage:
    """One usable image. ``proposals`` ``Rx4`` float32 XYXY (original pixels, ``R >= 1``);
    ``labels`` sorted class ids (may be empty on test splits)."""

    image_id: str
    image_index: int
    height: int
    width: int
    path: str
    labels: npt.NDArray[np.int64]
    proposals: FloatArray


@dataclass
class SplitData:
    """The usable images of a split and why the others were skipped (``image_id → reason``)."""

    images: list[WSODImage]
    skipped: dict[str, str] = field(default_factory=dict)

    def skip_counts(self) -> dict[str, int]:
        return dict(Counter(self.skipped.values()))


def min_side_px(height: int, width: int, cfg: WSODDataConfig) -> float:
    """The minimum proposal side in pixels for an image of this size."""
    return cfg.min_size * max(height, width) / cfg.min_size_ref


def filter_proposals(
    boxes: npt.ArrayLike,
    scores: npt.ArrayLike | None,
    height: int,
    width: int,
    cfg: WSODDataConfig,
) -> FloatArray:
    """Clip, de-duplicate, drop small boxes and cap (see the module docstring). ``Mx4``."""
    b = clip_boxes(as_boxes(boxes), height, width)
    s = (
        np.zeros(len(b), np.float32)
        if scores is None or len(np.asarray(scores)) != len(b)
        else np.asarray(scores, np.float32)
    )
    if len(b):
        _, first = np.unique(b, axis=0, return_index=True)
        order = np.sort(first)
        b, s = b[order], s[order]
    m = min_side_px(height, width, cfg)
    keep = ((b[:, 2] - b[:, 0]) >= m) & ((b[:, 3] - b[:, 1]) >= m)
    b, s = b[keep], s[keep]
    if cfg.max_proposals > 0 and len(b) > cfg.max_proposals:
        if cfg.cap_order == "score":
            idx = np.sort(np.argsort(-s, kind="stable")[: cfg.max_proposals])
            b = b[idx]
        else:
            b = b[: cfg.max_proposals]
    return np.ascontiguousarray(b, dtype=np.float32)


def grid_proposals(
    height: int,
    width: int,
    sides: Sequence[float] = (0.13, 0.19, 0.27, 0.38, 0.54),
    aspects: Sequence[float] = (1.0,),
    stride: float = 0.5,
) -> FloatArray:
    """A fixed window grid for plumbing (not WeakSAM proposals): windows of area
    ``(side * min(H, W))^2`` and aspect ratio ``w / h`` in ``aspects``, moved by ``stride``
    of their own size, in a fixed random order. Shape ``Nx4``, the same for every image of
    this size."""
    base = min(height, width)
    out = []
    for side in sides:
        for a in aspects:
            bw, bh = side * base * np.sqrt(a), side * base / np.sqrt(a)
            if bw > width or bh > height:
                continue
            xs = np.arange(0, width - bw + 1e-6, max(1.0, stride * bw))
            ys = np.arange(0, height - bh + 1e-6, max(1.0, stride * bh))
            gx, gy = np.meshgrid(xs, ys)
            out.append(np.stack([gx, gy, gx + bw, gy + bh], -1).reshape(-1, 4))
    if not out:
        return np.zeros((0, 4), np.float32)
    boxes = np.concatenate(out).astype(np.float32)
    # a fixed shuffle, so that a stored-order cap keeps every size, not the smallest windows
    return boxes[np.random.default_rng(0).permutation(len(boxes))]


def read_weak_manifest(path: str, split: str | None = None) -> list[dict[str, Any]]:
    """Manifest rows (only :data:`WEAK_COLUMNS`) of ``split`` (all when None)."""
    rows = read_table(path, "manifest", columns=WEAK_COLUMNS).to_pylist()
    return [r for r in rows if split is None or r["split"] == split]


def join_proposals(
    manifest_rows: Sequence[dict[str, Any]],
    proposals: str | None,
    cfg: WSODDataConfig,
    *,
    require_labels: bool,
) -> SplitData:
    """Join manifest rows to their proposals by ``image_id`` and filter them.

    Args:
        manifest_rows: from :func:`read_weak_manifest`.
        proposals: a ``proposals`` table path (file or folder of shards), or None for the
            plumbing window grid (:func:`grid_proposals`).
        require_labels: skip images without image-level labels (training).
    """
    by_id: dict[str, dict[str, Any]] = {}
    if proposals is not None:
        for row in read_table(proposals, "proposals", columns=PROPOSAL_COLUMNS).to_pylist():
            by_id[str(row["image_id"])] = row
    data = SplitData([])
    for r in manifest_rows:
        image_id = str(r["image_id"])
        if r.get("error"):
            data.skipped[image_id] = "manifest error row"
            continue
        if require_labels and not r["labels"]:
            data.skipped[image_id] = "no image-level label"
            continue
        h, w = int(r["height"]), int(r["width"])
        raw: npt.ArrayLike
        scores: npt.ArrayLike | None = None
        if proposals is None:
            raw = grid_proposals(h, w)
        else:
            prow = by_id.get(image_id)
            if prow is None:
                data.skipped[image_id] = "no proposals row"
                continue
            if prow.get("error"):
                data.skipped[image_id] = "proposals error row"
                continue
            raw, scores = prow["boxes"] or [], prow["scores"]
        boxes = filter_proposals(raw, scores, h, w, cfg)
        if len(boxes) == 0:
            data.skipped[image_id] = "no proposal left after filtering"
            continue
        data.images.append(
            WSODImage(
                image_id=image_id,
                image_index=int(r["image_index"]),
                height=h,
                width=w,
                path=str(r["path"]),
                labels=np.asarray(sorted(set(r["labels"] or [])), dtype=np.int64),
                proposals=boxes,
            )
        )
    return data


def image_tensor(path: str) -> torch.Tensor:
    """``3xHxW`` uint8 RGB tensor of the image at ``path`` (raises ``ImageDecodeError``)."""
    return torch.from_numpy(np.ascontiguousarray(load_image(path))).permute(2, 0, 1)


def photometric(image: torch.Tensor, rng: np.random.Generator, cfg: WSODDataConfig) -> torch.Tensor:
    """Training-time colour augmentation of a ``3xHxW`` float image in ``[0, 255]``:
    brightness and contrast factors in ``[1 - j, 1 + j]`` (``j = color_jitter``), then an
    optional random channel order. Draws nothing from ``rng`` when both are off."""
    out = image
    if cfg.color_jitter > 0:
        j = cfg.color_jitter
        brightness, contrast = rng.uniform(1 - j, 1 + j, size=2)
        mean = out.mean()
        out = ((out - mean) * float(contrast) + mean) * float(brightness)
        out = out.clamp(0, 255)
    if cfg.channel_shuffle:
        out = out[torch.from_numpy(rng.permutation(3))]
    return out


@dataclass
class TrainBatch:
    """One step's images (``3xHxW`` float in ``[0, 255]``), proposals (``Rx4`` original
    coordinates), image ids, one shorter-side ``scale`` and per-image ``flips``."""

    images: list[torch.Tensor]
    proposals: list[torch.Tensor]
    labels: list[torch.Tensor]
    image_ids: list[str]
    scale: int
    flips: list[bool]

    def to(self, device: torch.device) -> TrainBatch:
        """This batch with its tensors on ``device``."""
        return TrainBatch(
            images=[t.to(device) for t in self.images],
            proposals=[t.to(device) for t in self.proposals],
            labels=[t.to(device) for t in self.labels],
            image_ids=self.image_ids,
            scale=self.scale,
            flips=self.flips,
        )


class TrainSampler:
    """Draws training batches from this worker's shard of the images.

    Worker ``rank`` of ``world`` owns images ``rank::world``. Each step's draw (images, scale,
    flips) comes from ``np.random.default_rng([seed, rank, step])``, so any step can be
    reproduced after a restart.
    """

    def __init__(
        self,
        images: Sequence[WSODImage],
        cfg: WSODDataConfig,
        images_per_step: int,
        seed: int,
        rank: int = 0,
        world: int = 1,
    ) -> None:
        self.images = list(images)[rank::world] or list(images)
        if not self.images:
            raise ValueError("no training images")
        self.cfg = cfg
        self.images_per_step = images_per_step
        self.seed = seed
        self.rank = rank
        self._cache = ImageCache(cfg.cache_mb if cfg.cache_images else 0)

    def _load(self, item: WSODImage) -> torch.Tensor:
        """The decoded image (uint8; from the bounded cache when kept: not to be modified)."""
        return self._cache.get(item.image_id, lambda: image_tensor(item.path))

    def batch(self, step: int) -> TrainBatch:
        rng = np.random.default_rng([self.seed, self.rank, step])
        n = min(self.images_per_step, len(self.images))
        picks = rng.choice(len(self.images), size=n, replace=False)
        scale = int(rng.choice(np.asarray(self.cfg.train_scales)))
        flips = (rng.random(n) < 0.5) if self.cfg.flip else np.zeros(n, bool)
        items = [self.images[int(i)] for i in picks]
        return TrainBatch(
            images=[photometric(self._load(it).float(), rng, self.cfg) for it in items],
            proposals=[torch.from_numpy(it.proposals) for it in items],
            labels=[torch.from_numpy(it.labels) for it in items],
            image_ids=[it.image_id for it in items],
            scale=scale,
            flips=[bool(f) for f in flips],
        )


__all__ = [
    "PROPOSAL_COLUMNS",
    "WEAK_COLUMNS",
    "ImageDecodeError",
    "SplitData",
    "TrainBatch",
    "TrainSampler",
    "WSODImage",
    "filter_proposals",
    "grid_proposals",
    "image_tensor",
    "join_proposals",
    "min_side_px",
    "read_weak_manifest",
]
