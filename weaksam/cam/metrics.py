"""Quality of the classification clues: multi-label mAP and peak-point precision / recall.

* Classification AP per class is the all-point (VOC2010+) AP of the images ranked by the
  class's score, :func:`weaksam.eval.voc_ap` with ``use_07_metric=False`` (the area under
  the monotone precision envelope); ties are broken by the stored order. A class with no
  positive image is left out of the mean.
* Point precision: the share of peak points that fall inside a ground-truth mask of their own
  class; point recall: the share of ground-truth objects with at least one point of their
  class inside their mask. Both read GT masks and are for evaluation only.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from weaksam.eval.voc import voc_ap


def average_precision(scores: npt.ArrayLike, targets: npt.ArrayLike) -> float:
    """All-point AP of ``N`` scores against ``N`` 0/1 targets; NaN when no target is 1."""
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    t = np.asarray(targets).reshape(-1).astype(bool)
    if s.shape != t.shape:
        raise ValueError(f"scores and targets differ in length: {s.size} vs {t.size}")
    npos = int(t.sum())
    if npos == 0:
        return float("nan")
    order = np.argsort(-s, kind="stable")
    tp = np.cumsum(t[order])
    rank = np.arange(1, len(s) + 1)
    return voc_ap(tp / npos, tp / rank, use_07_metric=False)


def multilabel_ap(scores: npt.ArrayLike, targets: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Per-class AP of ``NxC`` scores and ``NxC`` targets (NaN for classes without positives)."""
    s = np.asarray(scores, dtype=np.float64)
    t = np.asarray(targets)
    if s.ndim != 2 or s.shape != t.shape:
        raise ValueError(f"scores and targets must both be NxC, got {s.shape} and {t.shape}")
    return np.array([average_precision(s[:, c], t[:, c]) for c in range(s.shape[1])])


def mean_ap(per_class: npt.ArrayLike) -> float:
    """Mean of the finite per-class APs (NaN when none is finite)."""
    a = np.asarray(per_class, dtype=np.float64)
    a = a[np.isfinite(a)]
    return float(a.mean()) if a.size else float("nan")


def points_in_masks(
    points: npt.ArrayLike,
    point_classes: npt.ArrayLike,
    masks: npt.NDArray[np.bool_],
    mask_classes: npt.ArrayLike,
) -> npt.NDArray[np.bool_]:
    """Which points lie inside which same-class mask.

    Args:
        points: ``Px2`` ``(x, y)`` in pixels (continuous: pixel ``(r, c)`` spans
            ``[c, c + 1) x [r, r + 1)``). point_classes: ``P`` class ids.
        masks: ``KxHxW`` bool GT masks. mask_classes: ``K`` class ids.

    Returns:
        ``PxK`` bool: point ``p`` is inside mask ``k`` and has its class.
    """
    p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    pc = np.asarray(point_classes, dtype=np.int64).reshape(-1)
    mc = np.asarray(mask_classes, dtype=np.int64).reshape(-1)
    k = len(mc)
    if len(p) == 0 or k == 0:
        return np.zeros((len(p), k), dtype=bool)
    h, w = masks.shape[1:]
    cols = np.clip(np.floor(p[:, 0]).astype(np.int64), 0, w - 1)
    rows = np.clip(np.floor(p[:, 1]).astype(np.int64), 0, h - 1)
    inside = masks[:, rows, cols].T  # P x K
    return inside & (pc[:, None] == mc[None, :])


def point_hits(
    points: npt.ArrayLike,
    point_classes: npt.ArrayLike,
    masks: npt.NDArray[np.bool_],
    mask_classes: npt.ArrayLike,
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    """(``P`` bool: point inside a mask of its class, ``K`` bool: object got >= 1 point)."""
    m = points_in_masks(points, point_classes, masks, mask_classes)
    return np.asarray(m.any(axis=1), dtype=bool), np.asarray(m.any(axis=0), dtype=bool)


def ratio(hits: Sequence[npt.NDArray[np.bool_]]) -> float:
    """Share of ``True`` over several arrays; NaN when they hold nothing."""
    n = sum(int(h.size) for h in hits)
    return float(sum(int(h.sum()) for h in hits) / n) if n else float("nan")
