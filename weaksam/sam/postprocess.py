# Portions of this file follow segment-anything (https://github.com/facebookresearch/
# segment-anything), Copyright (c) Meta Platforms, Inc. and affiliates, licensed under the
# Apache License, Version 2.0. See NOTICE.
"""Mask post-processing on torch tensors: upsampling, stability, boxes, RLE.

Every function works on the model's device and reuses segment-anything's own helpers where
they define the reference behaviour (``calculate_stability_score``, ``batched_mask_to_box``)
or repeats its arithmetic (``Sam.postprocess_masks``), so results equal
``SamAutomaticMaskGenerator``'s bit for bit. :func:`measure_logits` gets the same stability
scores and boxes without making full-resolution masks: each mask is upsampled only over its
window (the engine's path when no RLE is asked for).

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
    "measure_logits",
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
    return _upsample(low_res, model.image_encoder.img_size, input_size, original_size)


def _upsample(
    low_res: torch.Tensor,
    img_size: int,
    input_size: tuple[int, int],
    original_size: tuple[int, int],
) -> torch.Tensor:
    """:func:`upsample_logits` with the model's input side ``img_size`` given."""
    if low_res.shape[0] == 0:
        return low_res.new_zeros((0, *original_size), dtype=torch.float32)
    size = (img_size, img_size)
    up = F.interpolate(low_res.float()[:, None], size, mode="bilinear", align_corners=False)
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


