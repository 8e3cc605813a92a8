"""WSOD losses (pure functions, torch): WSDDN's MIL loss and the refinement-branch losses.

Shapes: ``R`` RoIs of one image, ``C`` classes (no background); refinement logits have
``C + 1`` columns with background at index 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from weaksam.geometry.box_coder import DEFAULT_WEIGHTS, encode_boxes
from weaksam.wsod.rules import RoiTargets

EPS = 1e-6


def wsddn_scores(
    cls_logits: torch.Tensor, det_logits: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """WSDDN: ``phi = softmax_classes(cls) * softmax_rois(det)`` (``RxC``) and the image score
    ``s_c = clamp(sum_r phi_rc, 1e-6, 1 - 1e-6)`` (``C``)."""
    phi = cls_logits.softmax(dim=1) * det_logits.softmax(dim=0)
    return phi, phi.sum(dim=0).clamp(EPS, 1 - EPS)


MIL_REDUCTIONS = ("mean", "sum")


def mil_loss(
    image_scores: torch.Tensor, labels: torch.Tensor, reduction: str = "mean"
) -> torch.Tensor:
    """Binary cross-entropy of the image scores against the multi-hot ``labels`` (``C``, or
    ``C + 1`` with a background column whose label is 0), ``mean`` over the columns
    (wetectron's MIST) or ``sum`` (WSOD2's OICR). Not a constant factor between methods: the
    refinement losses are per-RoI means, so ``mean`` weakens the MIL term ``C`` times
    relative to them."""
    if reduction not in MIL_REDUCTIONS:
        raise ValueError(f"unknown MIL reduction {reduction!r}; known: {MIL_REDUCTIONS}")
    return F.binary_cross_entropy(image_scores, labels.to(image_scores.dtype), reduction=reduction)


def refinement_loss(logits: torch.Tensor, targets: RoiTargets) -> torch.Tensor:
    """``mean_r w_r * -log(p_{r, y_r})`` over all ``R`` RoIs (``logits`` ``Rx(C+1)``)."""
    logp = logits.log_softmax(dim=1)
    nll = -logp.gather(1, targets.labels[:, None]).squeeze(1)
    return (targets.weights * nll).mean()


def regression_loss(
    deltas: torch.Tensor,
    rois: torch.Tensor,
    targets: RoiTargets,
    weights: tuple[float, ...] = DEFAULT_WEIGHTS,
) -> torch.Tensor:
    """MIST's box loss: ``sum_fg w_r * smoothL1_{beta=1}(t_hat[y_r], t_r) / R``.

    Args:
        deltas: ``Rx(C+1)x4`` class-specific deltas (index 0 = background, unused).
        rois: ``Rx4`` the RoIs; targets' pseudo boxes give the regression goals.
    """
    r = rois.shape[0]
    fg = torch.nonzero(targets.labels > 0).flatten()
    if fg.numel() == 0:
        return deltas.sum() * 0.0
    goal = encode_boxes(targets.pseudo.boxes[targets.gt_index[fg]], rois[fg], weights)
    pred = deltas[fg, targets.labels[fg]]
    per_roi = F.smooth_l1_loss(pred, goal, beta=1.0, reduction="none").sum(dim=1)
    return (targets.weights[fg] * per_roi).sum() / r
