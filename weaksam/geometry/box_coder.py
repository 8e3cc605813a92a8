"""Faster R-CNN box deltas ``(dx, dy, dw, dh)`` in the continuous convention (torch).

``encode(gt, roi)``: ``dx = wx * (gx - rx) / rw`` with centres ``x1 + w / 2`` and
``w = x2 - x1``; ``dw = ww * log(gw / rw)``. Default weights ``(10, 10, 5, 5)`` as in the
method. ``decode`` inverts it and clamps ``dw, dh`` at ``log(1000 / 16)`` as torchvision does.
"""

from __future__ import annotations

import math

import torch

DEFAULT_WEIGHTS = (10.0, 10.0, 5.0, 5.0)
_CLAMP = math.log(1000.0 / 16)


def _centers(boxes: torch.Tensor) -> tuple[torch.Tensor, ...]:
    w = (boxes[:, 2] - boxes[:, 0]).clamp(min=1e-3)
    h = (boxes[:, 3] - boxes[:, 1]).clamp(min=1e-3)
    return boxes[:, 0] + 0.5 * w, boxes[:, 1] + 0.5 * h, w, h


def encode_boxes(
    gt: torch.Tensor, rois: torch.Tensor, weights: tuple[float, ...] = DEFAULT_WEIGHTS
) -> torch.Tensor:
    """Deltas that move ``rois`` (``Nx4``) onto ``gt`` (``Nx4``). Returns ``Nx4``."""
    wx, wy, ww, wh = weights
    gx, gy, gw, gh = _centers(gt)
    rx, ry, rw, rh = _centers(rois)
    return torch.stack(
        [
            wx * (gx - rx) / rw,
            wy * (gy - ry) / rh,
            ww * torch.log(gw / rw),
            wh * torch.log(gh / rh),
        ],
        dim=1,
    )


def decode_boxes(
    deltas: torch.Tensor, rois: torch.Tensor, weights: tuple[float, ...] = DEFAULT_WEIGHTS
) -> torch.Tensor:
    """Apply ``Nx4`` deltas to ``Nx4`` rois; returns ``Nx4`` XYXY boxes."""
    wx, wy, ww, wh = weights
    rx, ry, rw, rh = _centers(rois)
    dx, dy = deltas[:, 0] / wx, deltas[:, 1] / wy
    dw = (deltas[:, 2] / ww).clamp(max=_CLAMP)
    dh = (deltas[:, 3] / wh).clamp(max=_CLAMP)
    cx, cy = rx + dx * rw, ry + dy * rh
    w, h = rw * torch.exp(dw), rh * torch.exp(dh)
    return torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=1)
