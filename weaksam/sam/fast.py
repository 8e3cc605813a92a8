# Portions of this file follow segment-anything (https://github.com/facebookresearch/
# segment-anything), Copyright (c) Meta Platforms, Inc. and affiliates, licensed under the
# Apache License, Version 2.0 (the image encoder's attention with decomposed relative
# positions, ``image_attention_sdpa``). See NOTICE.
"""The prompting engine's fast path (``EngineConfig.precision: fast``) and its agreement check.

``precision: exact`` (the default) runs segment-anything's modules as they are, in float32:
the grid equals ``SamAutomaticMaskGenerator`` and the prompts ``SamPredictor``, bit for bit
on CPU. ``precision: fast`` trades that equality for speed on a GPU:

- **one compute dtype end to end** (on CUDA fp16, or bf16 when ``sam.autocast_dtype`` asks
  for it; float32 on CPU, :func:`fast_dtype`): the image encoder and the mask decoder's
  transformer and upscaling are cast, the dense positional encoding and no-mask embedding are
  cast once per image, and the sparse prompt embeddings after the (float32, tiny) prompt
  encoder. Autocast leaves adds, layer norms and positional encodings in float32; here they
  are not. The IoU head, the hypernetwork MLPs and the mask logits' last product stay float32,
  as do mask post-processing (thresholds, stability, boxes) and predicted IoUs.
- **SDPA** (``torch.nn.functional.scaled_dot_product_attention``) in the encoder — the
  decomposed relative positions become an additive bias (:func:`decomposed_rel_pos_bias`) —
  and in the decoder (:func:`weaksam.sam.engine.run_two_way_transformer` with ``sdpa``).
- **images batched** through the encoder (``EngineConfig.encoder_batch``,
  :meth:`~weaksam.sam.engine.SamPromptEngine.embed_images`);
- **fixed chunk shapes**: every decoder call gets exactly ``points_per_batch`` prompts (the
  last chunk is padded by repeating its last prompt, whose rows are then dropped) and the
  predicted-IoU filter applies after the mask head, not before, so the batch dimension never
  depends on the data (grid, single-point and box prompts keep one shape; class-wise prompts
  vary only in their number of points);
- **torch.compile** of the encoder and decoder (``EngineConfig.compile``; the first calls
  compile, a new class-prompt length makes that dimension dynamic, so benchmarks warm up
  untimed).

The decoder's image side is shared by all prompts on both paths (:class:`~weaksam.sam.engine
.ImageTokens`). The fast path is checked against the exact one by :func:`box_agreement`
(matched IoU ≥ 0.9 for ≥ 98 % of proposals; ``tests/sam/test_sam_fast.py`` on CPU in float32,
``bench/fast_agreement.py`` on the benchmark's images in float32 and bf16).
"""

from __future__ import annotations

import types
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from segment_anything.modeling import Sam
from segment_anything.modeling.image_encoder import Attention as ImageAttention
from segment_anything.modeling.image_encoder import get_rel_pos

from weaksam.geometry.boxes import box_iou

PRECISIONS = ("exact", "fast")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def fast_dtype(device: torch.device, autocast_dtype: str) -> torch.dtype:
    """The fast path's compute dtype: on CUDA ``autocast_dtype`` (``bf16``/``fp16``), fp16
    when it is ``none``; float32 on CPU (no fast half-precision matmuls to gain from).

    fp16 is the default because it is the half precision that passes the agreement bar: on
    the benchmark's 120 test images with the demo SAM, fp16 matches 99.3 % of the exact path's
    proposals at IoU 0.9 and bf16 95.4 % (its 7-bit mantissa flips the grid's NMS between
    near-equal masks; ``bench/fast_agreement.py``, docs/benchmarks.md)."""
    if device.type == "cuda":
        return _DTYPES.get(autocast_dtype, torch.float16)
    return torch.float32


def decomposed_rel_pos_bias(
    q: torch.Tensor, rel_pos_h: torch.Tensor, rel_pos_w: torch.Tensor, size: tuple[int, int]
) -> torch.Tensor:
    """segment-anything's ``add_decomposed_rel_pos`` as an additive attention bias.

    Args:
        q: queries ``BxNxTxD`` (``N`` heads, ``T = h*w`` tokens, unscaled).
        rel_pos_h: relative position table of the height axis ``(2h-1)xD``.
        rel_pos_w: of the width axis ``(2w-1)xD``.
        size: ``(h, w)`` of the token grid (queries and keys alike).

    Returns:
        ``BxNxTxT`` bias: ``bias[b, n, (i, j), (k, l)] = q·Rh[i, k] + q·Rw[j, l]``, what
        ``add_decomposed_rel_pos`` adds to the attention logits.
    """
    h, w = size
    b, n, t, d = q.shape
    rh = get_rel_pos(h, h, rel_pos_h).to(q.dtype)
    rw = get_rel_pos(w, w, rel_pos_w).to(q.dtype)
    r_q = q.reshape(b * n, h, w, d)
    rel_h = torch.einsum("bhwc,hkc->bhwk", r_q, rh)
    rel_w = torch.einsum("bhwc,wkc->bhwk", r_q, rw)
    bias = rel_h[:, :, :, :, None] + rel_w[:, :, :, None, :]
    return bias.reshape(b, n, t, t)


