# Portions of this file follow segment-anything (https://github.com/facebookresearch/
# segment-anything), Copyright (c) Meta Platforms, Inc. and affiliates, licensed under the
# Apache License, Version 2.0. See NOTICE.
"""The SAM prompting engine: one encoder pass per image, all prompts through the decoder.

:class:`SamPromptEngine` holds only the model and its config; each call encodes the image
into an :class:`ImageEmbedding` that lives in the call, so one engine may serve several
threads on different images.

- :meth:`SamPromptEngine.generate_grid` equals segment-anything's
  ``SamAutomaticMaskGenerator`` with ``crop_n_layers=0`` and ``min_mask_region_area=0`` (same
  points, filters and NMS; boxes equal up to the inclusive → continuous ``+1``), without its
  cost: the predicted-IoU filter runs on the IoU token before any mask is upscaled, only the
  survivors' stability scores and boxes are measured, each inside its own window
  (:func:`~weaksam.sam.postprocess.measure_logits`, bit for bit AMG's full-resolution
  values), and no RLE is built unless masks are asked for (then only for the masks NMS keeps).
- :meth:`~SamPromptEngine.predict_points`: WeakSAM's single-point prompts (multimask; tokens
  1 and 2 kept, WeakSAM's ``masks[1:]``).
- :meth:`~SamPromptEngine.predict_multipoint`: WeakSAM's class-wise prompts (all points of a
  class in one prompt), batched with prompts of the same point count (padding would change
  the masks, see :func:`weaksam.sam.prompts.bucket_by_size`).
- :meth:`~SamPromptEngine.predict_boxes`: box prompts for pseudo-ground-truth masks.
- :meth:`~SamPromptEngine.generate`: grid + point + class prompts of one image as a
  :class:`ProposalSet` in WeakSAM's order (:func:`generate_proposal_set`, shared with the SAM 2.1
  engine through the :class:`PromptEngine` protocol).

The decoder runs as :func:`run_two_way_transformer` and :func:`predict_mask_logits`: the
operations of segment-anything's ``MaskDecoder`` (same results bit for bit), except that the
prompt-independent image side of its first block is computed once per image
(:class:`ImageTokens`) rather than once per prompt.

All boxes leaving this module are XYXY float32 in original-image pixels, continuous
convention (:mod:`weaksam.geometry.boxes`).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from segment_anything.modeling import MaskDecoder, Sam
from segment_anything.modeling.transformer import Attention
from segment_anything.utils.transforms import ResizeLongestSide
from torchvision.ops import nms

from weaksam.configlib import FieldError, check_at_least, check_choice, check_fraction
from weaksam.sam.build import SamConfig, build_sam
from weaksam.sam.fast import PRECISIONS, fast_dtype, prepare_fast_model
from weaksam.sam.postprocess import (
    encode_binary_masks,
    inclusive_to_continuous,
    mask_boxes,
    measure_logits,
    stability_scores,
    upsample_logits,
)
from weaksam.sam.prompts import (
    bucket_by_size,
    check_labels,
    check_points,
    grid_points,
    group_points_by_class,
    make_groups,
    order_kinds,
)

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]

_AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


BOX_MASKS = ("single", "best_iou", "token")


@dataclass(frozen=True)
class EngineConfig:
    """Prompting settings; the defaults are WeakSAM's (reference code, see the method notes).

    Attributes:
        points_per_side: grid points per side for the "everything" grid (32 → 1024 points);
            0 disables the grid.
        points_per_batch: prompts per decoder call (chunk size), for every prompt type.
        pred_iou_thresh: grid masks need predicted IoU ``>`` this (0 disables, as in AMG).
        stability_score_thresh: grid masks need stability ``>=`` this (0 disables).
        stability_score_offset: logit offset of the stability score.
        box_nms_thresh: IoU threshold of the NMS over grid masks (scored by predicted IoU,
            on AMG's inclusive boxes).
        mask_threshold: logit threshold that binarises masks (SAM's ``mask_threshold``).
        keep_multimask_tokens: multimask outputs kept for point and class prompts, 0-based;
            ``(1, 2)`` is WeakSAM's ``masks[1:]`` (drops the smallest, sub-part mask).
        point_pred_iou_thresh: optional predicted-IoU filter for point/class prompts (WeakSAM:
            none, 0).
        box_mask: the mask each box prompt gives: ``single`` (SAM's single-mask output,
            ``multimask_output=False``, SAM's own use of box prompts; the default),
            ``best_iou`` (the multimask output with the highest predicted IoU) or ``token``
            (the multimask output ``box_mask_token``, 0–2).
        box_mask_token: the multimask output of ``box_mask: token``.
        return_masks: also return RLE masks (only ever built for masks that are kept).
        keep_empty: keep point/class proposals whose mask is empty (box ``[0, 0, 0, 0]``);
            WeakSAM stores them, by default they are dropped.
        min_box_size: drop proposals narrower or shorter than this many pixels (0: keep all).
        point_kind: the kind of points given without ``point_kinds``.
        kind_order: output order of point kinds (WeakSAM: coarse, fine, cross; our peaks stage
            names its two map kinds ``cam`` and ``refined``); other kinds follow in order of
            appearance.
        classwise_kinds: kinds that also get one multi-point prompt per class (WeakSAM: coarse
            and fine, not cross; here also ``cam``/``refined`` of the peaks stage and ``peak``,
            the kind of points given without kinds).
        final_nms_thresh: NMS over all proposals of an image (continuous boxes, scored by
            predicted IoU); 0 disables (WeakSAM: no cross-source NMS).
        max_proposals: keep at most this many proposals, the highest-scoring ones (0: no cap).
        precision: ``exact`` (segment-anything's modules in float32; the grid equals AMG and
            the prompts ``SamPredictor``) or ``fast`` (:mod:`weaksam.sam.fast`: one compute
            dtype end to end, fp16 on CUDA unless ``sam.autocast_dtype: bf16``; SDPA; batched
            encoder; fixed decoder shapes), checked against ``exact`` by box agreement.
        encoder_batch: images per encoder pass on the fast path (``exact`` encodes one at a
            time, as ``SamPredictor``).
        compile: ``torch.compile`` the encoder and decoder on the fast path (the first calls
            compile; worth it for long GPU jobs, not on CPU).
    """

    points_per_side: int = 32
    points_per_batch: int = 64
    pred_iou_thresh: float = 0.3
    stability_score_thresh: float = 0.3
    stability_score_offset: float = 1.0
    box_nms_thresh: float = 0.3
    mask_threshold: float = 0.0
    keep_multimask_tokens: tuple[int, ...] = (1, 2)
    point_pred_iou_thresh: float = 0.0
    box_mask: str = "single"
    box_mask_token: int = 0
    return_masks: bool = False
    keep_empty: bool = False
    min_box_size: float = 0.0
    point_kind: str = "peak"
    kind_order: tuple[str, ...] = ("cam", "refined", "coarse", "fine", "cross")
    classwise_kinds: tuple[str, ...] = ("cam", "refined", "coarse", "fine", "peak")
    final_nms_thresh: float = 0.0
    max_proposals: int = 0
    precision: str = "exact"
    encoder_batch: int = 1
    compile: bool = False

    def __post_init__(self) -> None:
        check_at_least(self, 0, "points_per_side", "max_proposals", "min_box_size")  # 0: off
        check_at_least(self, 1, "points_per_batch", "encoder_batch")
        check_choice(self, "precision", PRECISIONS, "engine precision")
        toks = self.keep_multimask_tokens
        if not toks or len(set(toks)) != len(toks) or any(t not in (0, 1, 2) for t in toks):
            raise FieldError(
                "keep_multimask_tokens",
                "{keep_multimask_tokens} must be distinct values in 0..2, got {value}",
                toks,
            )
        check_choice(self, "box_mask", BOX_MASKS, "box-prompt mask")
        if self.box_mask_token not in (0, 1, 2):
            raise FieldError(
                "box_mask_token",
                "{box_mask_token} must be a multimask output, 0..2, got {value}",
                self.box_mask_token,
            )
        # predicted IoUs are regressed (not bounded by 1): a high threshold keeps nothing
        check_at_least(self, 0, "pred_iou_thresh", "point_pred_iou_thresh")
        check_fraction(self, "stability_score_thresh", "box_nms_thresh", "final_nms_thresh")
        check_at_least(self, 0, "stability_score_offset")


@dataclass(frozen=True)
class ImageEmbedding:
    """One encoded image; lives for one call (never stored on the engine).

    Attributes:
        features: image embedding ``1xCxhxw`` (C = decoder width, h = w = img_size // 16).
        image_pe: dense positional encoding ``1xCxhxw``.
        input_size: ``(h, w)`` after ``ResizeLongestSide`` (before padding).
        original_size: ``(H, W)`` of the image.
        tokens: the decoder's prompt-independent work on this image (:class:`ImageTokens`).
    """

    features: torch.Tensor
    image_pe: torch.Tensor
    input_size: tuple[int, int]
    original_size: tuple[int, int]
    tokens: ImageTokens


@dataclass(frozen=True)
class PromptMasks:
    """Masks predicted for a list of prompts, one row per kept mask.

    Attributes:
        boxes: ``Nx4`` float32 XYXY, continuous convention, original pixels; ``[0, 0, 0, 0]``
            for an empty mask.
        scores: ``N`` float32, SAM's predicted IoU.
        stability: ``N`` float32, AMG's stability score (NaN when undefined).
        prompt_index: ``N`` int64, index of the prompt (grid point, point, group, box).
        token: ``N`` int64, multimask output index 0..2 (-1: the single-mask output).
        nonempty: ``N`` bool, false for an empty mask.
        masks: ``N`` RLE counts (:mod:`weaksam.io.rle`) or ``None`` when not requested.
    """

    boxes: FloatArray
    scores: FloatArray
    stability: FloatArray
    prompt_index: IntArray
    token: IntArray
    nonempty: npt.NDArray[np.bool_]
    masks: list[bytes] | None = None

    def __len__(self) -> int:
        return int(self.boxes.shape[0])


@dataclass(frozen=True)
class ProposalSet:
    """All proposals of one image, in WeakSAM's order (grid, then per kind points, classes).

    Attributes:
        boxes: ``Nx4`` float32 XYXY, continuous convention, original pixels.
        scores: ``N`` float32, SAM's predicted IoU.
        sources: ``N`` strings: ``"grid"``, ``"point:<kind>"``, ``"class:<kind>"``.
        class_hints: ``N`` int32, class of the prompting point(s); -1 for the grid.
        masks: ``N`` RLE counts of size ``image_size`` or ``None``.
        image_size: ``(H, W)``.
    """

    boxes: FloatArray
    scores: FloatArray
    sources: list[str]
    class_hints: npt.NDArray[np.int32]
    masks: list[bytes] | None = None
    image_size: tuple[int, int] = field(default=(0, 0))

    def __len__(self) -> int:
        return int(self.boxes.shape[0])


E = TypeVar("E")


class PromptEngine(Protocol[E]):
    """What the proposal and PGT jobs need of a prompting engine, whatever the model:
    :class:`SamPromptEngine` (SAM) and :class:`~weaksam.sam.sam2_engine.Sam2PromptEngine`
    (SAM 2.1). ``E`` is the engine's encoded-image type (one per image, from ``embed_image``).
    """

    cfg: EngineConfig

    def embed_image(self, image: npt.ArrayLike) -> E: ...

    def embed_images(self, images: Sequence[npt.ArrayLike]) -> list[E]: ...

    def generate_grid(self, emb: E) -> PromptMasks: ...

    def predict_points(
        self, emb: E, points: npt.ArrayLike, labels: npt.ArrayLike | None = None
    ) -> PromptMasks: ...

    def predict_multipoint(
        self, emb: E, groups: Sequence[tuple[npt.ArrayLike, npt.ArrayLike | None]]
    ) -> PromptMasks: ...

    def predict_boxes(self, emb: E, boxes: npt.ArrayLike) -> PromptMasks: ...

    def generate(
        self,
        image: npt.ArrayLike,
        points: npt.ArrayLike | None = None,
        point_classes: npt.ArrayLike | None = None,
        point_kinds: Sequence[str] | None = None,
    ) -> ProposalSet: ...


@dataclass(frozen=True)
class ImageTokens:
    """The prompt-independent part of SAM's mask decoder for one image, computed once.

    ``MaskDecoder.predict_masks`` repeats the image embedding once per prompt, adds the same
    no-mask dense embedding to every copy and, in the first two-way block, projects every
    copy identically (token→image keys and values, image→token queries). Here that is done
    once per image and broadcast over the prompts (:func:`run_two_way_transformer`).

    Attributes:
        keys: ``1x(h*w)xC`` image tokens (image embedding + no-mask embedding), row-major.
        key_pe: ``1x(h*w)xC`` dense positional encoding.
        first_keys: the first block's token→image keys, ``1xNx(h*w)xD`` (``N`` heads of
            width ``D``).
        first_values: the first block's token→image values, ``1xNx(h*w)xD``.
        first_queries: the first block's image→token queries, ``1xNx(h*w)xD``.
        grid: ``(h, w)`` of the image embedding.
    """

    keys: torch.Tensor
    key_pe: torch.Tensor
    first_keys: torch.Tensor
    first_values: torch.Tensor
    first_queries: torch.Tensor
    grid: tuple[int, int]


def _split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """``BxTxC`` → ``BxNxTx(C/N)`` (``Attention._separate_heads``)."""
    b, t, c = x.shape
    return x.reshape(b, t, heads, c // heads).transpose(1, 2)


def _attend(
    attn: Attention, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, sdpa: bool = False
) -> torch.Tensor:
    """``Attention.forward`` after its input projections: ``q`` ``BxNxTqxD``, ``k`` and ``v``
    ``BxNxTkxD`` (a batch of 1 broadcasts) → ``BxTqxC``. ``sdpa``: through
    ``scaled_dot_product_attention`` (the fast path) instead of SAM's explicit softmax."""
    if sdpa:
        b = max(q.shape[0], k.shape[0])
        out = F.scaled_dot_product_attention(
            q.expand(b, -1, -1, -1), k.expand(b, -1, -1, -1), v.expand(b, -1, -1, -1)
        )
    else:
        a = q @ k.permute(0, 1, 3, 2)
        a = a / math.sqrt(q.shape[-1])
        a = torch.softmax(a, dim=-1)
        out = a @ v
    b, n, t, d = out.shape
    return attn.out_proj(out.transpose(1, 2).reshape(b, t, n * d))


def _self_attend(attn: Attention, qk: torch.Tensor, v: torch.Tensor, sdpa: bool) -> torch.Tensor:
    """The decoder's token self-attention ``attn(q=qk, k=qk, v=v)``; ``BxTxC`` → ``BxTxC``."""
    if not sdpa:
        return attn(q=qk, k=qk, v=v)
    n = attn.num_heads
    return _attend(
        attn,
        _split_heads(attn.q_proj(qk), n),
        _split_heads(attn.k_proj(qk), n),
        _split_heads(attn.v_proj(v), n),
        True,
    )


def encode_image_tokens(
    model: Sam, features: torch.Tensor, image_pe: torch.Tensor, dtype: torch.dtype | None = None
) -> ImageTokens:
    """:class:`ImageTokens` of an image's features ``1xCxhxw`` and dense PE ``1xCxhxw``;
    ``dtype``: cast the no-mask embedding and the PE to it first (the fast path)."""
    dense = model.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1)
    if dtype is not None:
        dense, image_pe = dense.to(dtype), image_pe.to(dtype)
    # contiguous: the adds below and in the transformer then give contiguous tensors (the
    # same values) that the projections and layer norms need not copy first
    keys = (features + dense).flatten(2).permute(0, 2, 1).contiguous()
    key_pe = image_pe.flatten(2).permute(0, 2, 1).contiguous()
    block = model.mask_decoder.transformer.layers[0]
    t2i, i2t = block.cross_attn_token_to_image, block.cross_attn_image_to_token
    k = keys + key_pe
    return ImageTokens(
        keys=keys,
        key_pe=key_pe,
        first_keys=_split_heads(t2i.k_proj(k), t2i.num_heads),
        first_values=_split_heads(t2i.v_proj(keys), t2i.num_heads),
        first_queries=_split_heads(i2t.q_proj(k), i2t.num_heads),
        grid=(int(features.shape[-2]), int(features.shape[-1])),
    )


def run_two_way_transformer(
    decoder: MaskDecoder, image: ImageTokens, sparse: torch.Tensor, sdpa: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """SAM's two-way transformer for ``B`` prompts on one image, bit for bit as
    ``MaskDecoder.predict_masks`` runs it, without one copy of the image per prompt.

    Every block is ``TwoWayAttentionBlock.forward`` with the attentions written out; the
    first block takes its image-side projections from ``image``, and the image tokens
    become per-prompt only after its image→token attention.

    Args:
        decoder: the model's mask decoder.
        image: from :func:`encode_image_tokens`.
        sparse: ``BxKxC`` sparse prompt embeddings (``PromptEncoder``; masks are not
            supported: the dense embedding is the no-mask one).
        sdpa: attention through ``scaled_dot_product_attention`` (the fast path; not bit for
            bit).

    Returns:
        ``(queries, keys)``: the output tokens ``Bx(1+M+K)xC`` (IoU token, ``M`` mask
        tokens, prompt tokens) and the image tokens ``Bx(h*w)xC``.
    """
    tr = decoder.transformer
    out_tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight], dim=0)
    tokens = torch.cat((out_tokens.unsqueeze(0).expand(sparse.size(0), -1, -1), sparse), dim=1)
    queries, keys = tokens, image.keys
    for i, block in enumerate(tr.layers):
        sa = block.self_attn
        if block.skip_first_layer_pe:
            queries = _self_attend(sa, queries, queries, sdpa)
        else:
            q = queries + tokens
            queries = queries + _self_attend(sa, q, queries, sdpa)
        queries = block.norm1(queries)
        t2i, i2t = block.cross_attn_token_to_image, block.cross_attn_image_to_token
        if i == 0:
            k_img, v_img, q_img = image.first_keys, image.first_values, image.first_queries
        else:
            k = keys + image.key_pe
            k_img = _split_heads(t2i.k_proj(k), t2i.num_heads)
            v_img = _split_heads(t2i.v_proj(keys), t2i.num_heads)
            q_img = _split_heads(i2t.q_proj(k), i2t.num_heads)
        q_tok = _split_heads(t2i.q_proj(queries + tokens), t2i.num_heads)
        queries = block.norm2(queries + _attend(t2i, q_tok, k_img, v_img, sdpa))
        queries = block.norm3(queries + block.mlp(queries))
        k_tok = _split_heads(i2t.k_proj(queries + tokens), i2t.num_heads)
        v_tok = _split_heads(i2t.v_proj(queries), i2t.num_heads)
        keys = block.norm4(keys + _attend(i2t, q_img, k_tok, v_tok, sdpa))
    fa = tr.final_attn_token_to_image
    k = keys + image.key_pe
    attn_out = _attend(
        fa,
        _split_heads(fa.q_proj(queries + tokens), fa.num_heads),
        _split_heads(fa.k_proj(k), fa.num_heads),
        _split_heads(fa.v_proj(keys), fa.num_heads),
        sdpa,
    )
    return tr.norm_final_attn(queries + attn_out), keys


def predict_mask_logits(
    decoder: MaskDecoder, queries: torch.Tensor, keys: torch.Tensor, grid: tuple[int, int]
) -> torch.Tensor:
    """Low-resolution mask logits ``BxMx4hx4w`` of all ``M`` mask tokens (0: single-mask;
    1–3: multimask) from the transformer's output, as ``MaskDecoder.predict_masks`` computes
    them. ``queries`` ``BxTxC`` and ``keys`` ``Bx(h*w)xC`` from
    :func:`run_two_way_transformer`; ``grid`` is ``(h, w)``."""
    b = keys.shape[0]
    src = keys.transpose(1, 2).view(b, keys.shape[2], *grid)
    upscaled = decoder.output_upscaling(src)
    mlps = decoder.output_hypernetworks_mlps
    # the hypernetworks' dtype (float32 on the fast path too): the logits' last product
    dtype = mlps[0].layers[0].weight.dtype
    queries, upscaled = queries.to(dtype), upscaled.to(dtype)
    hyper = torch.stack([mlp(queries[:, 1 + i, :]) for i, mlp in enumerate(mlps)], dim=1)
    _, c, h, w = upscaled.shape
    return (hyper @ upscaled.view(b, c, h * w)).view(b, hyper.shape[1], h, w)


def _as_image(image: npt.ArrayLike) -> npt.NDArray[np.uint8]:
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise ValueError(f"image must be uint8 HxWx3 (RGB), got dtype {arr.dtype}")
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    elif arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[:, :, :3]
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"image must be HxWx3 (RGB), got shape {arr.shape}")
    return np.ascontiguousarray(arr)


