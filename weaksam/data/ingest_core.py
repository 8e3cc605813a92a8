"""The part of ingest every source shares: per-image records to validated MANIFEST rows.

A source (COCO, VOC, folder) parses its annotations into :class:`ImageRecord` s; this module
probes every image in a small thread pool (decoding releases the GIL) and turns each record
into one MANIFEST row (see :mod:`weaksam.io.schemas`). Nothing is dropped: an image that
cannot be used becomes an error row with the reason, its path, split and labels.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from weaksam import storage
from weaksam.data.imageio import DEFAULT_MAX_PIXELS, ImageDecodeError, probe_image
from weaksam.io.schemas import empty_row, error_row

TABLE = "manifest"
NO_LABELS = "no image-level labels"

MaskFn = Callable[[int, int], list[bytes] | None]


@dataclass
class ImageRecord:
    """One image as a source describes it, before its file is probed.

    Attributes:
        image_id: the dataset's own id (string).
        image_index: unique integer id (COCO image id, numeric VOC id, or a running index).
        path: absolute location of the image file (a local path or a URI, see
            :func:`image_location`).
        split: split name.
        labels: image-level class ids (0-based project ids; duplicates allowed, sorted later).
        gt_boxes: ``Nx4`` float32 XYXY boxes in pixels (continuous convention), or ``None``.
        gt_classes / gt_difficult: per-object class ids and difficult flags, aligned with boxes.
        gt_masks: called with the probed ``(height, width)``; returns ``N`` RLE counts aligned
            with the boxes, or ``None`` when the source has no masks. May raise ``ValueError``.
        annot_size: ``(height, width)`` the annotations were made for, when the source says;
            a mismatch with the decoded image is an error row (boxes would be wrong).
        error: a reason already known from the annotations (unknown class, missing XML);
            the image is not probed then.
    """

    image_id: str
    image_index: int
    path: str
    split: str
    labels: list[int] = field(default_factory=list)
    gt_boxes: npt.NDArray[np.float32] | None = None
    gt_classes: list[int] = field(default_factory=list)
    gt_difficult: list[bool] = field(default_factory=list)
    gt_masks: MaskFn | None = None
    annot_size: tuple[int, int] | None = None
    error: str | None = None


def default_num_workers() -> int:
    """``min(4, cpu count)``: decoding is I/O- and libjpeg-bound; more threads rarely help."""
    return max(1, min(4, os.cpu_count() or 1))


def is_training_split(split: str) -> bool:
    """Default guess when the caller does not say: names starting with ``train``."""
    return split.lower().startswith("train")


def image_location(root: str, file: str) -> str:
    """Where ``file`` (relative to the folder ``root``, or absolute, or a URI) is: an absolute
    local path (as ``os.path.abspath`` gives it) or a normalized URI."""
    if storage.is_uri(file):
        return storage.normalize(file)
    if not storage.is_uri(root) or os.path.isabs(file):
        return os.path.abspath(os.path.join(root, file))
    return storage.normalize(storage.join(root, file.replace("\\", "/")))


_NUMERIC_ID = re.compile(r"\d+(_\d+)*")


def parse_index(image_id: str, fallback: int) -> int:
    """``int(image_id)`` for numeric ids (``"000005"`` -> 5, VOC2012 ``"2008_000002"`` ->
    2008000002, as Python's ``int`` reads digit groups), else ``fallback``."""
    return int(image_id) if _NUMERIC_ID.fullmatch(image_id) else fallback


def build_rows(
    records: Sequence[ImageRecord],
    *,
    training: bool,
    allow_empty_labels: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    verify: bool = True,
    num_workers: int | None = None,
    progress: bool = False,
    desc: str = "ingest",
    ray_chunk: int = 0,
) -> list[dict[str, Any]]:
    """Probe every record's image (in a thread pool, or in Ray tasks) and return MANIFEST rows
    in input order.

    Args:
        records: the images of one source/split.
        training: whether these images train the weakly-supervised stages; then an image
            without labels is an error row (``"no image-level labels"``) unless
            ``allow_empty_labels``.
        max_pixels: larger images are error rows (checked from the header).
        verify: probe by a full decode so truncated or corrupt files are caught here
            (see :func:`weaksam.data.imageio.probe_image`).
        num_workers: decoding threads; default ``min(4, cpu count)``; ``<= 1`` runs inline.
        progress: show a tqdm bar.
        ray_chunk: ``> 0``: decode in Ray tasks of this many images each (one CPU each),
            spread over the cluster the caller has joined, instead of threads here; the rows
            are the same.
    """

    def one(rec: ImageRecord) -> dict[str, Any]:
        return record_to_row(
            rec,
            training=training,
            allow_empty_labels=allow_empty_labels,
            max_pixels=max_pixels,
            verify=verify,
        )

    if ray_chunk > 0 and records:
        return _rows_in_ray_tasks(one, records, ray_chunk, progress, desc)
    workers = default_num_workers() if num_workers is None else num_workers
    if workers <= 1 or len(records) <= 1:
        return list(_progress(map(one, records), len(records), progress, desc))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ingest") as pool:
        return list(_progress(pool.map(one, records), len(records), progress, desc))


def _apply(fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
    return [fn(x) for x in items]


def _rows_in_ray_tasks(
    one: Callable[[ImageRecord], dict[str, Any]],
    records: Sequence[ImageRecord],
    chunk: int,
    progress: bool,
    desc: str,
) -> list[dict[str, Any]]:
    """``[one(r) for r in records]`` computed by Ray tasks of ``chunk`` records each (Ray's
    default retries cover a task lost with its node), in input order."""
    import ray

    task = ray.remote(num_cpus=1)(_apply)
    fn = ray.put(one)
    refs = [task.remote(fn, records[i : i + chunk]) for i in range(0, len(records), chunk)]
    rows: list[dict[str, Any]] = []
    bar = _progress(refs, len(refs), progress, f"{desc} ({chunk}-image Ray tasks)")
    for ref in bar:  # in submission order: the rows keep the records' order
        rows += ray.get(ref)
    return rows


def _progress(it: Iterable[Any], total: int, enabled: bool, desc: str) -> Iterable[Any]:
    if not enabled:
        return it
    from tqdm import tqdm

    return tqdm(it, total=total, desc=desc, unit="img")


def record_to_row(
    rec: ImageRecord,
    *,
    training: bool,
    allow_empty_labels: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    verify: bool = True,
) -> dict[str, Any]:
    """One record to one MANIFEST row; never raises for bad data (error rows instead)."""
    base: dict[str, Any] = {
        "path": rec.path,
        "split": rec.split,
        "labels": sorted({int(c) for c in rec.labels}),
    }

    def fail(reason: str, **extra: Any) -> dict[str, Any]:
        return error_row(TABLE, rec.image_id, rec.image_index, reason, **base, **extra)

    if rec.error is not None:
        return fail(rec.error)
    try:
        height, width = probe_image(rec.path, max_pixels, verify=verify)
    except ImageDecodeError as exc:
        return fail(exc.reason)
    size = {"height": height, "width": width}
    if rec.annot_size is not None and rec.annot_size != (height, width):
        ah, aw = rec.annot_size
        return fail(
            f"image is {width}x{height} (WxH) but its annotations are for {aw}x{ah}", **size
        )
    if training and not base["labels"] and not allow_empty_labels:
        return fail(NO_LABELS, **size)
    masks = None
    if rec.gt_masks is not None:
        try:
            masks = rec.gt_masks(height, width)
        except Exception as exc:  # pycocotools raises assorted types for broken polygons/RLE
            return fail(f"invalid segmentation: {exc}", **size)
    boxes = rec.gt_boxes if rec.gt_boxes is not None else np.zeros((0, 4), np.float32)
    return empty_row(
        TABLE,
        rec.image_id,
        rec.image_index,
        **base,
        **size,
        gt_boxes=np.asarray(boxes, dtype=np.float32).reshape(-1).tolist(),
        gt_classes=[int(c) for c in rec.gt_classes],
        gt_difficult=[bool(d) for d in rec.gt_difficult],
        gt_masks=masks,
    )


def check_unique_index(rows: Iterable[dict[str, Any]]) -> None:
    """Raise ``ValueError`` if two rows share an ``image_index`` (within or across splits)."""
    seen: dict[int, tuple[str, str]] = {}
    for row in rows:
        idx = int(row["image_index"])
        here = (str(row["split"]), str(row["image_id"]))
        if idx in seen:
            (s1, i1), (s2, i2) = seen[idx], here
            raise ValueError(
                f"image_index {idx} is used twice: split {s1!r} image {i1!r} and split {s2!r} "
                f"image {i2!r}; image indices must be unique across all splits (do two splits "
                "list the same images?)"
            )
        seen[idx] = here


_QUOTED = re.compile(r"('[^']*'|\"[^\"]*\")")


def error_kind(reason: str) -> str:
    """Group error reasons for counting: numbers outside quotes become ``#``.

    ``"image is 30000x30000 = 900000000 px, over the limit of 64000000"`` ->
    ``"image is #x# = # px, over the limit of #"``; ``"unknown class 'zebra'"`` stays as is.
    """
    parts = _QUOTED.split(reason)
    return "".join(p if i % 2 else re.sub(r"\d+", "#", p) for i, p in enumerate(parts))
