"""Images and image-level labels for the CAM classifier: loading, hold-out split, augmentation.

Only the manifest's ``image_id``, ``path``, ``split``, ``labels`` and ``error`` columns are ever
read here (:data:`LABEL_COLUMNS`): ground truth (``gt_*``) is for evaluation only.
Images are ``Bx3xSxS`` tensors; uint8 in ``[0, 255]`` until :func:`normalize`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F

from weaksam.cam.config import ClassifierConfig
from weaksam.cam.models import IMAGENET_MEAN, IMAGENET_STD
from weaksam.data.imageio import load_image
from weaksam.io.tables import read_table
from weaksam.train.cache import ImageCache

LABEL_COLUMNS: tuple[str, ...] = ("image_id", "image_index", "path", "split", "labels", "error")


def read_label_rows(manifest: str, split: str) -> list[dict[str, Any]]:
    """Good rows (no error) of ``split`` with the label columns only (never ``gt_*``)."""
    tbl = read_table(manifest, columns=LABEL_COLUMNS)
    return [r for r in tbl.to_pylist() if r["split"] == split and r["error"] is None]


def label_matrix(labels: Sequence[Sequence[int] | None], num_classes: int) -> torch.Tensor:
    """``NxC`` float 0/1 targets from per-image class lists."""
    out = torch.zeros(len(labels), num_classes)
    for i, lab in enumerate(labels):
        if lab:
            out[i, list(lab)] = 1.0
    return out


def holdout_split(ids: Sequence[str], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Deterministic (train, validation) indices of ``ids``: ``round(fraction * N)`` held out.

    The choice depends only on the sorted ids and the seed, so every worker agrees.
    """
    order = sorted(range(len(ids)), key=lambda i: ids[i])
    rng = np.random.default_rng(seed)
    perm = [order[i] for i in rng.permutation(len(order))]
    n_val = round(fraction * len(ids))
    if len(ids) > 1:
        n_val = min(n_val, len(ids) - 1)
    return sorted(perm[n_val:]), sorted(perm[:n_val])


def resize_uint8(image: npt.NDArray[np.uint8], size: int) -> torch.Tensor:
    """``HxWx3`` uint8 → ``3xSxS`` uint8 square (bilinear, antialiased)."""
    t = torch.as_tensor(image).permute(2, 0, 1)[None].float()
    t = F.interpolate(t, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return t[0].round().clamp(0, 255).to(torch.uint8)


class LazyImages:
    """``Nx3xSxS`` uint8 images decoded and resized when indexed, kept in a bounded cache.

    ``images[idx]`` (an index tensor, a list of ints or a slice) is the stacked batch, the same
    tensor an eager decode of every image would give; memory is the cache's bound, not ``N``.
    """

    def __init__(self, paths: Sequence[str], size: int, cache: ImageCache) -> None:
        self.paths = list(paths)
        self.size = size
        self.cache = cache

    def __len__(self) -> int:
        return len(self.paths)

    def _one(self, i: int) -> torch.Tensor:
        return self.cache.get(str(i), partial(_resized, self.paths[i], self.size))

    def __getitem__(self, idx: torch.Tensor | Sequence[int] | slice) -> torch.Tensor:
        if isinstance(idx, slice):
            picks = list(range(*idx.indices(len(self))))
        elif isinstance(idx, torch.Tensor):
            picks = [int(i) for i in idx.reshape(-1).tolist()]
        else:
            picks = [int(i) for i in idx]
        if not picks:
            return torch.zeros(0, 3, self.size, self.size, dtype=torch.uint8)
        return torch.stack([self._one(i) for i in picks])


def _resized(path: str, size: int) -> torch.Tensor:
    return resize_uint8(load_image(path), size)


@dataclass
class ImageSet:
    """Images resized to a common square side, with their label targets.

    Attributes:
        images: ``Nx3xSxS`` uint8, decoded on access (:class:`LazyImages`). targets: ``NxC``
            float 0/1. ids: image ids.
    """

    images: LazyImages
    targets: torch.Tensor
    ids: list[str]


def load_image_set(
    rows: Sequence[Mapping[str, Any]], size: int, num_classes: int, cache_mb: float = 0
) -> ImageSet:
    """The images of ``rows`` (label columns as in :func:`read_label_rows`) at ``size``,
    decoded when used; at most ``cache_mb`` MiB of them kept (0: none)."""
    return ImageSet(
        LazyImages([str(r["path"]) for r in rows], size, ImageCache(cache_mb)),
        label_matrix([r["labels"] for r in rows], num_classes),
        [str(r["image_id"]) for r in rows],
    )


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8-range ``Bx3xHxW`` → float, ImageNet mean/std normalised."""
    mean = torch.tensor(IMAGENET_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=images.device).view(1, 3, 1, 1)
    return (images.float() / 255.0 - mean) / std


def jitter_size(cfg: ClassifierConfig, stride: int, gen: torch.Generator) -> int:
    """A random square side in ``input_size * scale_jitter``, a multiple of ``stride``."""
    lo, hi = cfg.scale_jitter
    u = float(torch.rand((), generator=gen))
    side = cfg.input_size * (lo + (hi - lo) * u)
    return max(stride, round(side / stride) * stride)


def augment_batch(
    images: torch.Tensor, cfg: ClassifierConfig, stride: int, gen: torch.Generator
) -> torch.Tensor:
    """Training augmentation of ``Bx3xSxS`` uint8 images → normalised float ``Bx3xS'xS'``.

    Scale jitter (one random side per batch), per-image horizontal flip, brightness /
    contrast / saturation factors in ``[1 - j, 1 + j]`` and a random channel order.
    """
    side = jitter_size(cfg, stride, gen)
    x = images.float()
    if x.shape[-1] != side or x.shape[-2] != side:
        x = F.interpolate(x, size=(side, side), mode="bilinear", antialias=True)
    b = x.shape[0]
    if cfg.hflip:
        flip = torch.rand(b, generator=gen) < 0.5
        x[flip] = x[flip].flip(-1)
    j = cfg.color_jitter
    if j > 0:

        def factor() -> torch.Tensor:
            return (1 + (torch.rand(b, generator=gen) * 2 - 1) * j).view(b, 1, 1, 1)

        x = x * factor()
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * factor() + mean
        gray = x.mean(dim=1, keepdim=True)
        x = (x - gray) * factor() + gray
        perms = torch.stack([torch.randperm(3, generator=gen) for _ in range(b)])
        x = torch.gather(x, 1, perms.view(b, 3, 1, 1).expand_as(x))
        x = x.clamp(0, 255)
    return normalize(x)
