"""Appearance (bilateral) refinement of class maps: move peaks off background-coloured pixels.

A CAM's maximum is where the classifier's receptive field sees the most class evidence, which
for a shape with a hole or a bite is the hole: on ``shapes`` the peak points of rings and
crescents fell inside the ring's hole and the crescent's concave bite, on background pixels,
where a SAM point prompt segments the hole (precision 0.09 and 0.03, docs/benchmarks_history.md).
WeakSAM's WeakTr maps are refined by ViT attention, which mixes appearance into the affinity;
the cosine affinity of a CNN's last feature map (the ``refined`` kind) is semantic only.

This module adds the appearance kernel of the fully connected CRF (Krähenbühl & Koltun,
NeurIPS 2011), the usual CAM refinement of weakly supervised segmentation, as one filtering
step. On a grid of the image downsampled to ``side`` cells along its long side,

    k(i, j) = exp(-|I_i - I_j|² / (2 σ_c²) - |p_i - p_j|² / (2 σ_s²)),   K = k / Σ_j k(i, j)

with ``I`` the RGB colour in ``[0, 1]`` and ``p`` the cell position in units of the long side.
Each positive class map ``m`` becomes ``minmax(m ⊙ up(K · down(m))^γ)``: ``K · m`` is, at
each pixel, the map's mean over pixels that look like it, and ``γ`` weighs that appearance
evidence against the CAM's own. A ring's hole has the colour of the background, which is
mostly far from the ring and scores low, so ``K · m`` is low there; the band's pixels look
like the band and keep a high value, and the product peaks on the band. Solid shapes keep
their peak inside. No label or ground truth is read. The kernel is built once per image
(``side = 64``: a 4096² matrix) and serves every class and kind; the demo's peaks stage
grew from 20 to 48-55 s for 180 images on one CPU core (~0.17 s per image).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F

from weaksam.cam.peaks import minmax_normalize


def grid_shape(height: int, width: int, side: int) -> tuple[int, int]:
    """The kernel grid of an ``height x width`` image: ``side`` cells on the long side, the
    short side in proportion (at least 1), never more cells than pixels."""
    scale = min(1.0, side / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def bilateral_kernel(
    image: torch.Tensor | npt.NDArray[np.uint8],
    side: int,
    sigma_color: float,
    sigma_space: float,
) -> tuple[torch.Tensor, tuple[int, int]]:
    """The row-normalised appearance kernel of one image (see the module docstring).

    Args:
        image: ``HxWx3`` uint8 (numpy or torch; the kernel is built on the tensor's device).
    Returns:
        (``NxN`` float32 kernel, rows summing to 1, ``N = gh * gw``; the grid ``(gh, gw)``).
    """
    img = torch.as_tensor(image)
    if img.ndim != 3 or img.shape[-1] != 3:
        raise ValueError(f"image must be HxWx3, got shape {tuple(img.shape)}")
    h, w = int(img.shape[0]), int(img.shape[1])
    gh, gw = grid_shape(h, w, side)
    x = img.permute(2, 0, 1)[None].float() / 255.0
    colour = F.interpolate(x, size=(gh, gw), mode="bilinear", antialias=True, align_corners=False)
    colour = colour[0].flatten(1).T / sigma_color  # N x 3
    long_side = float(max(gh, gw))
    ys = (torch.arange(gh, device=x.device, dtype=torch.float32) + 0.5) / long_side
    xs = (torch.arange(gw, device=x.device, dtype=torch.float32) + 0.5) / long_side
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    pos = torch.stack([yy.flatten(), xx.flatten()], dim=1) / sigma_space  # N x 2
    feats = torch.cat([colour, pos], dim=1)
    # softmax of -d²/2 is the row-normalised Gaussian, without underflow to an all-zero row
    return torch.softmax(-0.5 * torch.cdist(feats, feats).square(), dim=1), (gh, gw)


def bilateral_refine(
    maps: torch.Tensor, kernel: torch.Tensor, grid: tuple[int, int], power: float = 1.0
) -> torch.Tensor:
    """``minmax(maps ⊙ up(K · down(maps))^power)`` per map.

    Args:
        maps: ``KxHxW`` non-negative class maps of the image the kernel was built from.
        kernel: ``NxN`` from :func:`bilateral_kernel`; grid: its ``(gh, gw)``.
        power: the exponent ``γ`` of the appearance term (``> 0``).
    Returns:
        ``KxHxW`` float32 in ``[0, 1]``; an all-zero map stays all zero.
    """
    if maps.ndim != 3:
        raise ValueError(f"maps must be KxHxW, got shape {tuple(maps.shape)}")
    if power <= 0:
        raise ValueError(f"power must be > 0, got {power}")
    if maps.shape[0] == 0:
        return maps.float()
    gh, gw = grid
    if kernel.shape != (gh * gw, gh * gw):
        raise ValueError(f"kernel {tuple(kernel.shape)} does not fit the grid {grid}")
    m = maps.float()
    h, w = m.shape[-2:]
    small = F.interpolate(m[None], size=(gh, gw), mode="bilinear", antialias=True)[0]
    spread = (small.flatten(1) @ kernel.T).view(-1, gh, gw)
    up = F.interpolate(spread[None], size=(h, w), mode="bilinear", align_corners=False)[0]
    return minmax_normalize(m * up.clamp_min(0).pow(power))
