"""RoI drop ("INSTANCE_DROP", WeakSAM section 5) as a drop-in for torchvision's Fast R-CNN loss.

From iteration ``operate_iter`` on, a sampled *foreground* RoI whose classification loss is
``> thresh_cls`` **and** whose box loss is ``> thresh_reg`` contributes no loss: its
classification and regression terms are multiplied by 0. Background RoIs are never dropped.
Both losses stay normalised by the number of sampled RoIs ``R``, as without drop (the
reference code summed the box loss in the drop path, a jump of ~R× — not copied).

The drop criterion uses the method's per-RoI L1 box loss ``sum_4 |t_hat - t|`` (detectron2's
smooth-L1 with beta 0), so the published thresholds (VOC07: 4.0 / 4.0 from iteration 2000)
mean what they meant; the training loss itself is torchvision's (smooth-L1, beta 1/9).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from weaksam.detection.config import RoIDropConfig

__all__ = [
    "RoIDropConfig",
    "RoIDropLoss",
    "RoILosses",
    "fastrcnn_loss_with_drop",
    "per_roi_losses",
]


@dataclass(frozen=True)
class RoIDropLoss:
    """The two losses and how many foreground RoIs were dropped (of how many); whether or not
    drop is active, how many foreground RoIs exceeded ``thresh_cls`` (``over_cls``),
    ``thresh_reg`` (``over_reg``) and both (``over_both``: what drop removes once active)."""

    loss_classifier: torch.Tensor
    loss_box_reg: torch.Tensor
    dropped: int
    foreground: int
    over_cls: int = 0
    over_reg: int = 0
    over_both: int = 0


@dataclass(frozen=True)
class RoILosses:
    """Per-RoI losses of one box-head call.

    Attributes:
        ce: ``R`` classification cross-entropy of every sampled RoI.
        pos: ``P`` indices (into ``R``) of the foreground RoIs.
        reg: ``P`` training box loss of each foreground RoI (smooth-L1, beta 1/9, summed
            over the 4 deltas: torchvision's).
        l1: ``P`` the drop criterion's box loss ``sum_4 |t_hat - t|`` (detached).
    """

    ce: torch.Tensor
    pos: torch.Tensor
    reg: torch.Tensor
    l1: torch.Tensor


def per_roi_losses(
    class_logits: torch.Tensor,
    box_regression: torch.Tensor,
    labels: torch.Tensor,
    regression_targets: torch.Tensor,
) -> RoILosses:
    """The per-RoI losses of ``R`` sampled RoIs.

    Args:
        class_logits: ``RxK`` logits (K classes incl. background 0).
        box_regression: ``Rx4K`` class-specific deltas.
        labels: ``R`` int64 sampled labels (0 = background). regression_targets: ``Rx4``.
    """
    ce = F.cross_entropy(class_logits, labels, reduction="none")
    pos = torch.where(labels > 0)[0]
    n = class_logits.shape[0]
    pred = box_regression.reshape(n, box_regression.size(-1) // 4, 4)[pos, labels[pos]]
    target = regression_targets[pos]
    reg = F.smooth_l1_loss(pred, target, beta=1 / 9, reduction="none").sum(dim=1)
    l1 = (pred - target).abs().sum(dim=1).detach()
    return RoILosses(ce, pos, reg, l1)


def fastrcnn_loss_with_drop(
    class_logits: torch.Tensor,
    box_regression: torch.Tensor,
    labels: list[torch.Tensor],
    regression_targets: list[torch.Tensor],
    active: bool,
    thresh_cls: float,
    thresh_reg: float,
) -> RoIDropLoss:
    """torchvision's ``fastrcnn_loss`` plus RoI drop when ``active``.

    Args:
        class_logits: ``RxK`` logits (K classes incl. background 0).
        box_regression: ``Rx4K`` class-specific deltas.
        labels / regression_targets: per image ``R_i`` labels and ``R_ix4`` targets.
        active: whether drop applies (the iteration has reached ``operate_iter``).
    """
    lab = torch.cat(labels, dim=0)
    r = lab.numel()
    losses = per_roi_losses(class_logits, box_regression, lab, torch.cat(regression_targets, 0))
    ce, pos, reg = losses.ce, losses.pos, losses.reg
    keep_cls = torch.ones_like(ce)
    keep_reg = torch.ones_like(reg)
    dropped = over_cls = over_reg = over_both = 0
    if pos.numel():
        high_cls, high_reg = ce[pos].detach() > thresh_cls, losses.l1 > thresh_reg
        drop_pos = high_cls & high_reg
        over_cls, over_reg = int(high_cls.sum()), int(high_reg.sum())
        over_both = int(drop_pos.sum())
        if active:
            keep_reg = (~drop_pos).to(reg.dtype)
            keep_cls[pos[drop_pos]] = 0.0
            dropped = over_both
    loss_cls = (ce * keep_cls).sum() / max(r, 1)
    loss_box = (reg * keep_reg).sum() / max(r, 1)
    return RoIDropLoss(loss_cls, loss_box, dropped, int(pos.numel()), over_cls, over_reg, over_both)
