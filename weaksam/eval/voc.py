"""Pascal VOC detection AP (the VOC devkit / py-faster-rcnn ``voc_eval`` rules).

Matching, per class and IoU threshold ``t``:

1. The detections of the class in all images are sorted by score, descending, with a stable
   sort (ties keep image order, then the stored order within the image).
2. Each detection, in that order, takes the ground-truth box of the class in its image with
   the highest IoU, over *all* of them, matched or not (``argmax``; the first on ties).
3. If that IoU is ``> t`` (strictly greater, as the devkit's ``ovmax > ovthresh``):
   a difficult GT -> the detection is ignored (neither TP nor FP);
   an unmatched GT -> TP and the GT becomes matched; an already matched GT -> FP (duplicate).
   Otherwise (IoU ``<= t``, or no GT of the class in the image) -> FP.
4. ``npos`` counts the non-difficult GT of the class; recall = TP / npos,
   precision = TP / (TP + FP).

Boxes use the continuous convention, so the IoU here equals the devkit's "+1" IoU on the
VOC boxes they were converted from. Ignored detections are dropped from the PR arrays; they
would repeat the previous point and leave the AP unchanged.

Classes with no non-difficult GT get AP NaN and are left out of the mean; a class with GT
but no detections gets AP 0.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from weaksam.eval.records import Detections, GroundTruth, align_detections
from weaksam.geometry.boxes import box_iou

F64 = npt.NDArray[np.float64]
# (gt, dets, det_index, gt_index) -> IoU matrix of shape len(det_index) x len(gt_index)
IouFn = Callable[
    [GroundTruth, Detections, npt.NDArray[np.intp], npt.NDArray[np.intp]], npt.NDArray[np.floating]
]


def voc_ap(recall: npt.ArrayLike, precision: npt.ArrayLike, use_07_metric: bool = True) -> float:
    """Average precision of a PR curve, as the VOC devkit's ``voc_ap``.

    Args:
        recall: ``K`` recalls, non-decreasing (cumulative over score-sorted detections).
        precision: ``K`` precisions at the same points.
        use_07_metric: ``True``: VOC2007 11-point AP, the mean over
            ``t in np.arange(0, 1.1, 0.1)`` of the maximum precision at recall ``>= t``
            (0 when no point reaches ``t``). The thresholds are the devkit's floats
            (``0.30000000000000004`` ...), kept so numbers match it exactly.
            ``False``: all-point AP (VOC2010+), the area under the monotone (right-to-left
            running maximum) precision envelope.

    Returns:
        AP in ``[0, 1]``; an empty curve gives 0.
    """
    rec = np.asarray(recall, dtype=np.float64).reshape(-1)
    prec = np.asarray(precision, dtype=np.float64).reshape(-1)
    if rec.shape != prec.shape:
        raise ValueError(f"recall and precision differ in length: {rec.size} vs {prec.size}")
    if use_07_metric:
        points = [prec[rec >= t].max() if (rec >= t).any() else 0.0 for t in np.arange(0, 1.1, 0.1)]
        return float(np.sum(points) / 11.0)
    mrec = np.concatenate(([0.0], rec, [1.0]))
    mpre = np.concatenate(([0.0], prec, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    i = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


@dataclass
class VOCResult:
    """VOC AP at one IoU threshold.

    Attributes:
        ap: ``C`` per-class AP; NaN for classes without non-difficult GT.
        map: nanmean of ``ap`` (NaN when no class has GT).
        precision, recall: per class, the PR curve over score-sorted detections (ignored ones
            dropped); empty arrays for classes without detections.
        npos: ``C`` non-difficult GT counts.
        iou_thresh, use_07_metric: the settings used.
    """

    ap: F64
    map: float
    precision: list[F64]
    recall: list[F64]
    npos: npt.NDArray[np.int64]
    iou_thresh: float
    use_07_metric: bool


def _box_iou(
    gt: GroundTruth, det: Detections, di: npt.NDArray[np.intp], gi: npt.NDArray[np.intp]
) -> npt.NDArray[np.floating]:
    return box_iou(det.boxes[di], gt.boxes[gi])


def pr_curves(
    gts: Sequence[GroundTruth],
    dets: Sequence[Detections],
    num_classes: int,
    iou_thresholds: Sequence[float],
    iou_fn: IouFn = _box_iou,
    strict: bool = True,
) -> tuple[list[list[F64]], list[list[F64]], npt.NDArray[np.int64]]:
    """PR curves per threshold and class with the matching rules of this module.

    Args:
        gts, dets: records; dets are paired to gts by ``image_id`` (:func:`align_detections`).
        num_classes: ``C``; detections of other classes (e.g. ``-1``) are not evaluated.
        iou_thresholds: ``T`` thresholds; the IoU matrices are computed once for all.
        iou_fn: IoU between the selected detections and GT of one image (box or mask).
        strict: a hit needs IoU ``> t`` (devkit) when ``True``, ``>= t`` (chainercv) otherwise.

    Returns:
        ``(precision[t][c], recall[t][c], npos[c])``.
    """
    aligned = align_detections(gts, dets)
    npos = np.zeros(num_classes, dtype=np.int64)
    for g in gts:
        valid = (g.classes >= 0) & (g.classes < num_classes) & ~g.difficult
        npos += np.bincount(g.classes[valid], minlength=num_classes)[:num_classes]
    precs: list[list[F64]] = [[] for _ in iou_thresholds]
    recs: list[list[F64]] = [[] for _ in iou_thresholds]
    for c in range(num_classes):
        per_det = _best_matches(gts, aligned, c, iou_fn)
        for k, t in enumerate(iou_thresholds):
            p, r = _match_class(*per_det, int(npos[c]), np.float32(t), strict)
            precs[k].append(p)
            recs[k].append(r)
    return precs, recs, npos


def _best_matches(
    gts: Sequence[GroundTruth], dets: Sequence[Detections], c: int, iou_fn: IouFn
) -> tuple[
    npt.NDArray[np.int64],
    npt.NDArray[np.float32],
    npt.NDArray[np.int64],
    npt.NDArray[np.float32],
    npt.NDArray[np.bool_],
]:
    """Per detection of class ``c`` over all images: image position, score, best GT index
    (argmax IoU over *all* GT of ``c`` in the image, matched or not; -1 if none), that IoU
    (``-inf`` if none) and whether that GT is difficult. The IoUs do not depend on the
    threshold, so they are computed once."""
    image, scores, best, best_iou, best_diff = [], [], [], [], []
    for i, (g, d) in enumerate(zip(gts, dets, strict=True)):
        di = np.flatnonzero(d.classes == c)
        if di.size == 0:
            continue
        gi = np.flatnonzero(g.classes == c)
        image.append(np.full(di.size, i, dtype=np.int64))
        scores.append(d.scores[di].astype(np.float32))
        if gi.size == 0:
            best.append(np.full(di.size, -1, dtype=np.int64))
            best_iou.append(np.full(di.size, -np.inf, dtype=np.float32))
            best_diff.append(np.zeros(di.size, dtype=bool))
            continue
        iou = np.asarray(iou_fn(g, d, di, gi), dtype=np.float32)
        j = iou.argmax(axis=1)
        best.append(j.astype(np.int64))
        best_iou.append(iou[np.arange(di.size), j])
        best_diff.append(g.difficult[gi][j])
    return (
        np.concatenate(image) if image else np.zeros(0, np.int64),
        np.concatenate(scores) if scores else np.zeros(0, np.float32),
        np.concatenate(best) if best else np.zeros(0, np.int64),
        np.concatenate(best_iou) if best_iou else np.zeros(0, np.float32),
        np.concatenate(best_diff) if best_diff else np.zeros(0, bool),
    )


def _match_class(
    image: npt.NDArray[np.int64],
    scores: npt.NDArray[np.float32],
    best: npt.NDArray[np.int64],
    best_iou: npt.NDArray[np.float32],
    best_diff: npt.NDArray[np.bool_],
    npos: int,
    thresh: np.float32,
    strict: bool,
) -> tuple[F64, F64]:
    """PR curve of one class; the inputs are per detection (see :func:`pr_curves`).

    IoUs are float32 and compared with a float32 threshold so exact values behave. Since each
    detection's GT is fixed (the argmax over all GT), processing in score order is the same
    as: a hit on a non-difficult GT is a TP iff it is the first detection on that GT.
    """
    order = np.argsort(-scores, kind="stable")
    ov, diff = best_iou[order], best_diff[order]
    hit = ov > thresh if strict else ov >= thresh
    keep = ~(hit & diff)  # detections whose best GT is difficult are ignored
    cand = np.flatnonzero(hit & ~diff)
    tp = np.zeros(order.size, dtype=bool)
    if cand.size:
        key = image[order][cand].astype(np.int64) * (int(best.max()) + 1) + best[order][cand]
        _, first = np.unique(key, return_index=True)
        tp[cand[first]] = True
    tp = tp[keep]
    tp_cum = np.cumsum(tp).astype(np.float64)
    fp_cum = np.cumsum(~tp).astype(np.float64)
    prec = tp_cum / np.maximum(tp_cum + fp_cum, np.finfo(np.float64).eps)
    rec = tp_cum / npos if npos > 0 else np.full(tp_cum.shape, np.nan)
    return prec, rec


def ap_from_curves(
    precision: Sequence[F64], recall: Sequence[F64], npos: npt.ArrayLike, use_07_metric: bool
) -> F64:
    """Per-class AP from :func:`pr_curves` output; NaN where ``npos == 0``."""
    n = np.asarray(npos)
    ap = np.full(len(precision), np.nan, dtype=np.float64)
    for c, (p, r) in enumerate(zip(precision, recall, strict=True)):
        if n[c] > 0:
            ap[c] = voc_ap(r, p, use_07_metric)
    return ap


def nanmean(values: npt.ArrayLike) -> float:
    """Mean over the finite entries; NaN (without a warning) when there are none."""
    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    return float(v.mean()) if v.size else float("nan")


def eval_detection_voc(
    gts: Sequence[GroundTruth],
    dets: Sequence[Detections],
    num_classes: int,
    iou_thresh: float = 0.5,
    use_07_metric: bool = True,
) -> VOCResult:
    """Pascal VOC box AP per class and its mean, with the devkit's rules (module docstring).

    Args:
        gts: ground truth per image; difficult boxes are ignored and not counted in npos.
        dets: detections, paired to ``gts`` by ``image_id``; classes outside ``[0, C)`` are
            not evaluated. Images without GT still count: their detections are FPs.
        num_classes: ``C``.
        iou_thresh: a hit needs box IoU strictly greater than this (devkit ``>``).
        use_07_metric: 11-point (VOC2007) AP when ``True``, all-point AP otherwise.
    """
    precs, recs, npos = pr_curves(gts, dets, num_classes, [iou_thresh])
    ap = ap_from_curves(precs[0], recs[0], npos, use_07_metric)
    return VOCResult(
        ap=ap,
        map=nanmean(ap),
        precision=precs[0],
        recall=recs[0],
        npos=npos,
        iou_thresh=float(iou_thresh),
        use_07_metric=use_07_metric,
    )
