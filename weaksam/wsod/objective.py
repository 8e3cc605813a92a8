"""The training objective of each method, per image then averaged over the batch.

``L = L_MIL + sum_k lambda_k (L_cls^k + L_reg^k)``. The pseudo boxes of branch 1 come from
WSDDN's ``phi``, those of branch ``k > 1`` from branch ``k - 1``'s softmax without the
background column; sources are detached (pseudo labels are targets, not paths for gradients).
``supervised`` replaces the pseudo boxes by the ground truth with score 1 (Fast R-CNN on the
same proposals: a RoI is foreground for its best ground-truth box at IoU ``>= fg_iou``), samples
RoIs as Fast R-CNN does (:func:`fast_rcnn_sample`), and has no MIL term.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from weaksam.wsod.config import WSODTrainConfig
from weaksam.wsod.losses import mil_loss, refinement_loss, regression_loss, wsddn_scores
from weaksam.wsod.outputs import HeadOutputs
from weaksam.wsod.rules import (
    PseudoBoxes,
    RoiTargets,
    assign_rois,
    mist_pseudo_boxes,
    oicr_pseudo_boxes,
)


@dataclass(frozen=True)
class ImageTargets:
    """What supervises one image.

    Attributes:
        labels: image-level class ids (0-based, ``L``) — the only supervision of weak methods.
        gt_boxes / gt_classes: ``Gx4`` / ``G``, only for ``supervised`` (the upper bound).
    """

    labels: torch.Tensor
    gt_boxes: torch.Tensor | None = None
    gt_classes: torch.Tensor | None = None


def branch_weights(method: str, k: int, given: Sequence[float] = ()) -> list[float]:
    """Loss weight of each of ``k`` branches: ``given`` when set, else MIST's 3, 1, 1, ...
    or 1 for every OICR (and supervised) branch."""
    if given:
        if len(given) != k:
            raise ValueError(f"branch_weights has {len(given)} values for {k} branches")
        return [float(w) for w in given]
    if method == "mist":
        return [3.0] + [1.0] * (k - 1)
    return [1.0] * k


def pseudo_boxes(
    method: str,
    boxes: torch.Tensor,
    scores: torch.Tensor,
    labels: torch.Tensor,
    cfg: WSODTrainConfig,
) -> PseudoBoxes:
    """The method's pseudo ground truth from ``RxC`` source ``scores`` of ``Rx4`` boxes."""
    if method == "mist":
        return mist_pseudo_boxes(boxes, scores, labels, cfg.mist_top_ratio, cfg.mist_iou)
    return oicr_pseudo_boxes(boxes, scores, labels, cfg.oicr_ratio, cfg.oicr_nms)


def fast_rcnn_sample(targets: RoiTargets, num: int, fg_fraction: float) -> RoiTargets:
    """Fast R-CNN's RoI sampling for the supervised upper bound: at most ``fg_fraction *
    num`` foreground RoIs and background for the rest of ``num``, drawn with torch's RNG.

    Sampled RoIs get weight ``R / n_sampled`` and the others 0, so the mean-over-``R`` losses
    become means over the sample."""
    r = targets.labels.shape[0]
    fg = torch.nonzero(targets.labels > 0).flatten()
    bg = torch.nonzero(targets.labels == 0).flatten()
    n_fg = min(len(fg), int(fg_fraction * num))
    n_bg = min(len(bg), num - n_fg)
    fg = fg[torch.randperm(len(fg), device=fg.device)[:n_fg]]
    bg = bg[torch.randperm(len(bg), device=bg.device)[:n_bg]]
    picked = torch.cat([fg, bg])
    weights = torch.zeros(r, device=targets.weights.device)
    if len(picked):
        weights[picked] = r / len(picked)
    return dataclasses.replace(targets, weights=weights)


def image_loss(
    method: str,
    out: HeadOutputs,
    index: int,
    boxes: torch.Tensor,
    target: ImageTargets,
    cfg: WSODTrainConfig,
) -> dict[str, torch.Tensor]:
    """Loss terms of image ``index`` of the batch ``out`` (its proposals ``boxes`` ``Rx4``,
    original coordinates). Returns ``{"mil", "cls", "reg", "loss"}`` scalars."""
    sl = out.slices[index]
    zero = out.refine_logits.sum() * 0.0
    terms = {"mil": zero, "cls": zero, "reg": zero}
    k = out.refine_logits.shape[0]
    weights = branch_weights(method, k, cfg.branch_weights)
    gt: PseudoBoxes | None = None
    if method == "supervised":
        if target.gt_boxes is None or target.gt_classes is None:
            raise ValueError("the supervised upper bound needs ground-truth boxes")
        ones = target.gt_boxes.new_ones(target.gt_boxes.shape[0])
        gt = PseudoBoxes(target.gt_boxes.float(), target.gt_classes.long(), ones)
    else:
        assert out.cls_logits is not None and out.det_logits is not None
        phi, image_scores = wsddn_scores(out.cls_logits[sl], out.det_logits[sl])
        bg = 1 if out.mil_background else 0  # background column 0: its label stays 0
        multi_hot = torch.zeros_like(image_scores)
        multi_hot[target.labels.long() + bg] = 1.0
        terms["mil"] = mil_loss(image_scores, multi_hot, cfg.mil_reduction)
        source = phi.detach()[:, bg:]
    for b in range(k):
        if gt is not None:
            pseudo = gt
        else:
            pseudo = pseudo_boxes(method, boxes, source, target.labels.long(), cfg)
        roi_targets = assign_rois(boxes, pseudo, cfg.fg_iou)
        if gt is not None:
            roi_targets = fast_rcnn_sample(
                roi_targets, cfg.supervised_rois, cfg.supervised_fg_fraction
            )
        logits = out.refine_logits[b, sl]
        terms["cls"] = terms["cls"] + weights[b] * refinement_loss(logits, roi_targets)
        if out.bbox_deltas is not None:
            reg = regression_loss(out.bbox_deltas[b, sl], boxes, roi_targets)
            terms["reg"] = terms["reg"] + weights[b] * reg
        source = logits.detach().softmax(dim=1)[:, 1:]
    terms["loss"] = terms["mil"] + terms["cls"] + terms["reg"]
    return terms


def batch_loss(
    method: str,
    out: HeadOutputs,
    boxes: Sequence[torch.Tensor],
    targets: Sequence[ImageTargets],
    cfg: WSODTrainConfig,
) -> dict[str, torch.Tensor]:
    """:func:`image_loss` averaged over the images of the batch."""
    per_image = [
        image_loss(method, out, i, b.float(), t, cfg)
        for i, (b, t) in enumerate(zip(boxes, targets, strict=True))
    ]
    return {key: torch.stack([p[key] for p in per_image]).mean() for key in per_image[0]}
