# Portions of this file follow SAM 2 (https://github.com/facebookresearch/sam2), Copyright (c)
# Meta Platforms, Inc. and affiliates, licensed under the Apache License, Version 2.0. See NOTICE.
"""SAM 2.1 builders and checkpoints, using the ``sam2`` package's own classes.

``SAM2_BUILDERS`` maps a model type to a builder. The four published SAM 2.1 image models are
written out from the package's Hydra files (``sam2/configs/sam2.1/sam2.1_hiera_*.yaml``: the
same classes and numbers, no Hydra at run time; ``tests/sam/test_sam2_build.py`` checks every
key and shape against ``hydra.utils.instantiate`` of those files) with the decoder settings
``sam2.build_sam.build_sam2`` adds by default (``apply_postprocessing``: the single-mask output
falls back to the best multimask output when unstable):

================ ========== ===== ============= ================= ==========
type             Hiera dim  heads blocks        global blocks     checkpoint
================ ========== ===== ============= ================= ==========
sam2.1_hiera_t   96         1     1, 2, 7, 2    5, 7, 9           sam2.1_hiera_tiny.pt
sam2.1_hiera_s   96         1     1, 2, 11, 2   7, 10, 13         sam2.1_hiera_small.pt
sam2.1_hiera_b+  112        2     2, 3, 16, 3   12, 16, 20        sam2.1_hiera_base_plus.pt
sam2.1_hiera_l   144        2     2, 6, 36, 4   23, 33, 43        sam2.1_hiera_large.pt
================ ========== ===== ============= ================= ==========

All take 1024x1024 inputs (the image is resized to that square, not padded), embed a 64x64
grid of width 256 (plus 256x256 and 128x128 high-resolution maps for the decoder) and predict
256x256 low-resolution mask logits. The video parts (memory attention and encoder, object
pointers) are built too, so the published checkpoints load with a strict key check, but only
the image encoder, prompt encoder and mask decoder run here.

:func:`build_sam2_tiny` is a small configuration of the same classes for tests (random
weights only; not selectable from a config). Checkpoints load with ``torch.load(...,
weights_only=True)`` and a strict key and shape check (:func:`load_sam2_checkpoint`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

import torch
from sam2.modeling.backbones.hieradet import Hiera
from sam2.modeling.backbones.image_encoder import FpnNeck, ImageEncoder
from sam2.modeling.memory_attention import MemoryAttention, MemoryAttentionLayer
from sam2.modeling.memory_encoder import CXBlock, Fuser, MaskDownSampler, MemoryEncoder
from sam2.modeling.position_encoding import PositionEmbeddingSine
from sam2.modeling.sam.transformer import RoPEAttention
from sam2.modeling.sam2_base import SAM2Base

from weaksam.sam.build import (
    SamCheckpointError,
    SamConfig,
    check_state_dict,
    read_sam_checkpoint,
    resolve_device,
)

# ``build_sam2(..., apply_postprocessing=True)``'s decoder overrides (its default)
DYNAMIC_MULTIMASK = {
    "dynamic_multimask_via_stability": True,
    "dynamic_multimask_stability_delta": 0.05,
    "dynamic_multimask_stability_thresh": 0.98,
}


def _rope_attention(d_model: int, feat_size: int, kv_in_dim: int | None = None) -> RoPEAttention:
    extra: dict[str, Any] = {} if kv_in_dim is None else {"rope_k_repeat": True}
    return RoPEAttention(
        rope_theta=10000.0,
        feat_sizes=(feat_size, feat_size),
        embedding_dim=d_model,
        num_heads=1,
        downsample_rate=1,
        dropout=0.1,
        kv_in_dim=kv_in_dim,
        **extra,
    )


def _build(
    *,
    embed_dim: int,
    num_heads: int,
    stages: tuple[int, ...],
    global_att_blocks: tuple[int, ...],
    window_pos_embed_bkg_spatial_size: tuple[int, int] = (7, 7),
    window_spec: tuple[int, ...] = (8, 4, 14, 7),
    image_size: int = 1024,
    d_model: int = 256,
    mem_dim: int = 64,
    memory_layers: int = 4,
    memory_ffn_dim: int = 2048,
) -> SAM2Base:
    """A SAM 2.1 from the ``sam2`` package's classes; the defaults are the published numbers
    (``sam2.1_hiera_*.yaml``), the Hiera trunk's are its per-size ones."""
    trunk = Hiera(
        embed_dim=embed_dim,
        num_heads=num_heads,
        stages=stages,
        global_att_blocks=global_att_blocks,
        window_pos_embed_bkg_spatial_size=window_pos_embed_bkg_spatial_size,
        window_spec=window_spec,
    )
    neck = FpnNeck(
        position_encoding=PositionEmbeddingSine(
            num_pos_feats=d_model, normalize=True, scale=None, temperature=10000
        ),
        d_model=d_model,
        backbone_channel_list=[8 * embed_dim, 4 * embed_dim, 2 * embed_dim, embed_dim],
        fpn_top_down_levels=[2, 3],  # levels 0 and 1 (the high-res maps) are lateral only
        fpn_interp_model="nearest",
    )
    feat_size = image_size // 16
    memory_attention = MemoryAttention(
        d_model=d_model,
        pos_enc_at_input=True,
        layer=MemoryAttentionLayer(
            activation="relu",
            dim_feedforward=memory_ffn_dim,
            dropout=0.1,
            pos_enc_at_attn=False,
            self_attention=_rope_attention(d_model, feat_size),
            d_model=d_model,
            pos_enc_at_cross_attn_keys=True,
            pos_enc_at_cross_attn_queries=False,
            cross_attention=_rope_attention(d_model, feat_size, kv_in_dim=mem_dim),
        ),
        num_layers=memory_layers,
    )
    memory_encoder = MemoryEncoder(
        out_dim=mem_dim,
        position_encoding=PositionEmbeddingSine(
            num_pos_feats=mem_dim, normalize=True, scale=None, temperature=10000
        ),
        mask_downsampler=MaskDownSampler(embed_dim=d_model, kernel_size=3, stride=2, padding=1),
        fuser=Fuser(
            layer=CXBlock(
                dim=d_model, kernel_size=7, padding=3, layer_scale_init_value=1e-6, use_dwconv=True
            ),
            num_layers=2,
        ),
        in_dim=d_model,
    )
    model = SAM2Base(
        image_encoder=ImageEncoder(trunk=trunk, neck=neck, scalp=1),
        memory_attention=memory_attention,
        memory_encoder=memory_encoder,
        num_maskmem=7,
        image_size=image_size,
        sigmoid_scale_for_mem_enc=20.0,
        sigmoid_bias_for_mem_enc=-10.0,
        use_mask_input_as_output_without_sam=True,
        directly_add_no_mem_embed=True,
        no_obj_embed_spatial=True,
        use_high_res_features_in_sam=True,
        multimask_output_in_sam=True,
        iou_prediction_use_sigmoid=True,
        use_obj_ptrs_in_encoder=True,
        add_tpos_enc_to_obj_ptrs=True,
        proj_tpos_enc_in_obj_ptrs=True,
        use_signed_tpos_enc_to_obj_ptrs=True,
        only_obj_ptrs_in_the_past_for_eval=True,
        pred_obj_scores=True,
        pred_obj_scores_mlp=True,
        fixed_no_obj_ptr=True,
        multimask_output_for_tracking=True,
        use_multimask_token_for_obj_ptr=True,
        multimask_min_pt_num=0,
        multimask_max_pt_num=1,
        use_mlp_for_obj_ptr_proj=True,
        sam_mask_decoder_extra_args=dict(DYNAMIC_MULTIMASK),
        compile_image_encoder=False,
    )
    return model.eval()


