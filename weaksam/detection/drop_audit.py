"""Whom RoI drop removes: the drop criterion's RoIs set against the ground truth (a diagnostic).

RoI drop (:mod:`weaksam.detection.roi_drop`) is meant to remove the foreground RoIs of *wrong*
pseudo boxes: a PGT box that covers no object, half of one or two, makes RoIs whose class and
box losses both stay high. Whether it does is a question for the ground truth, which training
never reads. This module asks it after training, on the training split: a retrained Faster
R-CNN checkpoint samples RoIs against each image's PGT boxes as in training (its RPN's
proposals, test-time count, plus the PGT boxes; torchvision's matcher and sampler; no flips,
at its test size), computes every foreground RoI's classification and box losses
(:func:`~weaksam.detection.roi_drop.per_roi_losses`), and tags the RoI with whether its PGT box
is *correct*: IoU >= 0.5 with a ground-truth box of the same class. :func:`audit_rows` then
says, per threshold pair, how many foreground RoIs are over both thresholds and what share of
them belong to wrong PGT boxes, against that share over all foreground RoIs (the base rate):
a rule that targets noise removes RoIs of wrong boxes at a higher rate than the base rate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from weaksam.detection.roi_drop import per_roi_losses
from weaksam.geometry.boxes import box_iou

__all__ = ["ForegroundRoIs", "audit_rows", "correct_boxes", "foreground_rois"]


@dataclass(frozen=True)
class ForegroundRoIs:
    """The sampled foreground RoIs of a batch.

    Attributes:
        image: ``P`` index of the RoI's image in the batch.
        target: ``P`` index of its matched PGT box in that image's targets.
        ce / l1: ``P`` classification loss and the criterion's L1 box loss.
    """

    image: npt.NDArray[np.int64]
    target: npt.NDArray[np.int64]
    ce: npt.NDArray[np.float64]
    l1: npt.NDArray[np.float64]


def correct_boxes(
    boxes: npt.ArrayLike,
    classes: npt.ArrayLike,
    gt_boxes: npt.ArrayLike,
    gt_classes: npt.ArrayLike,
    iou: float = 0.5,
) -> npt.NDArray[np.bool_]:
    """``G`` bool: each box (``Gx4`` XYXY, class ids ``G``) overlaps a ground-truth box of its
    class (``Tx4``, ``T``) with IoU >= ``iou``."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    g = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4)
    c = np.asarray(classes).reshape(-1)
    gc = np.asarray(gt_classes).reshape(-1)
    if not len(b) or not len(g):
        return np.zeros(len(b), dtype=bool)
    same = c[:, None] == gc[None, :]
    return np.asarray(((box_iou(b, g) >= iou) & same).any(axis=1), dtype=bool)


@torch.no_grad()
def foreground_rois(
    model: nn.Module, images: list[torch.Tensor], targets: list[dict[str, torch.Tensor]]
) -> ForegroundRoIs:
    """Sample RoIs against ``targets`` as a training step would and return the foreground
    ones' losses (the model stays in eval mode: its RPN gives test-time proposals, BatchNorm
    its running statistics). ``model``: a torchvision ``GeneralizedRCNN`` (Faster / Mask R-CNN);
    ``images``: ``3xHxW`` floats in ``[0, 1]``; ``targets``: ``boxes`` (``Gx4`` original
    pixels) and ``labels`` (``1..C``)."""
    model.eval()
    rcnn: Any = model  # torchvision's GeneralizedRCNN parts, untyped there
    heads = rcnn.roi_heads
    batch, scaled = rcnn.transform(images, [dict(t) for t in targets])
    features = rcnn.backbone(batch.tensors)
    proposals, _ = rcnn.rpn(batch, features)
    proposals, matched, labels, reg_targets = heads.select_training_samples(proposals, scaled)
    box_features = heads.box_head(heads.box_roi_pool(features, proposals, batch.image_sizes))
    class_logits, box_regression = heads.box_predictor(box_features)
    losses = per_roi_losses(
        class_logits, box_regression, torch.cat(labels), torch.cat(reg_targets, 0)
    )
    image = torch.cat([torch.full_like(m, i) for i, m in enumerate(matched)])
    pos = losses.pos
    return ForegroundRoIs(
        image[pos].numpy().astype(np.int64),
        torch.cat(matched)[pos].numpy().astype(np.int64),
        losses.ce[pos].double().numpy(),
        losses.l1.double().numpy(),
    )


def audit_rows(
    correct: npt.ArrayLike,
    ce: npt.ArrayLike,
    l1: npt.ArrayLike,
    pairs: Sequence[tuple[float, float]],
) -> list[dict[str, Any]]:
    """One row per ``(thresh_cls, thresh_reg)`` pair over the foreground RoIs (``P`` each:
    whether the RoI's PGT box is correct, its two losses): how many are over both thresholds
    (what drop would remove), over each, and the share of wrong-box RoIs among those over both
    (``wrong_share``) against the base rate over all (``base_wrong_share``); ``recall_wrong``:
    the share of all wrong-box RoIs that drop would remove, ``removed_correct``: correct-box
    RoIs it would remove."""
    ok = np.asarray(correct, dtype=bool).reshape(-1)
    c = np.asarray(ce, dtype=np.float64).reshape(-1)
    r = np.asarray(l1, dtype=np.float64).reshape(-1)
    if not (len(ok) == len(c) == len(r)):
        raise ValueError(f"correct, ce and l1 differ in length: {len(ok)}, {len(c)}, {len(r)}")
    wrong = ~ok
    n_wrong = int(wrong.sum())
    rows = []
    for tc, tr in pairs:
        over_cls, over_reg = c > tc, r > tr
        both = over_cls & over_reg
        n_both = int(both.sum())
        rows.append(
            {
                "thresh_cls": float(tc),
                "thresh_reg": float(tr),
                "foreground": len(ok),
                "over_cls": int(over_cls.sum()),
                "over_reg": int(over_reg.sum()),
                "over_both": n_both,
                "removed_wrong": int((both & wrong).sum()),
                "removed_correct": int((both & ok).sum()),
                "wrong_share": float((both & wrong).sum() / n_both) if n_both else None,
                "base_wrong_share": float(n_wrong / len(ok)) if len(ok) else None,
                "recall_wrong": float((both & wrong).sum() / n_wrong) if n_wrong else None,
            }
        )
    return rows
