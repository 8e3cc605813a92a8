"""Image and box transforms between the original image and the network input (torch, pure).

A *view* of an image is its resize to a shorter side ``scale`` (the longer side capped at
``max_side``), optionally flipped horizontally. Boxes go to the view with :func:`boxes_to_view`
and come back with :func:`boxes_from_view`; box deltas ``(dx, dy, dw, dh)`` are invariant to
scaling and change only the sign of ``dx`` under a flip (:func:`deltas_from_view`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class View:
    """Geometry of one image's view: ``sx = out_w / in_w``, ``sy = out_h / in_h``."""

    in_height: int
    in_width: int
    out_height: int
    out_width: int
    flip: bool

    @property
    def sx(self) -> float:
        return self.out_width / self.in_width

    @property
    def sy(self) -> float:
        return self.out_height / self.in_height


def view_size(height: int, width: int, scale: int, max_side: int) -> tuple[int, int]:
    """``(out_h, out_w)``: shorter side ``scale``, longer side at most ``max_side``."""
    f = scale / min(height, width)
    if max(height, width) * f > max_side:
        f = max_side / max(height, width)
    return max(1, round(height * f)), max(1, round(width * f))


def make_view(height: int, width: int, scale: int, max_side: int, flip: bool) -> View:
    return View(height, width, *view_size(height, width, scale, max_side), flip)


def image_to_view(image: torch.Tensor, view: View) -> torch.Tensor:
    """``3xHxW`` float image → ``3 x out_h x out_w`` (bilinear; flipped if the view is)."""
    out = image
    if (view.out_height, view.out_width) != (view.in_height, view.in_width):
        out = F.interpolate(
            image[None], (view.out_height, view.out_width), mode="bilinear", align_corners=False
        )[0]
    return out.flip(-1) if view.flip else out


def boxes_to_view(boxes: torch.Tensor, view: View) -> torch.Tensor:
    """``Nx4`` XYXY boxes of the original image → the view's frame."""
    out = boxes * boxes.new_tensor([view.sx, view.sy, view.sx, view.sy])
    if view.flip:
        w = float(view.out_width)
        out = torch.stack([w - out[:, 2], out[:, 1], w - out[:, 0], out[:, 3]], dim=1)
    return out


def boxes_from_view(boxes: torch.Tensor, view: View) -> torch.Tensor:
    """Inverse of :func:`boxes_to_view` for ``...x4`` boxes."""
    out = boxes
    if view.flip:
        w = float(view.out_width)
        out = torch.stack([w - out[..., 2], out[..., 1], w - out[..., 0], out[..., 3]], dim=-1)
    return out / out.new_tensor([view.sx, view.sy, view.sx, view.sy])


def deltas_from_view(deltas: torch.Tensor, flip: bool) -> torch.Tensor:
    """``...x4`` deltas predicted in a view → deltas of the original image (``dx`` negated
    under a flip; scaling leaves deltas unchanged since they are relative to the RoI)."""
    if not flip:
        return deltas
    return deltas * deltas.new_tensor([-1.0, 1.0, 1.0, 1.0])


def pad_batch(images: Sequence[torch.Tensor], divisor: int = 32) -> torch.Tensor:
    """Stack ``3xHixWi`` images into ``Bx3xHxW``, padded with black (0) at the bottom and
    right to a multiple of ``divisor``."""
    h = max(int(im.shape[-2]) for im in images)
    w = max(int(im.shape[-1]) for im in images)
    h, w = -(-h // divisor) * divisor, -(-w // divisor) * divisor
    out = images[0].new_zeros((len(images), 3, h, w))
    for i, im in enumerate(images):
        out[i, :, : im.shape[-2], : im.shape[-1]] = im
    return out