def build_sam2_hiera_t() -> SAM2Base:
    """SAM 2.1 Hiera-T (``sam2.1_hiera_t.yaml``), randomly initialised."""
    return _build(embed_dim=96, num_heads=1, stages=(1, 2, 7, 2), global_att_blocks=(5, 7, 9))


def build_sam2_hiera_s() -> SAM2Base:
    """SAM 2.1 Hiera-S (``sam2.1_hiera_s.yaml``), randomly initialised."""
    return _build(embed_dim=96, num_heads=1, stages=(1, 2, 11, 2), global_att_blocks=(7, 10, 13))


def build_sam2_hiera_b_plus() -> SAM2Base:
    """SAM 2.1 Hiera-B+ (``sam2.1_hiera_b+.yaml``), randomly initialised."""
    return _build(
        embed_dim=112,
        num_heads=2,
        stages=(2, 3, 16, 3),
        global_att_blocks=(12, 16, 20),
        window_pos_embed_bkg_spatial_size=(14, 14),
    )


def build_sam2_hiera_l() -> SAM2Base:
    """SAM 2.1 Hiera-L (``sam2.1_hiera_l.yaml``), randomly initialised."""
    return _build(
        embed_dim=144,
        num_heads=2,
        stages=(2, 6, 36, 4),
        global_att_blocks=(23, 33, 43),
        window_pos_embed_bkg_spatial_size=(7, 7),
        window_spec=(8, 4, 16, 8),
    )