def image_attention_sdpa(self: ImageAttention, x: torch.Tensor) -> torch.Tensor:
    """``segment_anything.modeling.image_encoder.Attention.forward`` through SDPA.

    ``x`` ``BxHxWxC`` → ``BxHxWxC``. The same function as the original (softmax of
    ``q·k / sqrt(D)`` plus the relative-position bias, times ``v``), computed by
    ``scaled_dot_product_attention`` instead of an explicit ``TxT`` softmax.
    """
    b, h, w, _ = x.shape
    qkv = self.qkv(x).reshape(b, h * w, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)  # BxNxTxD each
    bias = (
        decomposed_rel_pos_bias(q, self.rel_pos_h, self.rel_pos_w, (h, w))
        if self.use_rel_pos
        else None
    )
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    out = out.view(b, self.num_heads, h, w, -1).permute(0, 2, 3, 1, 4).reshape(b, h, w, -1)
    return self.proj(out)


def use_sdpa_encoder(model: Sam) -> int:
    """Route every attention of ``model``'s image encoder through :func:`image_attention_sdpa`
    (the instances' ``forward``; parameters and state-dict keys are unchanged). Idempotent.
    Returns the number of attention layers patched."""
    n = 0
    for module in model.image_encoder.modules():
        if isinstance(module, ImageAttention):
            module.forward = types.MethodType(image_attention_sdpa, module)
            n += 1
    return n


def prepare_fast_model(model: Sam, dtype: torch.dtype, *, compile_model: bool = False) -> Sam:
    """Make ``model`` (in place) the fast path's: image encoder and mask decoder in ``dtype``,
    SDPA in the encoder, optionally compiled (``nn.Module.compile``: in place, same keys).
    The prompt encoder stays float32: its Fourier features of pixel coordinates need float32,
    and its outputs are cast by the engine. Returns ``model``."""
    model.image_encoder.to(dtype)
    model.mask_decoder.to(dtype)
    # the small heads that turn tokens into predicted IoUs and mask logits stay float32
    model.mask_decoder.iou_prediction_head.float()
    model.mask_decoder.output_hypernetworks_mlps.float()
    use_sdpa_encoder(model)
    if compile_model:
        model.image_encoder.compile(dynamic=False)
    return model


def box_agreement(
    ref_boxes: npt.ArrayLike,
    boxes: npt.ArrayLike,
    ref_groups: npt.ArrayLike | None = None,
    groups: npt.ArrayLike | None = None,
    *,
    iou_thresh: float = 0.9,
) -> tuple[int, int]:
    """How many proposals of one image two engines agree on.

    Proposals are matched one to one, greedily by decreasing IoU, only within the same group
    (e.g. the proposal source ``grid``/``point:fine``/…); a match counts when its IoU is
    ``>= iou_thresh``.

    Args:
        ref_boxes: ``Nx4`` XYXY of the reference (exact) path.
        boxes: ``Mx4`` XYXY of the path under test.
        ref_groups, groups: ``N`` / ``M`` group labels, or ``None`` (one group).
        iou_thresh: IoU a match needs.

    Returns:
        ``(matched, total)`` with ``total = max(N, M)``: extra or missing proposals count as
        disagreements. ``matched / total`` is the agreement (1 when both are empty).
    """
    a = np.asarray(ref_boxes, np.float32).reshape(-1, 4)
    b = np.asarray(boxes, np.float32).reshape(-1, 4)
    total = max(len(a), len(b))
    if not len(a) or not len(b):
        return 0, total
    iou = box_iou(a, b)
    if ref_groups is not None or groups is not None:
        ga = np.asarray(ref_groups if ref_groups is not None else [""] * len(a), dtype=object)
        gb = np.asarray(groups if groups is not None else [""] * len(b), dtype=object)
        iou = np.where(ga[:, None] == gb[None, :], iou, -1.0)
    order = np.argsort(-iou, axis=None, kind="stable")
    used_a = np.zeros(len(a), bool)
    used_b = np.zeros(len(b), bool)
    matched = 0
    for flat in order:
        i, j = divmod(int(flat), len(b))
        if iou[i, j] < iou_thresh:
            break
        if used_a[i] or used_b[j]:
            continue
        used_a[i] = used_b[j] = True
        matched += 1
    return matched, total


def agreement_summary(pairs: list[tuple[int, int]]) -> dict[str, Any]:
    """Pooled agreement of per-image ``(matched, total)`` pairs: ``{"matched", "total",
    "agreement"}`` (agreement 1.0 when there is nothing to compare)."""
    matched = sum(m for m, _ in pairs)
    total = sum(t for _, t in pairs)
    return {
        "matched": matched,
        "total": total,
        "agreement": matched / total if total else 1.0,
    }
