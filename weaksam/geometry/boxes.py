"""Box geometry in the project's one convention.

Boxes are ``XYXY`` float32 in pixel coordinates of the original image, continuous convention:
``width = x2 - x1``, ``height = y2 - y1``. A box covering pixel columns ``0..W-1`` of a ``W``-wide
image is ``[0, W]``. Pascal VOC's 1-based inclusive boxes convert as ``x1 = xmin - 1, x2 = xmax``
(same for y), so IoU without the "+1" here equals the VOC devkit's IoU with it.

All functions are pure and work on numpy arrays; torch versions live next to the models.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]


def as_boxes(boxes: npt.ArrayLike) -> FloatArray:
    """Return ``boxes`` as a contiguous ``float32`` array of shape ``Nx4`` (``N`` may be 0).

    Accepts a flat sequence of ``4N`` numbers (the Parquet layout) or an ``Nx4`` array.
    """
    arr = np.asarray(boxes, dtype=np.float32)
    if arr.size == 0:
        return np.zeros((0, 4), dtype=np.float32)
    if arr.ndim == 1:
        if arr.size % 4:
            raise ValueError(f"a flat box list needs a multiple of 4 values, got {arr.size}")
        arr = arr.reshape(-1, 4)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"boxes must be Nx4, got shape {arr.shape}")
    return np.ascontiguousarray(arr)


def box_area(boxes: npt.ArrayLike) -> FloatArray:
    """Areas of ``Nx4`` XYXY boxes; degenerate (inverted) boxes have area 0. Shape ``N``."""
    b = as_boxes(boxes)
    return np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)


def box_intersection(a: npt.ArrayLike, b: npt.ArrayLike) -> FloatArray:
    """Pairwise intersection areas of ``Nx4`` and ``Mx4`` XYXY boxes. Shape ``NxM``."""
    a_, b_ = as_boxes(a), as_boxes(b)
    lt = np.maximum(a_[:, None, :2], b_[None, :, :2])
    rb = np.minimum(a_[:, None, 2:], b_[None, :, 2:])
    wh = np.clip(rb - lt, 0, None)
    return (wh[..., 0] * wh[..., 1]).astype(np.float32)


def box_iou(a: npt.ArrayLike, b: npt.ArrayLike) -> FloatArray:
    """Pairwise IoU of ``Nx4`` and ``Mx4`` XYXY boxes in ``[0, 1]``. Shape ``NxM``.

    Pairs whose union is empty (two empty boxes) have IoU 0.
    """
    a_, b_ = as_boxes(a), as_boxes(b)
    inter = box_intersection(a_, b_)
    union = box_area(a_)[:, None] + box_area(b_)[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)
    return iou.astype(np.float32)


def clip_boxes(boxes: npt.ArrayLike, height: int, width: int) -> FloatArray:
    """Clip ``Nx4`` XYXY boxes to the image ``[0, width] x [0, height]``."""
    b = as_boxes(boxes).copy()
    b[:, 0::2] = np.clip(b[:, 0::2], 0, width)
    b[:, 1::2] = np.clip(b[:, 1::2], 0, height)
    return b


def voc_to_xyxy(boxes: npt.ArrayLike) -> FloatArray:
    """Convert VOC XML boxes (1-based, inclusive ``xmin ymin xmax ymax``) to the convention."""
    b = as_boxes(boxes).copy()
    b[:, 0] -= 1
    b[:, 1] -= 1
    return b


def xyxy_to_voc(boxes: npt.ArrayLike) -> FloatArray:
    """Inverse of :func:`voc_to_xyxy`."""
    b = as_boxes(boxes).copy()
    b[:, 0] += 1
    b[:, 1] += 1
    return b


def xywh_to_xyxy(boxes: npt.ArrayLike) -> FloatArray:
    """COCO ``[x, y, w, h]`` (continuous, as pycocotools uses it) to XYXY."""
    b = as_boxes(boxes).copy()
    b[:, 2] += b[:, 0]
    b[:, 3] += b[:, 1]
    return b


def xyxy_to_xywh(boxes: npt.ArrayLike) -> FloatArray:
    """XYXY to COCO ``[x, y, w, h]``."""
    b = as_boxes(boxes).copy()
    b[:, 2] -= b[:, 0]
    b[:, 3] -= b[:, 1]
    return b


def mask_to_box(mask: npt.NDArray[np.bool_]) -> FloatArray:
    """Tight XYXY box of a binary ``HxW`` mask, continuous convention (max index + 1).

    An empty mask gives ``[0, 0, 0, 0]``. Shape ``4``.
    """
    ys, xs = np.nonzero(mask)
    if xs.size == 0:
        return np.zeros(4, dtype=np.float32)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float32)
