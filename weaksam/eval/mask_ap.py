"""VOC-style instance-segmentation AP at several mask IoU thresholds (AP25/50/70/75).

The weakly-supervised instance segmentation protocol on VOC2012 val (BESTIE, IRN; the
numbers WeakSAM reports) is chainercv's ``eval_instance_segmentation_voc``: all-point AP,
mask IoU, and a hit when the IoU is ``>= t``. We keep chainercv's ``>=`` so the numbers are
comparable with those papers (box AP in :mod:`weaksam.eval.voc` keeps the devkit's ``>``).

Otherwise the matching is that of :mod:`weaksam.eval.voc`: per class, detections sorted by
score (stable), each takes the GT mask of max IoU in its image; difficult -> ignored, already
matched -> FP (duplicate), below threshold or no GT -> FP. Mask IoU is
:func:`weaksam.io.rle.mask_iou` on the RLEs, sized by the GT image; the IoU matrices are
computed once for all thresholds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from weaksam.eval.records import Detections, GroundTruth
from weaksam.eval.voc import F64, ap_from_curves, nanmean, pr_curves
from weaksam.io.rle import mask_iou

MASK_IOUS: tuple[float, ...] = (0.25, 0.5, 0.7, 0.75)


@dataclass
class MaskAPResult:
    """Attributes: ``thresholds`` (``T``), ``ap`` (threshold -> mean over classes with GT),
    ``per_class`` (``T x C``, NaN for classes without non-difficult GT), ``npos`` (``C``)."""

    thresholds: tuple[float, ...]
    ap: dict[float, float]
    per_class: npt.NDArray[np.float64]
    npos: npt.NDArray[np.int64]


def _mask_iou(
    gt: GroundTruth, det: Detections, di: npt.NDArray[np.intp], gi: npt.NDArray[np.intp]
) -> npt.NDArray[np.float32]:
    if gt.masks is None or det.masks is None:
        raise ValueError(f"image {gt.image_id!r}: mask AP needs masks")
    return mask_iou([det.masks[i] for i in di], [gt.masks[j] for j in gi], gt.height, gt.width)


def _check_masks(gts: Sequence[GroundTruth], dets: Sequence[Detections]) -> None:
    if any(g.masks is None for g in gts):
        raise ValueError("mask AP needs ground-truth masks for every image")
    if any(d.masks is None for d in dets if len(d)):
        raise ValueError("mask AP needs a mask for every detection")


def mask_pr_curves(
    gts: Sequence[GroundTruth],
    dets: Sequence[Detections],
    num_classes: int,
    iou_thresh: float = 0.5,
) -> tuple[list[F64], list[F64], npt.NDArray[np.int64]]:
    """Per-class precision-recall curves of mask detections at one mask IoU threshold.

    The matching of :func:`eval_mask_ap` (a hit needs mask IoU ``>= iou_thresh``). Returns
    ``(precision[c], recall[c], npos[c])``: per class, ``K_c`` float64 values over its
    detections sorted by score (ignored ones dropped; empty without detections; recall NaN
    where ``npos == 0``). ``voc_ap(recall[c], precision[c], False)`` is that class's AP.
    """
    _check_masks(gts, dets)
    precs, recs, npos = pr_curves(
        gts, dets, num_classes, [iou_thresh], iou_fn=_mask_iou, strict=False
    )
    return precs[0], recs[0], npos


def eval_mask_ap(
    gts: Sequence[GroundTruth],
    dets: Sequence[Detections],
    num_classes: int,
    thresholds: Sequence[float] = MASK_IOUS,
    use_07_metric: bool = False,
) -> MaskAPResult:
    """Instance-segmentation AP per mask IoU threshold and class.

    Args:
        gts: ground truth with masks (``ValueError`` if an image has none).
        dets: detections with masks (``ValueError`` if a non-empty record has none), paired to
            ``gts`` by ``image_id``; masks sized ``(gt.height, gt.width)``.
        num_classes: ``C``.
        thresholds: mask IoU thresholds; a hit needs IoU ``>= t``.
        use_07_metric: 11-point AP instead of chainercv's default all-point AP.
    """
    _check_masks(gts, dets)
    precs, recs, npos = pr_curves(
        gts, dets, num_classes, thresholds, iou_fn=_mask_iou, strict=False
    )
    per_class = (
        np.stack(
            [ap_from_curves(p, r, npos, use_07_metric) for p, r in zip(precs, recs, strict=True)]
        )
        if len(thresholds)
        else np.zeros((0, num_classes))
    )
    return MaskAPResult(
        thresholds=tuple(float(t) for t in thresholds),
        ap={float(t): nanmean(per_class[k]) for k, t in enumerate(thresholds)},
        per_class=per_class,
        npos=npos,
    )
