"""In-memory per-image records that every evaluator reads.

Boxes are ``Nx4`` float32 ``XYXY`` in pixels of the original image, continuous convention
(:mod:`weaksam.geometry.boxes`); masks are COCO compressed-RLE ``counts`` bytes sized
``(height, width)`` of the image (:mod:`weaksam.io.rle`); class ids are 0-based project ids
(:class:`weaksam.io.classes.ClassMap`), ``-1`` meaning class-agnostic (proposals).

Ground truth and detections are paired by ``image_id``: :func:`align_detections` returns one
:class:`Detections` per ground-truth image, in ground-truth order (empty where an image has
none), and raises :class:`IdMismatchError` for detections of images that are not in the GT.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from weaksam.geometry.boxes import as_boxes
from weaksam.io.classes import ClassMap

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


class IdMismatchError(ValueError):
    """Detections name images (or sizes) that the ground truth does not have."""


def _check_len(name: str, n: int, expected: int, image_id: str) -> None:
    if n != expected:
        raise ValueError(f"image {image_id!r}: {name} has {n} entries, boxes have {expected}")


@dataclass
class GroundTruth:
    """The annotated objects of one image.

    Attributes:
        image_id: the dataset's own id (string).
        image_index: unique integer id (the COCO ``image_id`` on export).
        height, width: image size in pixels; the size of every mask.
        boxes: ``Nx4`` float32 XYXY, continuous convention.
        classes: ``N`` int64 project class ids.
        difficult: ``N`` bool; difficult (VOC) or crowd (COCO) objects, ignored by the metrics.
        masks: ``N`` RLE counts bytes, or ``None`` when the dataset has no masks.
        areas: optional ``N`` float32 object areas for COCO's small/medium/large ranges (the
            COCO json's ``area``); when ``None`` the mask area (else the box area) is used.
    """

    image_id: str
    image_index: int
    height: int
    width: int
    boxes: FloatArray
    classes: IntArray
    difficult: BoolArray
    masks: list[bytes] | None = None
    areas: FloatArray | None = None

    def __post_init__(self) -> None:
        self.boxes = as_boxes(self.boxes)
        n = len(self.boxes)
        self.classes = np.asarray(self.classes, dtype=np.int64).reshape(-1)
        _check_len("classes", len(self.classes), n, self.image_id)
        self.difficult = np.asarray(self.difficult, dtype=bool).reshape(-1)
        _check_len("difficult", len(self.difficult), n, self.image_id)
        if self.masks is not None:
            self.masks = [bytes(m) for m in self.masks]
            _check_len("masks", len(self.masks), n, self.image_id)
        if self.areas is not None:
            self.areas = np.asarray(self.areas, dtype=np.float32).reshape(-1)
            _check_len("areas", len(self.areas), n, self.image_id)

    def __len__(self) -> int:
        return len(self.boxes)


@dataclass
class Detections:
    """The scored predictions (detections or proposals) of one image.

    Attributes:
        image_id: the dataset's own id, as in :class:`GroundTruth`.
        boxes: ``Nx4`` float32 XYXY, continuous convention.
        scores: ``N`` float32 confidences (higher is better).
        classes: ``N`` int64 project class ids; ``-1`` for class-agnostic proposals.
        masks: ``N`` RLE counts bytes sized ``(height, width)``, or ``None``.
        image_index: the integer id (COCO ``image_id``); ``-1`` when unknown.
        height, width: image size, needed to export masks; ``0`` when unknown.

    The stored order is kept: proposal recall takes the first ``N`` in this order.
    """

    image_id: str
    boxes: FloatArray
    scores: FloatArray
    classes: IntArray
    masks: list[bytes] | None = None
    image_index: int = -1
    height: int = 0
    width: int = 0

    def __post_init__(self) -> None:
        self.boxes = as_boxes(self.boxes)
        n = len(self.boxes)
        self.scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        _check_len("scores", len(self.scores), n, self.image_id)
        self.classes = np.asarray(self.classes, dtype=np.int64).reshape(-1)
        _check_len("classes", len(self.classes), n, self.image_id)
        if self.masks is not None:
            self.masks = [bytes(m) for m in self.masks]
            _check_len("masks", len(self.masks), n, self.image_id)

    def __len__(self) -> int:
        return len(self.boxes)

    @classmethod
    def empty(cls, gt: GroundTruth) -> Detections:
        """No detections for the image of ``gt``."""
        return cls(
            image_id=gt.image_id,
            boxes=np.zeros((0, 4), np.float32),
            scores=np.zeros(0, np.float32),
            classes=np.zeros(0, np.int64),
            masks=None,
            image_index=gt.image_index,
            height=gt.height,
            width=gt.width,
        )


@dataclass
class GroundTruthSet:
    """Ground truth of a dataset split with its classes.

    Attributes:
        records: one :class:`GroundTruth` per evaluated image.
        classes: the class map (names, source ids).
        skipped: ``image_id -> reason`` for images left out (error rows, no annotations).
    """

    records: list[GroundTruth]
    classes: ClassMap
    skipped: dict[str, str] = field(default_factory=dict)


@dataclass
class DetectionSet:
    """Detections loaded from a file.

    Attributes:
        records: one :class:`Detections` per image that has a row / results.
        kind: ``"detections"``, ``"proposals"`` (class-agnostic) or ``"pgt"``.
        errors: ``image_id -> reason`` for error rows (their detections are empty).
        classes: the class map stored with the detections, when the file has one.
    """

    records: list[Detections]
    kind: str = "detections"
    errors: dict[str, str] = field(default_factory=dict)
    classes: ClassMap | None = None


def align_detections(
    gts: Sequence[GroundTruth], dets: Sequence[Detections], check_size: bool = True
) -> list[Detections]:
    """One :class:`Detections` per ground-truth image, in ``gts`` order, paired by ``image_id``.

    Images of ``gts`` without detections get empty ones (so all their GT are misses).
    Raises :class:`IdMismatchError` when a detection names an image not in ``gts``, when an
    image has two detection records, or (``check_size``) when a record with masks has a known
    size different from the GT image's.
    """
    index = {g.image_id: i for i, g in enumerate(gts)}
    if len(index) != len(gts):
        raise ValueError("ground truth has duplicate image ids")
    out: list[Detections | None] = [None] * len(gts)
    unknown: list[str] = []
    for d in dets:
        i = index.get(d.image_id)
        if i is None:
            unknown.append(d.image_id)
            continue
        if out[i] is not None:
            raise IdMismatchError(f"image {d.image_id!r} has more than one detection record")
        g = gts[i]
        if check_size and d.masks and d.height and (d.height, d.width) != (g.height, g.width):
            raise IdMismatchError(
                f"image {d.image_id!r}: detections sized {d.height}x{d.width}, "
                f"ground truth {g.height}x{g.width}"
            )
        out[i] = d
    if unknown:
        shown = ", ".join(repr(u) for u in unknown[:5])
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        raise IdMismatchError(
            f"{len(unknown)} detection image ids are not in the ground truth: {shown}{more}"
        )
    return [d if d is not None else Detections.empty(g) for d, g in zip(out, gts, strict=True)]


def num_missing(gts: Sequence[GroundTruth], dets: Sequence[Detections]) -> int:
    """How many ground-truth images have no detection record at all."""
    have = {d.image_id for d in dets}
    return sum(g.image_id not in have for g in gts)
