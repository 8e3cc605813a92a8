"""The detector's per-RoI outputs: what :mod:`weaksam.wsod.model` returns and both
:mod:`weaksam.wsod.objective` (losses) and :mod:`weaksam.wsod.postprocess` (detections) read.

A module of its own, below all three, so the model can use the post-processing without an
import loop.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class HeadOutputs:
    """Per-RoI outputs of a batch; the RoIs of image ``i`` are rows ``slices[i]``.

    Attributes:
        cls_logits / det_logits: ``NxC`` WSDDN logits (None for ``supervised``); ``Nx(C+1)``
            with the background at column 0 when ``mil_background``.
        refine_logits: ``KxNx(C+1)`` (``K = 0`` for ``wsddn``).
        bbox_deltas: ``KxNx(C+1)x4`` deltas for the original, unflipped image (None without
            regression).
        counts: RoIs per image.
        mil_background: the WSDDN logits have a background column 0 (wetectron's MIST).
    """

    cls_logits: torch.Tensor | None
    det_logits: torch.Tensor | None
    refine_logits: torch.Tensor
    bbox_deltas: torch.Tensor | None
    counts: list[int]
    mil_background: bool = False

    @property
    def slices(self) -> list[slice]:
        out, start = [], 0
        for n in self.counts:
            out.append(slice(start, start + n))
            start += n
        return out
