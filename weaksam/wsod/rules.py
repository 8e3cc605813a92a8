"""Pseudo-labelling rules of the refinement branches (pure functions, torch).

Both rules turn one image's RoI scores into per-RoI training targets for the next branch:
a label in ``0..C`` (0 = background, ``c + 1`` = class ``c``), a weight, and for MIST the
index of the assigned pseudo box (for regression targets).

Shapes: ``boxes`` ``Rx4`` XYXY (continuous convention), ``scores`` ``RxC`` (no background
column), ``image_labels`` a 1-D tensor of the image's class ids (0-based).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchvision.ops import box_iou, nms


@dataclass(frozen=True)
class PseudoBoxes:
    """Pseudo ground truth picked from RoIs.

    ``boxes`` ``Gx4``, ``classes`` ``G`` (0-based), ``scores`` ``G``.
    """

    boxes: torch.Tensor
    classes: torch.Tensor
    scores: torch.Tensor


@dataclass(frozen=True)
class RoiTargets:
    """Per-RoI targets and the pseudo boxes they were assigned from.

    ``labels`` ``R`` (0 = background), ``weights`` ``R``, ``gt_index`` ``R`` (-1 = none).
    """

    labels: torch.Tensor
    weights: torch.Tensor
    gt_index: torch.Tensor
    pseudo: PseudoBoxes


def oicr_pseudo_boxes(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    image_labels: torch.Tensor,
    ratio: float = 0.9,
    nms_iou: float = 0.5,
) -> PseudoBoxes:
    """WSOD2's OICR variant: per labelled class, every RoI with ``p_c >= ratio * max p_c``;
    then class-agnostic NMS at ``nms_iou`` over all candidates by score."""
    cand_idx, cand_cls, cand_score = [], [], []
    for c in image_labels.tolist():
        s = scores[:, c]
        keep = torch.nonzero(s >= ratio * s.max()).flatten()
        cand_idx.append(keep)
        cand_cls.append(torch.full_like(keep, c))
        cand_score.append(s[keep])
    if not cand_idx:
        return _empty_pseudo(boxes)
    idx, cls, sc = torch.cat(cand_idx), torch.cat(cand_cls), torch.cat(cand_score)
    keep = nms(boxes[idx].float(), sc.float(), nms_iou)
    return PseudoBoxes(boxes[idx[keep]], cls[keep], sc[keep])


def mist_pseudo_boxes(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    image_labels: torch.Tensor,
    top_ratio: float = 0.15,
    iou_thresh: float = 0.2,
) -> PseudoBoxes:
    """MIST: per labelled class, the top ``int(top_ratio * R)`` RoIs by that class's score
    (1 when ``R < 10``, at least 1); candidate ``j`` is kept iff its IoU with every
    higher-ranked candidate is ``< iou_thresh`` (the top-1 is always kept)."""
    r = boxes.shape[0]
    k = 1 if r < 10 else max(1, int(top_ratio * r))
    out_b, out_c, out_s = [], [], []
    for c in image_labels.tolist():
        s, order = scores[:, c].sort(descending=True, stable=True)
        s, order = s[:k], order[:k]
        top = boxes[order]
        iou = box_iou(top.float(), top.float()).triu(diagonal=1)  # [i, j] for i < j
        keep = iou.max(dim=0).values < iou_thresh
        keep[0] = True  # the top-1 has no higher-ranked candidate
        out_b.append(top[keep])
        out_c.append(torch.full((int(keep.sum()),), c, dtype=torch.long))
        out_s.append(s[keep])
    if not out_b:
        return _empty_pseudo(boxes)
    return PseudoBoxes(torch.cat(out_b), torch.cat(out_c), torch.cat(out_s))


def assign_rois(boxes: torch.Tensor, pseudo: PseudoBoxes, fg_iou: float = 0.5) -> RoiTargets:
    """Assign each RoI to its max-IoU pseudo box: label ``class + 1`` if IoU ``>= fg_iou``
    else background; weight = that pseudo box's score (background RoIs are weighted too)."""
    r = boxes.shape[0]
    if pseudo.boxes.shape[0] == 0:
        zeros = torch.zeros(r, dtype=torch.long, device=boxes.device)
        return RoiTargets(zeros, torch.zeros(r, device=boxes.device), zeros - 1, pseudo)
    iou = box_iou(boxes.float(), pseudo.boxes.float())
    best_iou, gt = iou.max(dim=1)
    labels = torch.where(best_iou >= fg_iou, pseudo.classes[gt] + 1, torch.zeros_like(gt))
    weights = pseudo.scores[gt].detach().float()
    return RoiTargets(labels, weights, gt, pseudo)


def _empty_pseudo(boxes: torch.Tensor) -> PseudoBoxes:
    return PseudoBoxes(
        boxes.new_zeros((0, 4)),
        torch.zeros(0, dtype=torch.long, device=boxes.device),
        boxes.new_zeros(0),
    )