def _first_last(flags: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """First and last ``True`` index along the last axis of ``flags`` ``NxL`` (``L`` and ``-1``
    for a row without any)."""
    n = flags.shape[-1]
    idx = torch.arange(n, device=flags.device)
    first = torch.where(flags, idx, n).amin(-1)
    last = torch.where(flags, idx, -1).amax(-1)
    return first, last


def _counts(
    logits: torch.Tensor, mask_threshold: float, offset: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixels of logits ``NxHxW`` above ``mask_threshold + offset`` and above
    ``mask_threshold - offset``: ``N`` int32 each, ``calculate_stability_score``'s integers."""
    inter = (logits > mask_threshold + offset).flatten(1).sum(1, dtype=torch.int32)
    union = (logits > mask_threshold - offset).flatten(1).sum(1, dtype=torch.int32)
    return inter, union


def _count_and_box(
    logits: torch.Tensor, mask_threshold: float, offset: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`_counts`, the inclusive XYXY box of the pixels ``> mask_threshold`` (``Nx4``
    int64, ``[0, 0, 0, 0]`` when empty, as ``batched_mask_to_box``) and ``N`` bool non-empty,
    of logits ``NxHxW``."""
    inter, union = _counts(logits, mask_threshold, offset)
    y0, y1 = _first_last(logits.amax(2) > mask_threshold)
    x0, x1 = _first_last(logits.amax(1) > mask_threshold)
    nonempty = y0 <= y1
    return inter, union, torch.stack([x0, y0, x1, y1], 1) * nonempty[:, None], nonempty


def _upsample_deps(n_low: int, factor: int, n_out: int) -> torch.Tensor:
    """Low-resolution rows read by output rows ``0..n_out-1`` of a ``factor``-times bilinear
    upsampling (``align_corners=False``): ``n_outx2`` int64 on the CPU (first, last), both
    nondecreasing. Exact for a power-of-two ``factor`` (source positions are dyadic)."""
    src = ((torch.arange(n_out, dtype=torch.float64) + 0.5) / factor - 0.5).clamp(min=0.0)
    first = src.floor().long().clamp(max=n_low - 1)
    return torch.stack([first, (first + 1).clamp(max=n_low - 1)], 1)


def _upsample_factor(low_shape: tuple[int, int], img_size: int) -> int:
    """``img_size / h`` when it is a power of two and the low-res logits are square, else 0."""
    h, w = low_shape
    factor = img_size // h if h == w and h > 0 else 0
    return factor if factor > 0 and factor * h == img_size and factor & (factor - 1) == 0 else 0


def measure_logits(
    low_res: torch.Tensor,
    img_size: int,
    input_size: tuple[int, int],
    original_size: tuple[int, int],
    mask_threshold: float,
    offset: float,
    *,
    group: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stability scores and boxes of the masks that low-resolution logits ``Nxhxw`` upsample
    to, computed only inside each mask's window.

    Equals :func:`upsample_logits` followed by :func:`stability_scores` and, on
    ``logits > mask_threshold``, :func:`mask_boxes`, bit for bit, without the ``NxHxW``
    logits. A bilinear pixel is a convex combination of the (up to) 2x2 low-resolution
    pixels it reads, so it can pass the lowest threshold ``t`` (of ``mask_threshold`` and
    ``mask_threshold ± offset``) only if one of them does ("active" pixels). Each mask is
    therefore upsampled only over a crop of its low-resolution logits that holds the rows
    and columns with active pixels plus one inactive row and column on each side (or the
    image border): ``F.interpolate`` with SAM's factor ``img_size / h`` (a power of two)
    samples a crop at exactly the positions, weights and arithmetic of the full upsampling,
    and the pixels at the crop's edges, where its clamping differs, read only inactive rows
    or columns, so stay at or below ``t``. Masks go ``group`` at a time, sorted by crop size.

    Falls back to the full-resolution path, a few masks at a time, when the image needs
    SAM's second resize (``input_size != original_size``: its factor is not an integer) or
    the factor is not a power of two.

    Args:
        low_res: ``Nxhxw`` float logits (SAM's low-resolution masks, ``h = w``).
        img_size: the model's input side (``Sam.image_encoder.img_size``).
        input_size: ``(h, w)`` of the resized image before padding.
        original_size: ``(H, W)`` of the image.
        mask_threshold: logit threshold of the masks.
        offset: the stability score's threshold offset.
        group: masks per upsampling call; default 8 on CPU (where padding crops to a common
            size costs most), 64 on accelerators (where kernel launches do).

    Returns:
        ``(stability, boxes, nonempty)``: ``N`` float32 (NaN when both masks are empty),
        ``Nx4`` int64 inclusive XYXY (``[0, 0, 0, 0]`` when empty) and ``N`` bool.
    """
    n = low_res.shape[0]
    dev = low_res.device
    low = low_res.float()
    h, w = low.shape[-2], low.shape[-1]
    factor = _upsample_factor((h, w), img_size)
    if group is None:
        group = 8 if dev.type == "cpu" else 64
    if n == 0 or factor == 0 or tuple(input_size) != tuple(original_size):
        parts = []
        # a few MB per chunk on CPU (in cache), a few hundred MB on accelerators (few launches)
        budget = 2**20 if dev.type == "cpu" else 2**26
        step = max(1, budget // max(img_size * img_size, original_size[0] * original_size[1]))
        for s in range(0, n, step):
            logits = _upsample(low[s : s + step], img_size, input_size, original_size)
            parts.append(_count_and_box(logits, mask_threshold, offset))
        if not parts:
            parts.append(_count_and_box(low.new_zeros((0, 1, 1)), mask_threshold, offset))
        inter, union, boxes, nonempty = (torch.cat(t) for t in zip(*parts, strict=True))
        return inter / union, boxes, nonempty

    ih, iw = input_size
    rows = _upsample_deps(h, factor, ih)  # ih x 2
    cols = _upsample_deps(w, factor, iw)  # iw x 2
    seen_h, seen_w = int(rows[-1, 1]) + 1, int(cols[-1, 1]) + 1
    rows, cols = rows.to(dev), cols.to(dev)
    t_lo, t_hi = mask_threshold - offset, mask_threshold + offset
    # The weights are multiples of 1 / (2 * factor) and sum to exactly 1; rounding t * weight
    # can still put a pixel a few ulps of t above t (never when t = 0): the margin covers it.
    t_min = min(mask_threshold, t_hi, t_lo)
    t_active = t_min - 1e-5 * abs(t_min)
    # only the low-res rows and columns that some pixel of the unpadded image reads
    seen = low[:, :seen_h, :seen_w]
    r0, r1 = _first_last(seen.amax(2) > t_active)
    c0, c1 = _first_last(seen.amax(1) > t_active)
    # the pixel window: rows (columns) that read an active row (column)
    y0 = torch.searchsorted(rows[:, 1].contiguous(), r0, side="left")
    y1 = torch.searchsorted(rows[:, 0].contiguous(), r1, side="right") - 1
    x0 = torch.searchsorted(cols[:, 1].contiguous(), c0, side="left")
    x1 = torch.searchsorted(cols[:, 0].contiguous(), c1, side="right") - 1
    live = (r0 <= r1) & (c0 <= c1) & (y0 <= y1) & (x0 <= x1)
    # the low-res rows (columns) the window reads: one inactive one beyond each active end
    lr0 = rows[y0.clamp(max=ih - 1), 0]
    lc0 = cols[x0.clamp(max=iw - 1), 0]
    span_h = torch.where(live, rows[y1.clamp(min=0), 1] - lr0 + 1, 0)
    span_w = torch.where(live, cols[x1.clamp(min=0), 1] - lc0 + 1, 0)

    order = torch.argsort(span_h * span_w)
    order = order[live[order]]
    spans = torch.stack([span_h[order], span_w[order]], 1).cpu()  # the one host sync
    # groups of `group` masks share a crop size (spans are padded with zeros to whole groups)
    m = spans.shape[0]
    padded = torch.cat([spans, spans.new_zeros((-m % group, 2))])
    sizes = padded.view(-1, group, 2).amax(1)
    # each mask's crop, moved inside the image where it would stick out
    size = sizes.repeat_interleave(group, 0)[:m].to(dev)
    top = torch.minimum(lr0[order], h - size[:, 0])
    left = torch.minimum(lc0[order], w - size[:, 1])
    ar = torch.arange(img_size, device=dev)
    # per mask and pixel row (column): the largest logit on it, -inf outside the crop
    row_max = low.new_full((n, img_size), float("-inf"))
    col_max = low.new_full((n, img_size), float("-inf"))
    counts = []
    for g, (kh, kw) in enumerate(sizes.tolist()):
        s = g * group
        idx, t, lt = order[s : s + group], top[s : s + group], left[s : s + group]
        ry, cx = t[:, None] + ar[:kh], lt[:, None] + ar[:kw]
        crop = low[idx[:, None, None], ry[:, :, None], cx[:, None, :]]
        up = F.interpolate(
            crop[:, None], (factor * kh, factor * kw), mode="bilinear", align_corners=False
        )[:, 0]
        py = factor * t[:, None] + ar[: factor * kh]  # the crops' pixel rows and columns
        px = factor * lt[:, None] + ar[: factor * kw]
        # pixels in the padding (the resized image is not square) are not the image's
        if ih < img_size:
            up = up.masked_fill((py >= ih)[:, :, None], float("-inf"))
        if iw < img_size:
            up = up.masked_fill((px >= iw)[:, None, :], float("-inf"))
        counts.append(torch.stack(_counts(up, mask_threshold, offset), 1))
        row_max[idx[:, None], py] = up.amax(2)
        col_max[idx[:, None], px] = up.amax(1)
    inter = torch.zeros(n, dtype=torch.int32, device=dev)
    union = torch.zeros(n, dtype=torch.int32, device=dev)
    if counts:
        both = torch.cat(counts)
        inter[order], union[order] = both[:, 0], both[:, 1]
    y0, y1 = _first_last(row_max > mask_threshold)
    x0, x1 = _first_last(col_max > mask_threshold)
    nonempty = y0 <= y1
    return inter / union, torch.stack([x0, y0, x1, y1], 1) * nonempty[:, None], nonempty
