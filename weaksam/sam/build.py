# Portions of this file follow segment-anything (https://github.com/facebookresearch/
# segment-anything), Copyright (c) Meta Platforms, Inc. and affiliates, licensed under the
# Apache License, Version 2.0. See NOTICE.
"""SAM builders and checkpoints, using segment-anything's own classes.

``SAM_BUILDERS`` maps a model type to a builder: ``vit_h``, ``vit_l`` and ``vit_b`` are the
published architectures (the same numbers as ``segment_anything.build_sam``; the upstream
builders are not called because they ``torch.load`` without ``weights_only``), and ``demo`` is a
small configuration of the same classes for CPUs and tests:

====== ======== ======= ======== ======== ============= ================
type   img_size ViT dim ViT depth heads   prompt/decoder parameters
====== ======== ======= ======== ======== ============= ================
vit_h  1024     1280    32       16       256           641,090,608
vit_l  1024     1024    24       16       256           312,342,832
vit_b  1024     768     12       12       256           93,735,472
demo   256      128     6        4        64            1,567,048
====== ======== ======= ======== ======== ============= ================

Every model embeds a ``img_size // 16`` square grid (64x64 for the real ones, 16x16 for
``demo``) and predicts low-resolution mask logits at 4x that (256x256, 64x64).

Checkpoints load with ``torch.load(..., weights_only=True)`` and a strict key and shape check
(SAM 2's loader does the same). Our own training job saves ``{"model": state_dict,
"config": {...}, ...}`` with :func:`save_sam_checkpoint`; the published ``.pth`` files are raw
state dicts; :func:`load_sam_checkpoint` accepts both. A checkpoint location may be a local path
or a URI (``file://``, ``s3://``, through :mod:`weaksam.storage`; a remote one is read whole
into memory); local files are read and written exactly as before.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import torch
from segment_anything.modeling import (
    ImageEncoderViT,
    MaskDecoder,
    PromptEncoder,
    Sam,
    TwoWayTransformer,
)

from weaksam import storage
from weaksam.configlib import FieldError, check_choice
from weaksam.train.checkpoint import atomic_torch_save

SAM_MODEL_TYPES = ("vit_h", "vit_l", "vit_b", "demo")
# SAM 2.1 through the ``sam2`` package (weaksam/sam/sam2_build.py; named as its config files)
SAM2_MODEL_TYPES = ("sam2.1_hiera_t", "sam2.1_hiera_s", "sam2.1_hiera_b+", "sam2.1_hiera_l")
MODEL_TYPES = SAM_MODEL_TYPES + SAM2_MODEL_TYPES
DEVICES = ("auto", "cpu", "cuda")
AUTOCAST_DTYPES = ("none", "bf16", "fp16")


@dataclass(frozen=True)
class SamConfig:
    """Which SAM to build and where to run it.

    The model type is the backend switch: ``vit_*`` and ``demo`` are SAM (segment-anything,
    :class:`~weaksam.sam.engine.SamPromptEngine`), ``sam2.1_hiera_*`` are SAM 2.1 (the
    ``sam2`` package, :class:`~weaksam.sam.sam2_engine.Sam2PromptEngine`);
    :func:`weaksam.sam.backends.build_engine` builds whichever it names.

    Attributes:
        model_type: ``vit_h``, ``vit_l``, ``vit_b``, ``demo`` (SAM) or ``sam2.1_hiera_t``,
            ``sam2.1_hiera_s``, ``sam2.1_hiera_b+``, ``sam2.1_hiera_l`` (SAM 2.1).
        checkpoint: path or URI of a checkpoint to load; ``builtin`` is the committed demo-SAM
            checkpoint (``weaksam/assets/demo_sam.pt``, demo model only); ``""`` keeps the
            random initialisation (only meaningful for tests).
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda`` (``cuda:1`` also works).
        autocast_dtype: ``none``, ``bf16`` or ``fp16``; mixed precision for the encoder and
            decoder, used only on CUDA (ignored on CPU).
    """

    model_type: str = "vit_h"
    checkpoint: str = ""
    device: str = "auto"
    autocast_dtype: str = "none"

    def __post_init__(self) -> None:
        check_choice(self, "model_type", MODEL_TYPES, "SAM model type")
        base, colon, index = self.device.partition(":")
        if base not in DEVICES or (colon and not (base == "cuda" and index.isdigit())):
            raise FieldError(
                "device",
                "{device}: unknown device {value}; known: "
                + str(list(DEVICES))
                + " or cuda:<index>",
                self.device,
            )
        check_choice(self, "autocast_dtype", AUTOCAST_DTYPES)

    @property
    def backend(self) -> str:
        """``sam`` (segment-anything) or ``sam2`` (SAM 2.1), from the model type."""
        return "sam2" if self.model_type in SAM2_MODEL_TYPES else "sam"


def _build(
    *,
    encoder_embed_dim: int,
    encoder_depth: int,
    encoder_num_heads: int,
    encoder_global_attn_indexes: tuple[int, ...],
    image_size: int = 1024,
    window_size: int = 14,
    prompt_embed_dim: int = 256,
    decoder_mlp_dim: int = 2048,
    decoder_num_heads: int = 8,
    iou_head_hidden_dim: int = 256,
    mask_in_chans: int = 16,
) -> Sam:
    """A SAM from segment-anything's classes; the defaults are ``_build_sam``'s numbers."""
    vit_patch_size = 16
    image_embedding_size = image_size // vit_patch_size
    sam = Sam(
        image_encoder=ImageEncoderViT(
            depth=encoder_depth,
            embed_dim=encoder_embed_dim,
            img_size=image_size,
            mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            num_heads=encoder_num_heads,
            patch_size=vit_patch_size,
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=encoder_global_attn_indexes,
            window_size=window_size,
            out_chans=prompt_embed_dim,  # the neck's channels are the decoder's width
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=prompt_embed_dim,
            image_embedding_size=(image_embedding_size, image_embedding_size),
            input_image_size=(image_size, image_size),
            mask_in_chans=mask_in_chans,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(
                depth=2,
                embedding_dim=prompt_embed_dim,
                mlp_dim=decoder_mlp_dim,
                num_heads=decoder_num_heads,
            ),
            transformer_dim=prompt_embed_dim,
            iou_head_depth=3,
            iou_head_hidden_dim=iou_head_hidden_dim,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )
    return sam.eval()


def build_sam_vit_h() -> Sam:
    """ViT-H SAM (641 M parameters), randomly initialised."""
    return _build(
        encoder_embed_dim=1280,
        encoder_depth=32,
        encoder_num_heads=16,
        encoder_global_attn_indexes=(7, 15, 23, 31),
    )


def build_sam_vit_l() -> Sam:
    """ViT-L SAM (312 M parameters), randomly initialised."""
    return _build(
        encoder_embed_dim=1024,
        encoder_depth=24,
        encoder_num_heads=16,
        encoder_global_attn_indexes=(5, 11, 17, 23),
    )


def build_sam_vit_b() -> Sam:
    """ViT-B SAM (94 M parameters), randomly initialised."""
    return _build(
        encoder_embed_dim=768,
        encoder_depth=12,
        encoder_num_heads=12,
        encoder_global_attn_indexes=(2, 5, 8, 11),
    )


def build_sam_demo() -> Sam:
    """The small demo SAM (1.57 M parameters): 256-px input, 16x16 embedding, 64-wide decoder.

    Six ViT blocks of width 128 with 4 heads; blocks 2 and 5 attend globally (as the real
    models end each quarter with a global block), the others in 8x8 windows (2x2 windows over
    the 16x16 token grid).
    """
    return _build(
        encoder_embed_dim=128,
        encoder_depth=6,
        encoder_num_heads=4,
        encoder_global_attn_indexes=(2, 5),
        image_size=256,
        window_size=8,
        prompt_embed_dim=64,
        decoder_mlp_dim=256,
        decoder_num_heads=4,
        iou_head_hidden_dim=64,
        mask_in_chans=16,
    )


SAM_BUILDERS: dict[str, Callable[[], Sam]] = {
    "vit_h": build_sam_vit_h,
    "vit_l": build_sam_vit_l,
    "vit_b": build_sam_vit_b,
    "demo": build_sam_demo,
}


def build_sam_model(model_type: str) -> Sam:
    """A randomly initialised SAM of ``model_type`` on the current default device, in eval mode.

    Raises ``ValueError`` listing the known types for an unknown one.
    """
    try:
        builder = SAM_BUILDERS[model_type]
    except KeyError:
        raise ValueError(
            f"unknown SAM model type {model_type!r}; known: {sorted(SAM_BUILDERS)}"
        ) from None
    return builder()


def resolve_device(device: str) -> torch.device:
    """``auto`` → ``cuda`` when available, else ``cpu``; ``cuda`` without CUDA raises."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    return dev


