"""Mask post-processing on torch tensors: upsampling, stability, boxes, RLE.

Every function works on the model's device and reuses segment-anything's own helpers where
they define the reference behaviour (``calculate_stability_score``, ``batched_mask_to_box``)
or repeats its arithmetic (``Sam.postprocess_masks``), so results equal
``SamAutomaticMaskGenerator``'s bit for bit.

Box conventions: segment-anything's ``batched_mask_to_box`` is *inclusive* (``x2`` = the last
column of the mask); the project's convention is *continuous* (``x2`` = last column + 1, see
:mod:`weaksam.geometry.boxes`). :func:`inclusive_to_continuous` converts at the output
boundary; NMS that must match AMG runs on the inclusive boxes.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from segment_anything.modeling import Sam
from segment_anything.utils.amg import batched_mask_to_box, calculate_stability_score

from weaksam.io.rle import encode_masks

__all__ = [
    "encode_binary_masks",
    "inclusive_to_continuous",
    "mask_boxes",
    "stability_scores",
    "upsample_logits",
]


def upsample_logits(
    model: Sam,
    low_res: torch.Tensor,
    input_size: tuple[int, int],
    original_size: tuple[int, int],
) -> torch.Tensor:
    """Low-resolution logits ``Nxhxw`` → logits at the original image size ``NxHxW``.

    ``Sam.postprocess_masks`` (bilinear to ``img_size``, crop the padding, bilinear to the
    original size), applied per mask, float32 whatever the decoder's dtype. When the image
    already has the model's input size (its long side is ``img_size``) the second resize is
    the identity (every weight is 1 or 0) and is skipped: same values for finite logits, and
    it was the larger half of the cost on 256-px demo images.
    """
    if low_res.shape[0] == 0:
        return low_res.new_zeros((0, *original_size), dtype=torch.float32)
    size = model.image_encoder.img_size
    up = F.interpolate(low_res.float()[:, None], (size, size), mode="bilinear", align_corners=False)
    up = up[..., : input_size[0], : input_size[1]]
    if tuple(input_size) != tuple(original_size):
        up = F.interpolate(up, original_size, mode="bilinear", align_corners=False)
    return up[:, 0]


def mask_boxes(binary: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Tight boxes of binary masks ``NxHxW``.

    Returns:
        ``(boxes, nonempty)``: ``Nx4`` int64 *inclusive* XYXY boxes (segment-anything's
        ``batched_mask_to_box``; ``[0, 0, 0, 0]`` for an empty mask) and an ``N`` bool tensor
        that is ``False`` for empty masks (an inclusive ``[0, 0, 0, 0]`` is also the box of a
        mask holding only pixel (0, 0), so the flag is needed to tell them apart).
    """
    if binary.shape[0] == 0:
        return (
            torch.zeros((0, 4), dtype=torch.int64, device=binary.device),
            torch.zeros(0, dtype=torch.bool, device=binary.device),
        )
    boxes = batched_mask_to_box(binary)
    nonempty = binary.flatten(1).any(1)
    return boxes, nonempty


def inclusive_to_continuous(boxes: torch.Tensor, nonempty: torch.Tensor) -> npt.NDArray[np.float32]:
    """Inclusive XYXY ``Nx4`` → the project's continuous convention (``x2 + 1``, ``y2 + 1``).

    Empty masks (``nonempty`` false) get ``[0, 0, 0, 0]``. Returns float32 numpy ``Nx4``.
    """
    out = boxes.detach().to("cpu", torch.float32).numpy().copy().reshape(-1, 4)
    keep = nonempty.detach().cpu().numpy().astype(bool)
    out[keep, 2:] += 1.0
    out[~keep] = 0.0
    return out


def encode_binary_masks(binary: torch.Tensor) -> list[bytes]:
    """COCO RLE counts of binary masks ``NxHxW`` (see :func:`weaksam.io.rle.encode_masks`)."""
    if binary.shape[0] == 0:
        return []
    return encode_masks(binary.detach().to("cpu", torch.uint8).numpy())


def stability_scores(logits: torch.Tensor, mask_threshold: float, offset: float) -> torch.Tensor:
    """AMG's stability score of logits ``NxHxW`` (IoU of the masks thresholded at
    ``mask_threshold ± offset``); ``N`` float32, NaN where both masks are empty."""
    if logits.shape[0] == 0:
        return logits.new_zeros(0, dtype=torch.float32)
    return calculate_stability_score(logits, mask_threshold, offset).float()
