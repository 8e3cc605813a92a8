"""Peak points of class-activation maps (WeakSAM section 1, ``peak_extract`` with ``pam``).

Rules, on one min-max normalised map (values in ``[0, 1]``):

1. local maxima: a pixel is a candidate iff it equals the max-pool of the map with kernel ``k``
   (stride 1, padding ``(k - 1) // 2``);
2. the ``top_k`` candidates by value (ties broken by row-major position, for determinism);
3. walking down that list, stop at the first value ``< threshold`` (an *absolute* threshold on
   the normalised map, 0.9 in WeakSAM — not a percentile);
4. greedy distance filter: skip a candidate whose L1 distance to an already kept point is
   ``< (k - 1) // 2``.

The global maximum is always kept when the map is not all zero (it is the first candidate, and
with ``threshold <= 1`` on a normalised map it passes step 3); an all-zero map (a class that the
label vector zeroed out) gives no points. Points are returned at pixel centres ``(col + 0.5,
row + 0.5)`` in the project's continuous convention, where the reference wrote integer indices.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F

from weaksam.configlib import FieldError, check_at_least, check_fraction


@dataclass(frozen=True)
class PeakConfig:
    """Peak extraction settings (WeakSAM: k=17 for CAM/refined maps, 129 for cross maps)."""

    kernel: int = 17
    top_k: int = 25
    threshold: float = 0.9

    def __post_init__(self) -> None:
        if self.kernel < 1 or self.kernel % 2 == 0:
            raise FieldError("kernel", "{kernel} must be odd and >= 1, got {value}", self.kernel)
        check_at_least(self, 1, "top_k")
        check_fraction(self, "threshold")  # on the min-max normalised map


def minmax_normalize(maps: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Per-map ``(m - min) / (max - min + eps)`` over the last two dims. ``...xHxW``."""
    flat = maps.flatten(-2)
    lo = flat.min(-1, keepdim=True).values
    hi = flat.max(-1, keepdim=True).values
    return ((flat - lo) / (hi - lo + eps)).view_as(maps)


def local_maxima(score_map: torch.Tensor, kernel: int) -> torch.Tensor:
    """Boolean ``HxW`` mask of pixels equal to their ``kernel`` max-pool neighbourhood."""
    pad = (kernel - 1) // 2
    pooled = F.max_pool2d(score_map[None, None], kernel, stride=1, padding=pad)[0, 0]
    return score_map == pooled


def extract_peaks(
    score_map: torch.Tensor | npt.NDArray[np.floating], cfg: PeakConfig
) -> npt.NDArray[np.float32]:
    """Peak points of one normalised ``HxW`` map.

    Returns:
        ``Px3`` float32 rows ``(x, y, score)``: x = column + 0.5, y = row + 0.5 in map pixels,
        sorted by descending score. ``P`` may be 0.
    """
    m = torch.as_tensor(score_map, dtype=torch.float32)
    if m.ndim != 2:
        raise ValueError(f"score_map must be HxW, got shape {tuple(m.shape)}")
    if m.numel() == 0 or float(m.max()) <= 0:
        return np.zeros((0, 3), dtype=np.float32)
    w = m.shape[1]
    cand = torch.nonzero(local_maxima(m, cfg.kernel).flatten()).flatten()
    values = m.flatten()[cand]
    # stable sort by value descending: equal values keep row-major order
    order = torch.sort(-values, stable=True).indices[: cfg.top_k]
    top_idx, top_val = cand[order].tolist(), values[order].tolist()
    min_dist = (cfg.kernel - 1) // 2
    kept_rc: list[tuple[int, int]] = []
    kept: list[tuple[float, float, float]] = []
    for idx, val in zip(top_idx, top_val, strict=True):
        if kept and val < cfg.threshold:  # the first (global maximum) is always kept
            break
        r, c = divmod(idx, w)
        if any(abs(r - kr) + abs(c - kc) < min_dist for kr, kc in kept_rc):
            continue
        kept_rc.append((r, c))
        kept.append((c + 0.5, r + 0.5, val))
    return np.asarray(kept, dtype=np.float32).reshape(-1, 3)
