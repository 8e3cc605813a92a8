"""Input geometry the transformer families share (:mod:`weaksam.detection.rt_detr`,
:mod:`weaksam.detection.mask2former`): ImageNet normalisation and torchvision's resize rule."""

from __future__ import annotations

from weaksam.cam.models import IMAGENET_MEAN, IMAGENET_STD  # the project's one definition

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "resized_hw"]


def resized_hw(h: int, w: int, side: int, max_size: int) -> tuple[int, int]:
    """``(h, w)`` scaled so the short side is ``side`` and the long side at most ``max_size``
    (torchvision's rule)."""
    scale = min(side / min(h, w), max_size / max(h, w))
    return max(1, round(h * scale)), max(1, round(w * scale))