def build_sam2_tiny(image_size: int = 1024) -> SAM2Base:
    """A SAM 2.1 of test size: the same classes and wiring, a 5-block Hiera of width 8, a
    32-wide prompt encoder and decoder, one memory-attention layer (unused here).

    For tests of code that drives ``sam2`` models (random weights; no checkpoint exists).
    ``image_size`` must be a multiple of 32; ``sam2``'s ``SAM2ImagePredictor`` assumes 1024.
    """
    return _build(
        embed_dim=8,
        num_heads=1,
        stages=(1, 1, 2, 1),
        global_att_blocks=(3,),
        window_spec=(8, 4, 4, 2),
        image_size=image_size,
        d_model=32,
        mem_dim=16,
        memory_layers=1,
        memory_ffn_dim=64,
    )


SAM2_BUILDERS: dict[str, Callable[[], SAM2Base]] = {
    "sam2.1_hiera_t": build_sam2_hiera_t,
    "sam2.1_hiera_s": build_sam2_hiera_s,
    "sam2.1_hiera_b+": build_sam2_hiera_b_plus,
    "sam2.1_hiera_l": build_sam2_hiera_l,
}


def build_sam2_model(model_type: str) -> SAM2Base:
    """A randomly initialised SAM 2.1 of ``model_type`` on the current default device, in eval
    mode. Raises ``ValueError`` listing the known types for an unknown one."""
    try:
        builder = SAM2_BUILDERS[model_type]
    except KeyError:
        raise ValueError(
            f"unknown SAM 2.1 model type {model_type!r}; known: {sorted(SAM2_BUILDERS)}"
        ) from None
    return builder()


def build_sam2(cfg: SamConfig) -> SAM2Base:
    """Build ``cfg.model_type`` (a ``sam2.1_hiera_*`` type), load ``cfg.checkpoint`` (if set)
    and move it to ``cfg.device``. Returns the model in eval mode.

    Raises ``ValueError`` for a SAM (segment-anything) model type or ``checkpoint: builtin``
    (there is no committed SAM 2.1 checkpoint); checkpoint errors as
    :func:`load_sam2_checkpoint`.
    """
    if cfg.backend != "sam2":
        raise ValueError(f"model_type {cfg.model_type!r} is not a SAM 2.1 model type")
    if cfg.checkpoint == "builtin":
        raise ValueError("checkpoint 'builtin' exists only for model_type 'demo'")
    model = build_sam2_model(cfg.model_type)
    if cfg.checkpoint:
        load_sam2_checkpoint(model, cfg.checkpoint, cfg.model_type)
    return model.to(resolve_device(cfg.device)).eval()


def _checkpoint_kind(state: Mapping[str, torch.Tensor]) -> str:
    """What a state dict looks like: ``SAM 2.1 Hiera (width W, B blocks)``, ``SAM
    (segment-anything)`` or ``""`` when neither."""
    if "image_encoder.trunk.pos_embed" in state:
        width = int(state["image_encoder.trunk.pos_embed"].shape[1])
        blocks = {k.split(".")[3] for k in state if k.startswith("image_encoder.trunk.blocks.")}
        return f"SAM 2 Hiera (width {width}, {len(blocks)} blocks)"
    if any(k.startswith("image_encoder.blocks.") for k in state):
        return "SAM (segment-anything)"
    return ""


def load_sam2_checkpoint(
    model: SAM2Base, path: str | os.PathLike[str], model_type: str = ""
) -> dict[str, Any]:
    """Load a SAM 2.1 checkpoint into ``model``: ``weights_only=True``, strict keys and shapes.

    Accepts the published ``{"model": state_dict}`` files (``sam2.1_hiera_*.pt``), raw state
    dicts and our own ``{"model": ..., "config": ...}`` (:func:`~weaksam.sam.build
    .save_sam_checkpoint`). ``model_type`` only words the error.

    Returns:
        the checkpoint's other entries (empty for the published files).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        SamCheckpointError (a ``ValueError``): an unreadable file, a pickle that
            ``weights_only`` refuses, or keys / shapes that differ from ``model``'s; the
            message lists the first differences and says what the checkpoint looks like (a
            SAM 1 checkpoint, or a SAM 2 of another Hiera size).
    """
    state, extra = read_sam_checkpoint(path)
    want = model_type or "this SAM 2.1 model"
    kind = _checkpoint_kind(state)
    try:
        check_state_dict(model, state, path)
    except SamCheckpointError as exc:
        if not kind:
            raise
        mine = _checkpoint_kind(model.state_dict())
        raise SamCheckpointError(
            f"{exc} (the checkpoint looks like a {kind}; {want} is a {mine})"
        ) from None
    model.load_state_dict(state, strict=True)
    return extra