BUILTIN = "builtin"
DEMO_CHECKPOINT = os.path.join(os.path.dirname(os.path.dirname(__file__)), "assets", "demo_sam.pt")


def resolve_checkpoint(cfg: SamConfig) -> str:
    """The checkpoint path of ``cfg``; ``builtin`` names the committed demo-SAM weights."""
    if cfg.checkpoint != BUILTIN:
        return cfg.checkpoint
    if cfg.model_type != "demo":
        raise ValueError("checkpoint 'builtin' exists only for model_type 'demo'")
    return DEMO_CHECKPOINT


def build_sam(cfg: SamConfig) -> Sam:
    """Build ``cfg.model_type``, load ``cfg.checkpoint`` (if set) and move it to the device.

    Returns the model in eval mode. Checkpoint errors raise ``ValueError`` (see
    :func:`load_sam_checkpoint`); so does a SAM 2.1 model type (built by
    :func:`weaksam.sam.sam2_build.build_sam2`, engines by
    :func:`weaksam.sam.backends.build_engine`).
    """
    if cfg.backend != "sam":
        raise ValueError(
            f"model_type {cfg.model_type!r} is a SAM 2.1 model: build it with "
            "weaksam.sam.sam2_build.build_sam2 (an engine: weaksam.sam.backends.build_engine)"
        )
    model = build_sam_model(cfg.model_type)
    if cfg.checkpoint:
        load_sam_checkpoint(model, resolve_checkpoint(cfg))
    return model.to(resolve_device(cfg.device)).eval()