class EncodedImage(Protocol):
    """What :class:`PromptMethods` reads of an engine's encoded image."""

    @property
    def original_size(self) -> tuple[int, int]: ...


EmbT = TypeVar("EmbT", bound=EncodedImage)


class PromptMethods(Generic[EmbT]):
    """The prompting that SAM and SAM 2.1 share: batching, filters, NMS and the row order of
    grids, points, point groups and boxes (:class:`SamPromptEngine`,
    :class:`~weaksam.sam.sam2_engine.Sam2PromptEngine`).

    A subclass supplies the model's own steps: ``_encode`` (images → embeddings),
    ``_decode`` (prompts in the model's input frame → low-res logits, predicted IoU, prompt
    and token per kept mask), ``_finish`` (kept logits → :class:`PromptMasks`), the
    coordinate transforms (``_grid_coords``, ``_point_coords``, ``_box_inputs``) and the
    grid's measurements (``_grid_measure``, ``_grid_masks``).
    """

    cfg: EngineConfig

    @property
    def device(self) -> torch.device:
        raise NotImplementedError

    def _encode(self, images: Sequence[npt.NDArray[np.uint8]]) -> list[EmbT]:
        raise NotImplementedError

    def _decode(
        self,
        emb: EmbT,
        coords: torch.Tensor | None,
        labels: torch.Tensor | None,
        boxes: torch.Tensor | None = None,
        *,
        tokens: Sequence[int] = (0, 1, 2),
        iou_thresh: float = 0.0,
        single: bool = False,
    ) -> tuple[torch.Tensor, ...]:
        raise NotImplementedError

    def _finish(
        self,
        emb: EmbT,
        low: torch.Tensor,
        iou: torch.Tensor,
        prompt_index: torch.Tensor,
        token: torch.Tensor,
        with_masks: bool,
    ) -> PromptMasks:
        raise NotImplementedError

    def _grid_coords(self, points: npt.NDArray[np.float64], size: tuple[int, int]) -> torch.Tensor:
        """Grid points ``Nx2`` (original pixels) → the model's input frame, ``Nx2``."""
        raise NotImplementedError

    def _point_coords(self, points: npt.NDArray[np.float64], size: tuple[int, int]) -> torch.Tensor:
        """Prompt points ``BxKx2`` (original pixels) → the model's input frame (float32)."""
        raise NotImplementedError

    def _box_inputs(
        self, boxes: FloatArray, size: tuple[int, int]
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        """Boxes ``Nx4`` XYXY (original pixels) → ``_decode``'s ``(coords, labels, boxes)``."""
        raise NotImplementedError

    def _grid_measure(
        self, emb: EmbT, low: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Stability ``N``, inclusive boxes ``Nx4`` and ``nonempty`` ``N`` of logits
        ``Nxh'xw'`` at the original size."""
        raise NotImplementedError

    def _grid_masks(self, emb: EmbT, low: torch.Tensor) -> list[bytes]:
        """RLE masks of low-res logits ``Nxh'xw'`` at the original size."""
        raise NotImplementedError

    # ------------------------------------------------------------------ encoder
    @torch.inference_mode()
    def embed_image(self, image: npt.ArrayLike) -> EmbT:
        """Encode an ``HxWx3`` uint8 RGB image (``HxW`` gray and ``HxWx4`` RGBA accepted),
        exactly as the model's own predictor's ``set_image``."""
        return self.embed_images([image])[0]

    @torch.inference_mode()
    def embed_images(self, images: Sequence[npt.ArrayLike]) -> list[EmbT]:
        """:meth:`embed_image` of each image; with ``precision: fast``, ``cfg.encoder_batch``
        images share an encoder pass."""
        arrays = [_as_image(im) for im in images]
        batch = self.cfg.encoder_batch if self.cfg.precision == "fast" else 1
        out: list[EmbT] = []
        for s in range(0, len(arrays), batch):
            out += self._encode(arrays[s : s + batch])
        return out

    # ------------------------------------------------------------------ grid
    @torch.inference_mode()
    def generate_grid(self, emb: EmbT) -> PromptMasks:
        """The "everything" grid, equal to the model's automatic mask generator (no crops,
        no mask-to-mask refinement).

        Per chunk of ``points_per_batch`` grid points: decode 3 outputs per point, keep those
        with predicted IoU ``> pred_iou_thresh`` (from the IoU token, before any mask is
        upscaled), measure the survivors' stability scores and boxes at the original size,
        keep stability ``>= stability_score_thresh``; then NMS (``box_nms_thresh``, by
        predicted IoU) over all of them on AMG's inclusive boxes. Rows come in NMS order
        (decreasing predicted IoU), like AMG's. ``prompt_index`` is the grid point index
        (row-major, x fastest).
        """
        cfg = self.cfg
        pts = grid_points(cfg.points_per_side, *emb.original_size)
        dev = self.device
        # per chunk: (iou, stability, inclusive boxes, nonempty, point, token, low-res logits)
        kept: list[tuple[torch.Tensor, ...]] = []
        for start in range(0, pts.shape[0], cfg.points_per_batch):
            coords = self._grid_coords(pts[start : start + cfg.points_per_batch], emb.original_size)
            labels = torch.ones(coords.shape[0], dtype=torch.int, device=dev)
            # the IoU filter is exact on the decoder output: it runs before any upscaling
            low, iou, point, token = self._decode(
                emb, coords[:, None, :], labels[:, None], iou_thresh=cfg.pred_iou_thresh
            )
            if low.shape[0] == 0:
                continue
            stab, boxes, nonempty = self._grid_measure(emb, low)
            fields = [iou, stab, boxes, nonempty, point + start, token, low]
            if cfg.stability_score_thresh > 0.0:
                keep = stab >= cfg.stability_score_thresh
                fields = [t[keep] for t in fields]
            if not cfg.return_masks:
                fields[-1] = fields[-1][:0]
            kept.append(tuple(fields))
        if not kept:
            return _empty_prompt_masks(cfg.return_masks)
        iou, stab, boxes, nonempty, point, token, low = (
            torch.cat(t) for t in zip(*kept, strict=True)
        )
        order = nms(boxes.float(), iou, cfg.box_nms_thresh)
        # RLE only for the masks NMS keeps
        masks = self._grid_masks(emb, low[order]) if cfg.return_masks else None
        boxes, nonempty, iou, stab, point, token = (
            t[order] for t in (boxes, nonempty, iou, stab, point, token)
        )
        return prompt_masks(boxes, nonempty, iou, stab, point, token, masks)

    # ------------------------------------------------------------------ points
    def _point_prompts(
        self, emb: EmbT, batches: Iterator[tuple[IntArray, npt.NDArray[np.float64], IntArray]]
    ) -> PromptMasks:
        """Decode batches of ``(prompt ids B, points BxKx2, labels BxK)``; keep the
        configured multimask tokens (``keep_multimask_tokens``)."""
        cfg, dev = self.cfg, self.device
        parts: list[PromptMasks] = []
        for ids, pts, labels in batches:
            lab = torch.as_tensor(labels, dtype=torch.int, device=dev)
            low, iou, prompt, token = self._decode(
                emb,
                self._point_coords(pts, emb.original_size),
                lab,
                tokens=cfg.keep_multimask_tokens,
                iou_thresh=cfg.point_pred_iou_thresh,
            )
            pid = torch.as_tensor(ids, device=dev)[prompt]
            parts.append(self._finish(emb, low, iou, pid, token, cfg.return_masks))
        return _concat_prompt_masks(parts, cfg.return_masks)

    @torch.inference_mode()
    def predict_points(
        self, emb: EmbT, points: npt.ArrayLike, labels: npt.ArrayLike | None = None
    ) -> PromptMasks:
        """Single-point prompts (WeakSAM's per-peak prompts), ``points_per_batch`` per call.

        Args:
            emb: from :meth:`embed_image`.
            points: ``Px2`` ``(x, y)`` in original pixels (``P`` may be 0).
            labels: ``P`` point labels (1 foreground, 0 background); default all 1.

        Returns:
            ``len(keep_multimask_tokens)`` rows per point, point-major, tokens in the
            configured order; ``prompt_index`` is the point index. Empty masks are kept and
            flagged (``nonempty`` false, box ``[0, 0, 0, 0]``); no IoU filter unless
            ``point_pred_iou_thresh > 0``. Same masks as the model's predictor's
            ``predict(point, label, multimask_output=True)`` per point.
        """
        pts = check_points(points)
        lab = check_labels(labels, pts.shape[0])
        bs = self.cfg.points_per_batch
        batches = (
            (
                np.arange(s, min(s + bs, pts.shape[0]), dtype=np.int64),
                pts[s : s + bs, None, :],
                lab[s : s + bs, None],
            )
            for s in range(0, pts.shape[0], bs)
        )
        return self._point_prompts(emb, batches)

    @torch.inference_mode()
    def predict_multipoint(
        self, emb: EmbT, groups: Sequence[tuple[npt.ArrayLike, npt.ArrayLike | None]]
    ) -> PromptMasks:
        """Multi-point prompts: each group's ``K`` points form one prompt (WeakSAM's class-wise
        prompts use all points of a class, labels 1).

        Args:
            emb: from :meth:`embed_image`.
            groups: ``[(points Kx2, labels K or None), ...]``, ``K >= 1``, original pixels.

        Returns:
            rows as :meth:`predict_points`, ``prompt_index`` = group index, groups in input
            order. Groups are batched only with groups of the same ``K`` (exactly the
            unbatched result; padding with label -1 points would not be).
        """
        grs = make_groups(groups)
        sizes = [g.points.shape[0] for g in grs]
        batches = (
            (
                ids,
                np.stack([grs[i].points for i in ids]),
                np.stack([grs[i].labels for i in ids]),
            )
            for ids in bucket_by_size(sizes, self.cfg.points_per_batch)
        )
        out = self._point_prompts(emb, batches)
        return reorder(out, np.argsort(out.prompt_index, kind="stable"))

    @torch.inference_mode()
    def predict_boxes(self, emb: EmbT, boxes: npt.ArrayLike) -> PromptMasks:
        """Box prompts (pseudo-ground-truth masks): one mask per box, always with its RLE.

        Args:
            emb: from :meth:`embed_image`.
            boxes: ``Nx4`` XYXY in original pixels, passed to the model as given (SAM's box
                prompt takes pixel coordinates; the continuous and inclusive conventions
                differ by one pixel at ``x2, y2``).

        Returns:
            one row per box, in input order: the mask ``cfg.box_mask`` picks (the single-mask
            output as ``multimask_output=False``, the multimask output with the highest
            predicted IoU, or the multimask output ``box_mask_token``); tight box of that
            mask, its RLE in ``masks``.
        """
        arr = np.asarray(boxes, dtype=np.float32)
        if arr.size == 0:
            return _empty_prompt_masks(True)
        if arr.ndim != 2 or arr.shape[1] != 4 or not np.isfinite(arr).all():
            raise ValueError(f"boxes must be finite Nx4 XYXY, got shape {arr.shape}")
        cfg, dev = self.cfg, self.device
        parts = []
        for s in range(0, arr.shape[0], cfg.points_per_batch):
            chunk = arr[s : s + cfg.points_per_batch]
            coords, labels, b = self._box_inputs(chunk, emb.original_size)
            if cfg.box_mask == "single":
                low, iou, prompt, token = self._decode(emb, coords, labels, b, single=True)
                parts.append(self._finish(emb, low, iou, prompt + s, token, True))
                continue
            low, iou, prompt, _ = self._decode(emb, coords, labels, b)
            if cfg.box_mask == "best_iou":
                token = iou.view(-1, 3).argmax(dim=1)
            else:
                token = torch.full((chunk.shape[0],), cfg.box_mask_token, device=dev)
            rows = 3 * torch.arange(chunk.shape[0], device=dev) + token
            parts.append(self._finish(emb, low[rows], iou[rows], prompt[rows] + s, token, True))
        return _concat_prompt_masks(parts, True)

    # ------------------------------------------------------------------ proposals
    @torch.inference_mode()
    def generate(
        self,
        image: npt.ArrayLike,
        points: npt.ArrayLike | None = None,
        point_classes: npt.ArrayLike | None = None,
        point_kinds: Sequence[str] | None = None,
    ) -> ProposalSet:
        """All proposals of one image from one encoder pass, in WeakSAM's order.

        Args:
            image: ``HxWx3`` uint8 RGB.
            points: ``Px2`` peak points ``(x, y)`` in original pixels, or ``None``.
            point_classes: ``P`` class ids of the points (needed for class-wise prompts and
                class hints), or ``None``.
            point_kinds: ``P`` kinds (e.g. ``coarse``, ``fine``, ``cross``); default
                ``cfg.point_kind`` for every point.

        Returns:
            grid proposals (source ``grid``, AMG's order), then for each kind in
            ``kind_order``: the single-point proposals (``point:<kind>``, 2 per point,
            point-major) and, for ``classwise_kinds`` when classes are given, the class-wise
            ones (``class:<kind>``, 2 per class, classes ascending). Empty masks are dropped
            unless ``keep_empty``; then ``min_box_size``, ``final_nms_thresh`` and
            ``max_proposals`` apply (no cross-source NMS by default). The order is kept.
        """
        return generate_proposal_set(self, image, points, point_classes, point_kinds)


class SamPromptEngine(PromptMethods[ImageEmbedding]):
    """Prompts one SAM with grids, points, point groups and boxes.

    Args:
        model: a ``segment_anything`` ``Sam`` (see :func:`weaksam.sam.build.build_sam`). With
            ``cfg.precision: fast`` the engine prepares it in place
            (:func:`~weaksam.sam.fast.prepare_fast_model`: cast, SDPA, compile).
        cfg: prompting settings.
        autocast_dtype: ``none``, ``bf16`` or ``fp16``: mixed precision on CUDA (ignored on
            CPU) on the exact path; on the fast path the compute dtype on CUDA (``none``:
            fp16, :func:`~weaksam.sam.fast.fast_dtype`). Mask post-processing always runs in
            float32.
        compute_dtype: the fast path's dtype, overriding the rule above (e.g. bf16 on CPU to
            check its numerics); ignored on the exact path.
    """

    def __init__(
        self,
        model: Sam,
        cfg: EngineConfig | None = None,
        *,
        autocast_dtype: str = "none",
        compute_dtype: torch.dtype | None = None,
    ) -> None:
        if autocast_dtype not in ("none", *_AUTOCAST):
            raise ValueError(f"unknown autocast_dtype {autocast_dtype!r}")
        self.model = model.eval()
        self.cfg = cfg or EngineConfig()
        self.transform = ResizeLongestSide(model.image_encoder.img_size)
        self.autocast_dtype = autocast_dtype
        self.fast = self.cfg.precision == "fast"
        self.dtype = torch.float32
        if self.fast:
            self.dtype = compute_dtype or fast_dtype(self.device, autocast_dtype)
            prepare_fast_model(self.model, self.dtype, compile_model=self.cfg.compile)
        self._transformer = run_two_way_transformer
        self._mask_logits = predict_mask_logits
        if self.fast and self.cfg.compile:
            self._transformer = torch.compile(run_two_way_transformer)
            self._mask_logits = torch.compile(predict_mask_logits)

    @classmethod
    def from_config(cls, sam_cfg: SamConfig, cfg: EngineConfig | None = None) -> SamPromptEngine:
        """Build the model from ``sam_cfg`` (checkpoint, device, autocast) and wrap it."""
        return cls(build_sam(sam_cfg), cfg, autocast_dtype=sam_cfg.autocast_dtype)

    @property
    def device(self) -> torch.device:
        return torch.device(self.model.device)

    def _autocast(self) -> contextlib.AbstractContextManager[object]:
        if not self.fast and self.device.type == "cuda" and self.autocast_dtype in _AUTOCAST:
            return torch.autocast("cuda", dtype=_AUTOCAST[self.autocast_dtype])
        return contextlib.nullcontext()

    def _encode(self, images: Sequence[npt.NDArray[np.uint8]]) -> list[ImageEmbedding]:
        sizes, inputs = [], []
        for img in images:
            resized = self.transform.apply_image(img)
            x = torch.as_tensor(resized, device=self.device).permute(2, 0, 1).contiguous()[None]
            sizes.append(
                ((int(img.shape[0]), int(img.shape[1])), (int(x.shape[-2]), int(x.shape[-1])))
            )
            inputs.append(self.model.preprocess(x))
        image_pe = self.model.prompt_encoder.get_dense_pe()  # float32, as SamPredictor's
        with self._autocast():
            if self.fast:
                features = self.model.image_encoder(torch.cat(inputs).to(self.dtype))
            else:
                features = torch.cat([self.model.image_encoder(x) for x in inputs])
            out = []
            for i, (original_size, input_size) in enumerate(sizes):
                f = features[i : i + 1]
                dtype = self.dtype if self.fast else None
                out.append(
                    ImageEmbedding(
                        features=f,
                        image_pe=image_pe,
                        input_size=input_size,
                        original_size=original_size,
                        tokens=encode_image_tokens(self.model, f, image_pe, dtype),
                    )
                )
        return out

    # ------------------------------------------------------------------ decoder
    def _decode(
        self,
        emb: ImageEmbedding,
        coords: torch.Tensor | None,
        labels: torch.Tensor | None,
        boxes: torch.Tensor | None = None,
        *,
        tokens: Sequence[int] = (0, 1, 2),
        iou_thresh: float = 0.0,
        single: bool = False,
    ) -> tuple[torch.Tensor, ...]:
        """Multimask decode of ``B`` prompts in the model's input frame.

        ``coords`` ``BxKx2``, ``labels`` ``BxK``, ``boxes`` ``Bx4``; ``tokens``: the
        multimask outputs (0–2) wanted; ``single``: the single-mask output instead (token
        ``-1`` in the result, as ``multimask_output=False``). Returns, for the ``N`` (prompt,
        token) pairs with predicted IoU ``> iou_thresh`` (all when it is 0), prompt-major:
        low-res logits ``Nxh'xw'`` (float32), predicted IoU ``N`` (float32), prompt ``N`` and
        token ``N`` (int64). The IoU comes from the transformer's IoU token, so masks are
        upscaled only for the prompts with a token that passes.
        """
        n = next(t.shape[0] for t in (coords, boxes) if t is not None)
        if self.fast and n < self.cfg.points_per_batch:  # fixed shapes: pad, drop rows later
            coords, labels, boxes = (
                None if t is None else _pad_rows(t, self.cfg.points_per_batch)
                for t in (coords, labels, boxes)
            )
        points = (coords, labels) if coords is not None and labels is not None else None
        dec = self.model.mask_decoder
        with self._autocast():
            sparse, _ = self.model.prompt_encoder(points=points, boxes=boxes, masks=None)
            if self.fast:
                sparse = sparse.to(self.dtype)
            queries, keys = self._transformer(dec, emb.tokens, sparse, self.fast)
            tok = torch.as_tensor([-1] if single else list(tokens), device=sparse.device)
            cols = tok + 1  # mask token 0 is the single-mask output, 1..3 the multimask ones
            head = dec.iou_prediction_head
            iou_in = queries[:, 0, :].to(head.layers[0].weight.dtype)
            iou = head(iou_in).float()[:, cols]
            prompt = torch.arange(n, device=iou.device)
            keep = iou[:n] > iou_thresh if iou_thresh > 0.0 else None
            if keep is not None and not self.fast:  # upscale only prompts with a passing mask
                prompt = torch.nonzero(keep.any(1)).squeeze(1)
                queries, keys, iou, keep = (t[prompt] for t in (queries, keys, iou, keep))
            low = self._mask_logits(dec, queries, keys, emb.tokens.grid)[:n, cols].float()
            iou = iou[:n]
        token = tok.repeat(prompt.shape[0])
        prompt = prompt.repeat_interleave(tok.shape[0])
        low, iou = low.flatten(0, 1), iou.flatten()
        if keep is not None:
            sel = keep.flatten()
            low, iou, prompt, token = low[sel], iou[sel], prompt[sel], token[sel]
        return low, iou, prompt, token

    def _measure(
        self, emb: ImageEmbedding, low: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Stability ``N``, inclusive boxes ``Nx4`` and ``nonempty`` ``N`` of low-res logits
        ``Nxh'xw'`` at the original size, without upsampling them whole
        (:func:`~weaksam.sam.postprocess.measure_logits`)."""
        return measure_logits(
            low,
            self.model.image_encoder.img_size,
            emb.input_size,
            emb.original_size,
            self.cfg.mask_threshold,
            self.cfg.stability_score_offset,
        )

    def _finish(
        self,
        emb: ImageEmbedding,
        low: torch.Tensor,
        iou: torch.Tensor,
        prompt_index: torch.Tensor,
        token: torch.Tensor,
        with_masks: bool,
    ) -> PromptMasks:
        """Measure kept low-res logits ``Nxh'xw'`` (boxes, stability); RLE if asked for."""
        masks = None
        if with_masks:
            logits = upsample_logits(self.model, low, emb.input_size, emb.original_size)
            binary = logits > self.cfg.mask_threshold
            stab = stability_scores(
                logits, self.cfg.mask_threshold, self.cfg.stability_score_offset
            )
            del logits
            boxes, nonempty = mask_boxes(binary)
            masks = encode_binary_masks(binary)
        else:
            stab, boxes, nonempty = self._measure(emb, low)
        return prompt_masks(boxes, nonempty, iou, stab, prompt_index, token, masks)

    # ------------------------------------------------------------------ prompt frames
    def _grid_coords(self, points: npt.NDArray[np.float64], size: tuple[int, int]) -> torch.Tensor:
        # float64 coordinates, exactly as AMG passes them to the prompt encoder
        return torch.as_tensor(self.transform.apply_coords(points, size), device=self.device)

    def _point_coords(self, points: npt.NDArray[np.float64], size: tuple[int, int]) -> torch.Tensor:
        coords = self.transform.apply_coords(points, size)
        return torch.as_tensor(coords, dtype=torch.float, device=self.device)

    def _box_inputs(
        self, boxes: FloatArray, size: tuple[int, int]
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        b = self.transform.apply_boxes(boxes, size)
        return None, None, torch.as_tensor(b, dtype=torch.float, device=self.device)

    def _grid_measure(
        self, emb: ImageEmbedding, low: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self._measure(emb, low)

    def _grid_masks(self, emb: ImageEmbedding, low: torch.Tensor) -> list[bytes]:
        logits = upsample_logits(self.model, low, emb.input_size, emb.original_size)
        return encode_binary_masks(logits > self.cfg.mask_threshold)


def generate_proposal_set(
    engine: PromptEngine[Any],
    image: npt.ArrayLike,
    points: npt.ArrayLike | None = None,
    point_classes: npt.ArrayLike | None = None,
    point_kinds: Sequence[str] | None = None,
) -> ProposalSet:
    """:meth:`SamPromptEngine.generate` for any :class:`PromptEngine`: one ``embed_image``,
    then the grid, point and class-wise prompts through the engine, in WeakSAM's order."""
    return prompt_embedding(engine, engine.embed_image(image), points, point_classes, point_kinds)


def prompt_embedding(
    engine: PromptEngine[Any],
    emb: Any,
    points: npt.ArrayLike | None = None,
    point_classes: npt.ArrayLike | None = None,
    point_kinds: Sequence[str] | None = None,
) -> ProposalSet:
    """:func:`generate_proposal_set` on an image the engine has encoded already (``emb``, from
    ``embed_image`` or ``embed_images``: batched encoders give one per image)."""
    cfg = engine.cfg
    pts = check_points(np.zeros((0, 2)) if points is None else points)
    n = pts.shape[0]
    classes = (
        None if point_classes is None else np.asarray(point_classes).reshape(-1).astype(np.int64)
    )
    if classes is not None and classes.shape[0] != n:
        raise ValueError(f"point_classes must have {n} entries, got {classes.shape[0]}")
    kinds = [cfg.point_kind] * n if point_kinds is None else [str(k) for k in point_kinds]
    if len(kinds) != n:
        raise ValueError(f"point_kinds must have {n} entries, got {len(kinds)}")

    blocks: list[tuple[PromptMasks, list[str], npt.NDArray[np.int32]]] = []
    if cfg.points_per_side > 0:
        grid = engine.generate_grid(emb)
        blocks.append((grid, ["grid"] * len(grid), np.full(len(grid), -1, np.int32)))
    if n:
        singles = engine.predict_points(emb, pts)
        kind_arr = np.asarray(kinds, dtype=object)
        group_kinds: list[str] = []
        group_ids: list[int] = []
        groups: list[tuple[npt.ArrayLike, npt.ArrayLike | None]] = []
        if classes is not None:
            for kind in order_kinds(kinds, cfg.kind_order):
                if kind not in cfg.classwise_kinds:
                    continue
                sel = kind_arr == kind
                ids, sets = group_points_by_class(pts[sel], classes[sel])
                group_kinds += [kind] * len(ids)
                group_ids += ids
                groups += [(s, None) for s in sets]
        multi = engine.predict_multipoint(emb, groups) if groups else None
        for kind in order_kinds(kinds, cfg.kind_order):
            rows = np.flatnonzero(kind_arr[singles.prompt_index] == kind)
            hints = (
                classes[singles.prompt_index[rows]].astype(np.int32)
                if classes is not None
                else np.full(rows.size, -1, np.int32)
            )
            blocks.append((reorder(singles, rows), [f"point:{kind}"] * rows.size, hints))
            if multi is not None:
                gk = np.asarray(group_kinds, dtype=object)[multi.prompt_index]
                rows = np.flatnonzero(gk == kind)
                gid = np.asarray(group_ids, dtype=np.int32)[multi.prompt_index[rows]]
                blocks.append((reorder(multi, rows), [f"class:{kind}"] * rows.size, gid))
    return assemble_proposals(cfg, blocks, emb.original_size)


def assemble_proposals(
    cfg: EngineConfig,
    blocks: Sequence[tuple[PromptMasks, list[str], npt.NDArray[np.int32]]],
    image_size: tuple[int, int],
) -> ProposalSet:
    """Blocks of ``(masks, sources, class hints)`` → one :class:`ProposalSet`: empty masks
    dropped unless ``keep_empty``, then ``min_box_size``, ``final_nms_thresh`` and
    ``max_proposals``; the order is kept."""
    with_masks = cfg.return_masks
    if blocks:
        pm = _concat_prompt_masks([b[0] for b in blocks], with_masks)
        sources = [s for b in blocks for s in b[1]]
        hints = np.concatenate([b[2] for b in blocks]).astype(np.int32)
    else:
        pm, sources, hints = _empty_prompt_masks(with_masks), [], np.zeros(0, np.int32)
    keep = np.ones(len(pm), dtype=bool)
    if not cfg.keep_empty:
        keep &= pm.nonempty
    if cfg.min_box_size > 0:
        wh = pm.boxes[:, 2:] - pm.boxes[:, :2]
        keep &= (wh >= cfg.min_box_size).all(axis=1)
    idx = np.flatnonzero(keep)
    if cfg.final_nms_thresh > 0 and idx.size:
        k = nms(
            torch.as_tensor(pm.boxes[idx]),
            torch.as_tensor(pm.scores[idx]),
            cfg.final_nms_thresh,
        )
        idx = np.sort(idx[k.numpy()])
    if cfg.max_proposals and idx.size > cfg.max_proposals:
        top = np.argsort(-pm.scores[idx], kind="stable")[: cfg.max_proposals]
        idx = np.sort(idx[top])
    return ProposalSet(
        boxes=pm.boxes[idx],
        scores=pm.scores[idx],
        sources=[sources[i] for i in idx],
        class_hints=hints[idx],
        masks=[pm.masks[i] for i in idx] if pm.masks is not None else None,
        image_size=image_size,
    )


def _pad_rows(t: torch.Tensor, rows: int) -> torch.Tensor:
    """``t`` with its last row repeated up to ``rows`` rows (prompts are independent, so the
    copies change nothing and are dropped after decoding)."""
    return torch.cat([t, t[-1:].expand(rows - t.shape[0], *t.shape[1:])])


def prompt_masks(
    boxes: torch.Tensor,
    nonempty: torch.Tensor,
    iou: torch.Tensor,
    stability: torch.Tensor,
    prompt_index: torch.Tensor,
    token: torch.Tensor,
    masks: list[bytes] | None,
) -> PromptMasks:
    """Decoder results as :class:`PromptMasks`: inclusive boxes ``Nx4`` (AMG's convention,
    made continuous; empty masks ``[0, 0, 0, 0]``), ``nonempty`` ``N``, predicted IoU ``N``,
    stability ``N``, prompt ``N`` and token ``N`` tensors on any device; RLE masks or None."""
    return PromptMasks(
        boxes=inclusive_to_continuous(boxes, nonempty),
        scores=iou.detach().cpu().numpy().astype(np.float32),
        stability=stability.detach().cpu().numpy().astype(np.float32),
        prompt_index=prompt_index.detach().cpu().numpy().astype(np.int64),
        token=token.detach().cpu().numpy().astype(np.int64),
        nonempty=nonempty.detach().cpu().numpy(),
        masks=masks,
    )


def _empty_prompt_masks(with_masks: bool) -> PromptMasks:
    return PromptMasks(
        boxes=np.zeros((0, 4), np.float32),
        scores=np.zeros(0, np.float32),
        stability=np.zeros(0, np.float32),
        prompt_index=np.zeros(0, np.int64),
        token=np.zeros(0, np.int64),
        nonempty=np.zeros(0, bool),
        masks=[] if with_masks else None,
    )


def _concat_prompt_masks(parts: Sequence[PromptMasks], with_masks: bool) -> PromptMasks:
    if not parts:
        return _empty_prompt_masks(with_masks)
    masks: list[bytes] | None = None
    if with_masks:
        masks = [m for p in parts for m in (p.masks or [])]
    return PromptMasks(
        boxes=np.concatenate([p.boxes for p in parts]).reshape(-1, 4),
        scores=np.concatenate([p.scores for p in parts]),
        stability=np.concatenate([p.stability for p in parts]),
        prompt_index=np.concatenate([p.prompt_index for p in parts]),
        token=np.concatenate([p.token for p in parts]),
        nonempty=np.concatenate([p.nonempty for p in parts]),
        masks=masks,
    )


def reorder(pm: PromptMasks, rows: npt.NDArray[np.int64]) -> PromptMasks:
    """The rows ``rows`` of ``pm``, in that order (every field, masks included)."""
    return PromptMasks(
        boxes=pm.boxes[rows].reshape(-1, 4),
        scores=pm.scores[rows],
        stability=pm.stability[rows],
        prompt_index=pm.prompt_index[rows],
        token=pm.token[rows],
        nonempty=pm.nonempty[rows],
        masks=[pm.masks[i] for i in rows] if pm.masks is not None else None,
    )
