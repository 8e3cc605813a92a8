"""CorLoc: the fraction of images in which the top detection of a present class is correct.

Rules (detectron2 ``voc_eval_corloc`` as used by WeakSAM, "CorLoc50"), per class ``c``:

* The images counted are those with at least one non-difficult GT box of class ``c``.
* In each, take the single highest-scoring detection of class ``c`` (first in stored order on
  ties); an image with none is a miss.
* It is a hit when its box IoU with *any* GT box of class ``c`` in the image (difficult ones
  included) is strictly greater than ``iou_thresh`` (0.5; continuous-convention IoU, equal to
  the devkit's "+1" IoU).
* ``CorLoc_c = hits / images``; NaN for classes that occur in no image. The mean is over the
  classes that occur.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from weaksam.eval.records import Detections, GroundTruth, align_detections
from weaksam.eval.voc import nanmean
from weaksam.geometry.boxes import box_iou


@dataclass
class CorLocResult:
    """Attributes: ``per_class`` (``C``, NaN where absent), ``corloc`` (mean over present
    classes), ``hits`` and ``num_images`` (``C`` counts), ``iou_thresh``."""

    per_class: npt.NDArray[np.float64]
    corloc: float
    hits: npt.NDArray[np.int64]
    num_images: npt.NDArray[np.int64]
    iou_thresh: float


def eval_corloc(
    gts: Sequence[GroundTruth],
    dets: Sequence[Detections],
    num_classes: int,
    iou_thresh: float = 0.5,
) -> CorLocResult:
    """CorLoc per class and its mean (rules in the module docstring).

    Args:
        gts: ground truth per image.
        dets: detections paired to ``gts`` by ``image_id``; only class ids matter.
        num_classes: ``C``.
        iou_thresh: a hit needs IoU ``> iou_thresh``.
    """
    aligned = align_detections(gts, dets)
    hits = np.zeros(num_classes, dtype=np.int64)
    images = np.zeros(num_classes, dtype=np.int64)
    for g, d in zip(gts, aligned, strict=True):
        present = np.unique(g.classes[~g.difficult])
        for c in present[(present >= 0) & (present < num_classes)]:
            images[c] += 1
            di = np.flatnonzero(d.classes == c)
            if di.size == 0:
                continue
            top = di[int(np.argmax(d.scores[di]))]
            iou = box_iou(d.boxes[top : top + 1], g.boxes[g.classes == c])
            hits[c] += int(iou.max() > iou_thresh)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = np.where(images > 0, hits / np.maximum(images, 1), np.nan)
    return CorLocResult(
        per_class=per_class.astype(np.float64),
        corloc=nanmean(per_class),
        hits=hits,
        num_images=images,
        iou_thresh=float(iou_thresh),
    )