def count_parameters(model: torch.nn.Module) -> int:
    """Number of parameters (works on ``meta`` models too)."""
    return sum(p.numel() for p in model.parameters())


class SamCheckpointError(ValueError):
    """A file that is not a loadable SAM checkpoint for the model it is loaded into."""


def _first(names: list[str], n: int = 8) -> str:
    shown = ", ".join(names[:n])
    return shown + (f", ... ({len(names) - n} more)" if len(names) > n else "")


def load_sam_checkpoint(model: torch.nn.Module, path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a SAM checkpoint into ``model`` with ``weights_only=True`` and a strict key check.

    Accepts a raw state dict (the published ``sam_vit_*.pth``) or ``{"model": state_dict,
    ...}`` (ours, see :func:`save_sam_checkpoint`; also the published SAM 2.1 ``.pt`` files).

    Returns:
        the checkpoint's other entries (e.g. ``{"config": {...}}``); empty for a raw state dict.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        SamCheckpointError (a ``ValueError``): a corrupt or truncated file, a pickle with
            objects other than tensors and plain containers (refused by ``weights_only``),
            or keys / shapes that do not match ``model`` (the message lists the first few).
    """
    state, extra = read_sam_checkpoint(path)
    check_state_dict(model, state, path)
    model.load_state_dict(state, strict=True)
    return extra


def read_sam_checkpoint(
    path: str | os.PathLike[str],
) -> tuple[Mapping[str, torch.Tensor], dict[str, Any]]:
    """``(state_dict, other entries)`` of a checkpoint file, read with ``weights_only=True``.

    Errors as :func:`load_sam_checkpoint` (a missing file, an unreadable or refused pickle, a
    payload that is not a state dict of tensors); the keys are not checked here.
    """
    path = os.fspath(path)
    remote = storage.is_uri(path)
    if not (storage.exists(path) if remote else os.path.exists(path)):
        raise FileNotFoundError(f"SAM checkpoint not found: {path}")
    try:
        if remote:
            with storage.open_input(path) as fh:
                obj = torch.load(fh, map_location="cpu", weights_only=True)
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # zip / pickle / EOF / weights_only refusal: all mean "invalid"
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SamCheckpointError(
            f"{path} is not a valid SAM checkpoint (torch.load with weights_only=True "
            f"failed: {type(exc).__name__}: {msg})"
        ) from exc

    extra: dict[str, Any] = {}
    if isinstance(obj, Mapping) and isinstance(obj.get("model"), Mapping):
        state = obj["model"]
        extra = {str(k): v for k, v in obj.items() if k != "model"}
    elif isinstance(obj, Mapping):
        state = obj
    else:
        raise SamCheckpointError(
            f"{path} is not a valid SAM checkpoint: expected a state dict or "
            f"{{'model': state_dict, ...}}, got {type(obj).__name__}"
        )
    bad = [str(k) for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise SamCheckpointError(
            f"{path} is not a valid SAM checkpoint: non-tensor entries {_first(bad)}"
        )
    return state, extra


def check_state_dict(
    model: torch.nn.Module,
    state: Mapping[str, torch.Tensor],
    path: str | os.PathLike[str],
    hint: str = "",
) -> None:
    """Raise :class:`SamCheckpointError` unless ``state`` has exactly ``model``'s keys and
    shapes; the message names ``path``, lists the first few differences and ends with
    ``hint`` (when given)."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [str(k) for k in state if k not in expected]
    mismatched = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys: {_first(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys: {_first(unexpected)}")
        if mismatched:
            parts.append(f"{len(mismatched)} shape mismatches: {_first(mismatched, 4)}")
        raise SamCheckpointError(
            f"{os.fspath(path)} does not match the model ({type(model).__name__}): "
            + "; ".join(parts)
            + (f" ({hint})" if hint else "")
        )


def _to_plain(value: Any, where: str) -> Any:
    """``value`` with numpy scalars turned into Python ones; ``TypeError`` for anything that
    ``torch.load(weights_only=True)`` would refuse (custom classes, functions, arrays)."""
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, bool | int | float | str | torch.Tensor):
        return value
    if isinstance(value, list | tuple):
        items = [_to_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
        return items if isinstance(value, list) else tuple(items)
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str | int):
                raise TypeError(f"{where}: key {k!r} is not a str/int")
            out[k] = _to_plain(v, f"{where}.{k}")
        return out
    raise TypeError(
        f"{where}: {type(value).__name__} cannot be stored in a weights-only checkpoint"
    )


def save_sam_checkpoint(
    model: torch.nn.Module,
    path: str | os.PathLike[str],
    config_dict: Mapping[str, Any],
    extra: Mapping[str, Any] | None = None,
) -> None:
    """Save ``{"model": state_dict (CPU), "config": config_dict, **extra}`` atomically.

    ``config_dict`` (e.g. ``{"model_type": "demo", ...}``, so a resume rebuilds the same model)
    and ``extra`` (step, metrics, ...) must hold only plain values (str, int, float, bool,
    None, lists, tuples, dicts, tensors; numpy scalars are converted) so that
    :func:`load_sam_checkpoint` can read them with ``weights_only=True``; anything else raises
    ``TypeError`` before writing.
    """
    payload: dict[str, Any] = {"config": dict(config_dict)}
    for k, v in (extra or {}).items():
        if k in ("model", "config"):
            raise ValueError(f"extra key {k!r} is reserved")
        payload[str(k)] = v
    payload = _to_plain(payload, "checkpoint")
    payload["model"] = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    path = os.fspath(path)
    if storage.is_uri(path):  # written whole when the upload completes
        with storage.open_output(path) as fh:
            torch.save(payload, fh)
        return
    atomic_torch_save(payload, path)
