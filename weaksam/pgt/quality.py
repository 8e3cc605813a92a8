"""How good the pseudo ground truth is, against the hidden GT (evaluation only).

Matching is one-to-one per image and class: PGT boxes in decreasing score each take the
unmatched same-class GT box of highest IoU, when that IoU is ``>= iou``. Then

* ``precision`` = matched PGT boxes / PGT boxes (a PGT box matching a difficult GT object
  counts as matched);
* ``recall`` = matched non-difficult GT boxes / non-difficult GT boxes.

When every image has GT masks and every non-empty PGT has masks, ``mask_precision`` /
``mask_recall`` do the same with mask IoU.
Images with a PGT error row count their GT as missed. Nothing here feeds training.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from weaksam.eval.records import Detections, GroundTruth
from weaksam.geometry.boxes import box_iou
from weaksam.io.classes import ClassMap
from weaksam.io.rle import mask_iou


def match_one_to_one(
    ious: npt.NDArray[np.float32], order: npt.NDArray[np.int64], thresh: float
) -> npt.NDArray[np.int64]:
    """For ``N x M`` IoUs, the GT index matched by each of the ``N`` rows (``-1`` none),
    assigning rows in ``order`` to the best still-free column with IoU ``>= thresh``."""
    match = np.full(ious.shape[0], -1, dtype=np.int64)
    free = np.ones(ious.shape[1], dtype=bool)
    for i in order:
        if not free.any():
            break
        cand = np.where(free, ious[i], -1.0)
        j = int(cand.argmax())
        if cand[j] >= thresh:
            match[i], free[j] = j, False
    return match


def _counts(
    pgt: Detections, gt: GroundTruth, iou: float, use_masks: bool, num_classes: int
) -> npt.NDArray[np.int64]:
    """Per class: [PGT boxes, matched PGT, non-difficult GT, matched non-difficult GT]."""
    out = np.zeros((num_classes, 4), dtype=np.int64)
    for c in range(num_classes):
        p = np.flatnonzero(pgt.classes == c)
        g = np.flatnonzero(gt.classes == c)
        out[c, 0] = p.size
        out[c, 2] = int((~gt.difficult[g]).sum())
        if p.size == 0 or g.size == 0:
            continue
        if use_masks and pgt.masks is not None and gt.masks is not None:
            ious = mask_iou(
                [pgt.masks[i] for i in p], [gt.masks[j] for j in g], gt.height, gt.width
            )
        else:
            ious = box_iou(pgt.boxes[p], gt.boxes[g])
        order = np.argsort(-pgt.scores[p], kind="stable")
        match = match_one_to_one(ious, order, iou)
        hit = match[match >= 0]
        out[c, 1] = hit.size
        out[c, 3] = int((~gt.difficult[g[hit]]).sum())
    return out


def _ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def pgt_quality(
    pgt: Sequence[Detections],
    gts: Sequence[GroundTruth],
    classes: ClassMap,
    iou: float = 0.5,
) -> dict[str, Any]:
    """Precision and recall of ``pgt`` against ``gts`` (paired by ``image_id``).

    Returns ``{"precision", "recall", "pgt_boxes", "gt_boxes", "per_class": {name: {...}}}``
    plus ``mask_precision`` / ``mask_recall`` when every paired image has masks on both sides.
    """
    by_id = {d.image_id: d for d in pgt}
    c = classes.num_classes
    box = np.zeros((c, 4), dtype=np.int64)
    mask = np.zeros((c, 4), dtype=np.int64)
    with_masks = True
    for g in gts:
        d = by_id.get(g.image_id)
        if d is None:
            d = Detections.empty(g)
        box += _counts(d, g, iou, False, c)
        if g.masks is None or (len(d) and d.masks is None):
            with_masks = False
        elif with_masks:
            mask += _counts(d, g, iou, True, c)
    tot = box.sum(axis=0)
    out: dict[str, Any] = {
        "precision": _ratio(tot[1], tot[0]),
        "recall": _ratio(tot[3], tot[2]),
        "pgt_boxes": int(tot[0]),
        "gt_boxes": int(tot[2]),
        "pgt_per_image": float(tot[0]) / max(1, len(gts)),
        "iou": iou,
        "per_class": {
            name: {
                "precision": _ratio(box[k, 1], box[k, 0]),
                "recall": _ratio(box[k, 3], box[k, 2]),
            }
            for k, name in enumerate(classes.names)
        },
    }
    if with_masks and mask[:, 0].sum():
        mt = mask.sum(axis=0)
        out["mask_precision"] = _ratio(mt[1], mt[0])
        out["mask_recall"] = _ratio(mt[3], mt[2])
    return out
