"""SAM's training losses as pure functions: focal + dice on masks, MSE on predicted IoU.

Shapes: ``logits`` and ``targets`` are ``PxHxW`` (one mask per prompt) unless stated; targets
are {0, 1} floats. Losses are means over prompts.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def sigmoid_focal_loss(
    logits: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0
) -> torch.Tensor:
    """Per-mask focal loss (RetinaNet form), mean over pixels. Returns shape ``P``."""
    prob = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = prob * targets + (1 - prob) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return loss.flatten(1).mean(1)


def dice_loss(logits: torch.Tensor, targets: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """Per-mask soft dice loss ``1 - (2|p∩t| + eps) / (|p| + |t| + eps)``. Returns shape ``P``."""
    prob = logits.sigmoid().flatten(1)
    t = targets.flatten(1)
    inter = (prob * t).sum(1)
    return 1 - (2 * inter + eps) / (prob.sum(1) + t.sum(1) + eps)


def mask_iou(logits: torch.Tensor, targets: torch.Tensor, threshold: float = 0.0) -> torch.Tensor:
    """IoU of the binarised prediction (``logits > threshold``) with the target. Shape ``P``.

    An empty prediction against an empty target has IoU 1.
    """
    pred = (logits > threshold).flatten(1)
    t = targets.flatten(1) > 0.5
    inter = (pred & t).sum(1).float()
    union = (pred | t).sum(1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


def sam_loss(
    logits: torch.Tensor,
    iou_pred: torch.Tensor,
    targets: torch.Tensor,
    focal_weight: float = 20.0,
    dice_weight: float = 1.0,
    iou_weight: float = 1.0,
    focal_alpha: float = 0.25,
) -> tuple[torch.Tensor, dict[str, float]]:
    """SAM's loss for ``M`` candidate masks per prompt (``M`` = 3 multimask or 1).

    Args:
        logits: ``PxMxHxW`` mask logits at the target's resolution.
        iou_pred: ``PxM`` predicted IoU.
        targets: ``PxHxW`` {0, 1} ground-truth masks.

    Only the candidate with the lowest mask loss is back-propagated per prompt (SAM's
    ambiguity-aware rule); the IoU head regresses the actual IoU of every candidate.

    Returns:
        (scalar loss, dict of float parts for logging: focal, dice, iou_mse, miou)
    """
    p, m = logits.shape[:2]
    t = targets[:, None].expand(-1, m, -1, -1).reshape(p * m, *targets.shape[-2:])
    flat = logits.reshape(p * m, *logits.shape[-2:])
    focal = sigmoid_focal_loss(flat, t, alpha=focal_alpha).view(p, m)
    dice = dice_loss(flat, t).view(p, m)
    mask_l = focal_weight * focal + dice_weight * dice
    best = mask_l.argmin(dim=1)
    idx = torch.arange(p, device=logits.device)
    with torch.no_grad():
        actual_iou = mask_iou(flat.detach(), t).view(p, m)
    iou_l = F.mse_loss(iou_pred, actual_iou, reduction="none").mean(1)
    loss = mask_l[idx, best].mean() + iou_weight * iou_l.mean()
    parts = {
        "focal": float(focal[idx, best].mean().detach()),
        "dice": float(dice[idx, best].mean().detach()),
        "iou_mse": float(iou_l.mean().detach()),
        "miou": float(actual_iou[idx, best].mean()),
    }
    return loss, parts
