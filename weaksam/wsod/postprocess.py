"""From per-RoI head outputs to detections (torch, pure): scores, boxes, TTA merge, NMS.

* Per-RoI class scores: the mean of the K refinement softmaxes with the background column
  dropped; for ``wsddn`` (K = 0) WSDDN's ``phi = softmax_classes(cls) * softmax_rois(det)``.
* Per-RoI class boxes: ``decode(mean_k deltas_k[:, c + 1], roi)`` with box regression,
  otherwise the RoI itself for every class.
* Test-time augmentation averages both per RoI over the passes (:func:`merge_passes`).
* Detections: per-class NMS, scores ``> score_thresh``, the ``max_detections`` best per image.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision.ops import batched_nms

from weaksam.geometry.box_coder import decode_boxes
from weaksam.wsod.losses import wsddn_scores
from weaksam.wsod.outputs import HeadOutputs


def roi_scores_and_boxes(out: HeadOutputs, rois: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores ``RxC`` and boxes ``RxCx4`` of one image's outputs (``rois`` ``Rx4``, the
    coordinates the boxes are wanted in: deltas are relative, so any frame works)."""
    if out.refine_logits.shape[0] > 0:
        scores = out.refine_logits.softmax(dim=-1)[..., 1:].mean(dim=0)
    else:
        assert out.cls_logits is not None and out.det_logits is not None
        scores, _ = wsddn_scores(out.cls_logits, out.det_logits)
        if out.mil_background:
            scores = scores[:, 1:]
    r, c = scores.shape
    if out.bbox_deltas is None:
        return scores, rois[:, None, :].expand(r, c, 4).clone()
    deltas = out.bbox_deltas.mean(dim=0)[:, 1:]  # RxCx4, background dropped
    flat = decode_boxes(
        deltas.reshape(r * c, 4), rois[:, None, :].expand(r, c, 4).reshape(r * c, 4)
    )
    return scores, flat.view(r, c, 4)


def merge_passes(
    scores: Sequence[torch.Tensor], boxes: Sequence[torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Average per-RoI scores (``RxC`` each) and boxes (``RxCx4`` each) over TTA passes."""
    return torch.stack(list(scores)).mean(0), torch.stack(list(boxes)).mean(0)


def select_detections(
    scores: torch.Tensor,
    boxes: torch.Tensor,
    *,
    nms_iou: float = 0.3,
    score_thresh: float = 0.0,
    max_detections: int = 100,
    height: int | None = None,
    width: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-class NMS over every (RoI, class) pair.

    Args:
        scores: ``RxC``. boxes: ``RxCx4`` XYXY. ``height``/``width``: clip boxes to the
            image when given.

    Returns:
        ``(boxes Nx4, scores N, classes N int64)``, highest score first, ``N <=
        max_detections``; pairs with score ``<= score_thresh`` are dropped.
    """
    r, c = scores.shape
    flat_scores = scores.reshape(-1)
    flat_boxes = boxes.reshape(-1, 4).float()
    if height is not None and width is not None:
        flat_boxes = torch.stack(
            [
                flat_boxes[:, 0].clamp(0, width),
                flat_boxes[:, 1].clamp(0, height),
                flat_boxes[:, 2].clamp(0, width),
                flat_boxes[:, 3].clamp(0, height),
            ],
            dim=1,
        )
    classes = torch.arange(c, device=scores.device).repeat(r)
    keep = torch.nonzero(flat_scores > score_thresh).flatten()
    flat_boxes, flat_scores, classes = flat_boxes[keep], flat_scores[keep], classes[keep]
    keep = batched_nms(flat_boxes, flat_scores.float(), classes, nms_iou)[:max_detections]
    return flat_boxes[keep], flat_scores[keep], classes[keep]
