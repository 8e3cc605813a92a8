"""WSOD data: proposals joined to the manifest, filtered, and sampled into training batches.

Only image-level ``labels`` reach training: the manifest is read with :data:`WEAK_COLUMNS`
(no ``gt_*`` column is ever loaded here; the supervised upper bound reads ground truth in
:mod:`weaksam.wsod.supervised`).

Proposal filtering per image (:func:`filter_proposals`), in this order, in original pixels:

1. clip to the image;
2. drop duplicates (after clipping; the first occurrence is kept): exact ones, or with
   ``data.dedup_grid`` boxes equal on a grid of that many pixels at ``min_size_ref`` (WSOD2's
   OICR: ``round(box / 8)`` on VOC);
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
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import torch

from weaksam.data.imageio import ImageDecodeError, load_image
from weaksam.geometry.boxes import as_boxes, clip_boxes
from weaksam.io.tables import iter_batches, list_values, read_table
from weaksam.train.cache import ImageCache
from weaksam.wsod.config import WSODDataConfig

FloatArray = npt.NDArray[np.float32]
T = TypeVar("T")

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
    """The usable images of a split (or of one worker's share), why the others were skipped
    (``image_id → reason``) and the filtered proposal count of every usable image of the
    split (``image_id → count``; all of them, also with a share)."""

    images: list[WSODImage]
    skipped: dict[str, str] = field(default_factory=dict)
    proposal_counts: dict[str, int] = field(default_factory=dict)

    def proposals_per_image(self) -> float:
        """The mean filtered proposal count over the usable images (0 when none)."""
        counts = list(self.proposal_counts.values())
        return float(np.mean(counts)) if counts else 0.0

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
        grid = cfg.dedup_grid * max(height, width) / cfg.min_size_ref
        _, first = np.unique(np.round(b / grid) if grid > 0 else b, axis=0, return_index=True)
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


@dataclass(frozen=True)
class ProposalRow:
    """One ``proposals`` row as read for WSOD: flat ``4R`` float32 ``boxes`` (None: null),
    ``scores`` (``R`` float32 or None) and the row's ``error`` (None when fine)."""

    boxes: FloatArray | None
    scores: FloatArray | None
    error: str | None


def iter_proposal_rows(path: str, batch_rows: int = 256) -> Iterator[tuple[str, ProposalRow]]:
    """``(image_id, row)`` for every row of the ``proposals`` table at ``path``, read one
    record batch at a time (memory: one batch, not the table)."""
    for batch in iter_batches(path, PROPOSAL_COLUMNS, batch_rows):
        yield from proposal_rows(batch)


def proposal_rows(batch: pa.RecordBatch | pa.Table) -> Iterator[tuple[str, ProposalRow]]:
    """``(image_id, row)`` of each row of a batch with :data:`PROPOSAL_COLUMNS`."""
    ids = batch.column("image_id").to_pylist()
    errors = batch.column("error").to_pylist()
    boxes = list_values(batch.column("boxes"), np.float32)
    scores = list_values(batch.column("scores"), np.float32)
    for i, image_id in enumerate(ids):
        yield str(image_id), ProposalRow(boxes[i], scores[i], errors[i])


def usable_proposals(
    row: Mapping[str, Any],
    proposals: ProposalRow | None,
    cfg: WSODDataConfig,
    *,
    grid: bool = False,
    require_labels: bool = False,
) -> tuple[FloatArray | None, str | None]:
    """The filtered proposals of one image, or why it is skipped: ``(boxes, None)`` with
    ``boxes`` ``Mx4`` (``M >= 1``), or ``(None, reason)``.

    Args:
        row: its manifest row (:data:`WEAK_COLUMNS`).
        proposals: its ``proposals`` row (None: the table has none); ignored with ``grid``.
        grid: use the plumbing window grid (:func:`grid_proposals`) instead.
        require_labels: skip images without image-level labels (training).
    """
    if row.get("error"):
        return None, "manifest error row"
    if require_labels and not row["labels"]:
        return None, "no image-level label"
    h, w = int(row["height"]), int(row["width"])
    raw: npt.ArrayLike
    scores: npt.ArrayLike | None = None
    if grid:
        raw = grid_proposals(h, w)
    elif proposals is None:
        return None, "no proposals row"
    elif proposals.error:
        return None, "proposals error row"
    else:
        raw = proposals.boxes if proposals.boxes is not None else np.zeros(0, np.float32)
        scores = proposals.scores
    boxes = filter_proposals(raw, scores, h, w, cfg)
    if len(boxes) == 0:
        return None, "no proposal left after filtering"
    return boxes, None


def shard_of(items: Sequence[T], rank: int, world: int) -> list[T]:
    """Worker ``rank`` of ``world``'s share ``items[rank::world]`` (all of them when that is
    empty: fewer items than workers)."""
    return list(items)[rank::world] or list(items)


def join_proposals(
    manifest_rows: Sequence[dict[str, Any]],
    proposals: str | None,
    cfg: WSODDataConfig,
    *,
    require_labels: bool,
    shard: tuple[int, int] | None = None,
) -> SplitData:
    """Join manifest rows to their proposals by ``image_id`` and filter them
    (:func:`usable_proposals`); images in manifest order.

    The proposals table is streamed (one record batch at a time) and only the filtered
    ``float32`` boxes are kept. With ``shard=(rank, world)`` only that worker's images
    (:func:`shard_of` of the usable ones) are returned, read in a second pass, so that a
    training worker holds its share of the boxes, not the split's; ``skipped`` always covers
    every row.

    Args:
        manifest_rows: from :func:`read_weak_manifest`.
        proposals: a ``proposals`` table path (file or folder of shards), or None for the
            plumbing window grid (:func:`grid_proposals`).
        require_labels: skip images without image-level labels (training).
        shard: ``(rank, world)``, or None for every usable image.
    """
    by_id = {str(r["image_id"]): r for r in manifest_rows}

    def scan(
        keep: set[str] | None,
    ) -> tuple[dict[str, FloatArray], dict[str, int], dict[str, str]]:
        """Filter every row (the last one of an id wins): the boxes of the usable images in
        ``keep`` (None: all), the proposal count of every usable image, and why each other
        image is skipped."""
        kept: dict[str, FloatArray] = {}
        counts: dict[str, int] = {}
        reasons: dict[str, str] = {}
        rows = (
            ((i, None) for i in by_id)
            if proposals is None
            else ((i, p) for i, p in iter_proposal_rows(proposals) if i in by_id)
        )
        for image_id, prow in rows:
            boxes, reason = usable_proposals(
                by_id[image_id], prow, cfg, grid=proposals is None, require_labels=require_labels
            )
            for seen in (kept, counts, reasons):
                seen.pop(image_id, None)
            if boxes is None:
                reasons[image_id] = str(reason)
                continue
            counts[image_id] = len(boxes)
            if keep is None or image_id in keep:
                kept[image_id] = boxes
        for image_id in by_id.keys() - counts.keys() - reasons.keys():  # no proposals row
            _, reason = usable_proposals(by_id[image_id], None, cfg, require_labels=require_labels)
            reasons[image_id] = str(reason)
        return kept, counts, reasons

    two_pass = shard is not None and proposals is not None and shard[1] > 1
    found, counts, reasons = scan(set() if two_pass else None)
    order = [i for i in by_id if i in counts]
    if shard is not None:
        order = shard_of(order, *shard)
        if two_pass:  # read again, keeping this worker's boxes only
            found, _, _ = scan(set(order))
    data = SplitData([])
    data.skipped = {i: reasons[i] for i in by_id if i in reasons}
    data.proposal_counts = {i: counts[i] for i in by_id if i in counts}
    for image_id in order:
        r = by_id[image_id]
        data.images.append(
            WSODImage(
                image_id=image_id,
                image_index=int(r["image_index"]),
                height=int(r["height"]),
                width=int(r["width"]),
                path=str(r["path"]),
                labels=np.asarray(sorted(set(r["labels"] or [])), dtype=np.int64),
                proposals=found[image_id],
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

    Worker ``rank`` of ``world`` owns images ``rank::world`` (:func:`shard_of`; pass
    ``sharded=True`` when ``images`` are already its share, as :func:`join_proposals` with
    ``shard`` returns them). Each step's draw (images, scale, flips) comes from
    ``np.random.default_rng([seed, rank, step])``, so any step can be reproduced after a
    restart.
    """

    def __init__(
        self,
        images: Sequence[WSODImage],
        cfg: WSODDataConfig,
        images_per_step: int,
        seed: int,
        rank: int = 0,
        world: int = 1,
        *,
        sharded: bool = False,
    ) -> None:
        self.images = list(images) if sharded else shard_of(images, rank, world)
        self.stats: dict[str, Any] = {}  # what the caller knows of the data (reported as is)
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
    "ProposalRow",
    "SplitData",
    "TrainBatch",
    "TrainSampler",
    "WSODImage",
    "filter_proposals",
    "grid_proposals",
    "image_tensor",
    "iter_proposal_rows",
    "join_proposals",
    "min_side_px",
    "proposal_rows",
    "read_weak_manifest",
    "shard_of",
    "usable_proposals",
]
