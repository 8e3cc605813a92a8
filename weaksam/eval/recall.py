"""Class-agnostic proposal recall and average recall (mmdet ``eval_recalls`` rules).

For each image and each proposal budget ``N`` the first ``N`` proposals *in stored order*
are used (the proposals table's order; unlike mmdet, which re-sorts by score when scores
are given, so that a table written in generation order is measured as stored). Proposals
and GT are matched one-to-one greedily: repeatedly take the remaining (GT, proposal) pair of
highest IoU, record that IoU for the GT, and remove both; a GT left without a proposal gets
IoU 0. Recall at ``t`` is the fraction of GT whose matched IoU is ``>= t`` (mmdet's ``>=``);
average recall (AR) is the mean recall over ``t in 0.5:0.95:0.05``.

Classes are ignored on both sides. Difficult GT are included unless ``include_difficult`` is
``False``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from weaksam.eval.records import Detections, GroundTruth, align_detections
from weaksam.geometry.boxes import box_iou

DEFAULT_BUDGETS: tuple[int | None, ...] = (10, 20, 50, 100, 200, 500, 1000, None)
RECALL_IOUS: tuple[float, ...] = (0.5, 0.7, 0.9)
AR_IOUS: tuple[float, ...] = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))


@dataclass
class RecallResult:
    """Proposal recall.

    Attributes:
        recall_at: IoU threshold -> recall with all proposals.
        ar_curve: ``(N, AR)`` per budget; ``N is None`` means all proposals.
        proposals_per_image: mean number of proposals per image.
        num_gt: GT boxes counted; num_images: images evaluated.
    """

    recall_at: dict[float, float]
    ar_curve: list[tuple[int | None, float]]
    proposals_per_image: float
    num_gt: int
    num_images: int


def greedy_match_ious(iou: npt.ArrayLike) -> npt.NDArray[np.float32]:
    """One-to-one greedy matching of a ``G x P`` IoU matrix; returns the ``G`` matched IoUs.

    Repeatedly takes the highest remaining IoU (first in row-major order on ties), assigns it
    to that GT and removes the GT row and proposal column. GT left unmatched get 0.
    """
    m = np.array(iou, dtype=np.float32, copy=True)
    if m.ndim != 2:
        raise ValueError(f"iou must be GxP, got shape {m.shape}")
    out = np.zeros(m.shape[0], dtype=np.float32)
    for _ in range(min(m.shape)):
        g, p = np.unravel_index(int(np.argmax(m)), m.shape)
        if m[g, p] < 0:
            break
        out[g] = m[g, p]
        m[g, :] = -1.0
        m[:, p] = -1.0
    return out


def eval_recall(
    gts: Sequence[GroundTruth],
    proposals: Sequence[Detections],
    budgets: Sequence[int | None] = DEFAULT_BUDGETS,
    iou_thresholds: Sequence[float] = RECALL_IOUS,
    include_difficult: bool = True,
) -> RecallResult:
    """Recall at ``iou_thresholds`` with all proposals and the AR-vs-``N`` curve.

    Args:
        gts: ground truth per image (classes ignored).
        proposals: per image, in stored order; paired to ``gts`` by ``image_id``.
        budgets: proposal counts ``N`` per image; ``None`` = all.
        iou_thresholds: thresholds reported in ``recall_at``.
        include_difficult: count difficult GT boxes too (default, as mmdet).
    """
    aligned = align_detections(gts, proposals)
    thresholds = sorted({*map(float, iou_thresholds)})
    all_budgets: list[int | None] = [*budgets, None] if None not in budgets else list(budgets)
    matched: dict[int | None, list[npt.NDArray[np.float32]]] = {n: [] for n in all_budgets}
    num_props = 0
    for g, d in zip(gts, aligned, strict=True):
        num_props += len(d)
        boxes = g.boxes if include_difficult else g.boxes[~g.difficult]
        iou = box_iou(boxes, d.boxes)  # G x P, proposals in stored order
        for n in all_budgets:
            matched[n].append(greedy_match_ious(iou if n is None else iou[:, :n]))
    cat = {n: np.concatenate(v) if v else np.zeros(0, np.float32) for n, v in matched.items()}
    num_gt = int(cat[None].size)

    def recall(ious: npt.NDArray[np.float32], t: float) -> float:
        # compare in float32, the precision of the IoUs, so an exact IoU of t counts
        return float((ious >= np.float32(t)).sum() / num_gt) if num_gt else float("nan")

    return RecallResult(
        recall_at={t: recall(cat[None], t) for t in thresholds},
        ar_curve=[(n, float(np.mean([recall(cat[n], t) for t in AR_IOUS]))) for n in budgets],
        proposals_per_image=num_props / len(gts) if gts else 0.0,
        num_gt=num_gt,
        num_images=len(gts),
    )
