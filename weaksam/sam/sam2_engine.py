# Portions of this file follow SAM 2 (https://github.com/facebookresearch/sam2), Copyright (c)
# Meta Platforms, Inc. and affiliates, licensed under the Apache License, Version 2.0. See NOTICE.
"""The SAM 2.1 prompting engine: :class:`~weaksam.sam.engine.SamPromptEngine`'s interface on a
``sam2`` model (:mod:`weaksam.sam.sam2_build`).

Same settings (:class:`~weaksam.sam.engine.EngineConfig`), same outputs
(:class:`~weaksam.sam.engine.PromptMasks`, :class:`~weaksam.sam.engine.ProposalSet`, WeakSAM's
order through :func:`~weaksam.sam.engine.generate_proposal_set`), SAM 2's own arithmetic:

- :meth:`Sam2PromptEngine.embed_image` is ``SAM2ImagePredictor.set_image``: the image is
  resized to the model's square input (not padded), the encoder gives a 1/16 embedding (plus
  the no-memory embedding) and two high-resolution maps for the decoder.
- Prompts are ``SAM2ImagePredictor._predict``'s: point coordinates are normalised by the
  image size and scaled to the input side in float32; a box is two points labelled 2 and 3.
  The decoder is ``sam2``'s ``MaskDecoder.predict_masks`` itself (one image copy per prompt,
  as upstream); masks are its low-resolution logits resized straight to the image size.
- :meth:`~Sam2PromptEngine.generate_grid` equals ``SAM2AutomaticMaskGenerator`` with
  ``crop_n_layers=0``, ``min_mask_region_area=0`` and ``use_m2m=False`` (same points,
  filters, NMS and order; boxes equal up to the inclusive → continuous ``+1``).
- :meth:`~Sam2PromptEngine.predict_points` / :meth:`~Sam2PromptEngine.predict_multipoint` /
  :meth:`~Sam2PromptEngine.predict_boxes` equal ``SAM2ImagePredictor.predict`` with the same
  prompt (``multimask_output=True``; for ``box_mask: single`` ``multimask_output=False``,
  including SAM 2's fall-back to the best multimask output when the single mask is unstable:
  such rows carry that multimask token instead of -1).

Not carried over from the SAM engine: its decoder rewrite that shares the image side between
prompts, the IoU filter before upscaling and the windowed stability measure. Predicted IoUs
are sigmoid outputs in ``[0, 1]`` (SAM 2.1's IoU head), not SAM's regressed values, so the
same ``pred_iou_thresh`` does not select the same share of masks.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from sam2.modeling.sam2_base import SAM2Base
from sam2.utils.transforms import SAM2Transforms

from weaksam.sam.build import SamConfig
from weaksam.sam.engine import (
    EngineConfig,
    PromptMasks,
    PromptMethods,
    prompt_masks,
)
from weaksam.sam.postprocess import (
    encode_binary_masks,
    mask_boxes,
    stability_scores,
)
from weaksam.sam.sam2_build import build_sam2

_AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}
_BOX_LABELS = (2, 3)  # SAM 2's point labels of a box's top-left and bottom-right corners


@dataclass(frozen=True)
class Sam2ImageEmbedding:
    """One encoded image for SAM 2.1; lives for one call (never stored on the engine).

    Attributes:
        features: image embedding ``1xCxhxw`` (``h = w = image_size // 16``), no-memory
            embedding added (as ``SAM2ImagePredictor.set_image``).
        high_res: the decoder's high-resolution maps ``[1x(C/8)x4hx4w, 1x(C/4)x2hx2w]``.
        image_pe: dense positional encoding ``1xCxhxw``.
        original_size: ``(H, W)`` of the image.
    """

    features: torch.Tensor
    high_res: list[torch.Tensor]
    image_pe: torch.Tensor
    original_size: tuple[int, int]


class Sam2PromptEngine(PromptMethods[Sam2ImageEmbedding]):
    """Prompts one SAM 2.1 with grids, points, point groups and boxes.

    Args:
        model: a ``sam2`` ``SAM2Base`` (see :func:`weaksam.sam.sam2_build.build_sam2`).
        cfg: prompting settings (those of :class:`~weaksam.sam.engine.SamPromptEngine`).
        autocast_dtype: ``none``, ``bf16`` or ``fp16``: mixed precision on CUDA (ignored on
            CPU). Mask post-processing always runs in float32.

    The prompting itself (batching, filters, NMS, row order) is
    :class:`~weaksam.sam.engine.PromptMethods`, shared with the SAM engine. With ``precision:
    fast``, ``cfg.encoder_batch`` images share an encoder pass
    (``SAM2ImagePredictor.set_image_batch``'s way); SAM 2's attention already runs through
    SDPA, so the fast path here is batching plus ``autocast_dtype`` on CUDA.
    """

    def __init__(
        self, model: SAM2Base, cfg: EngineConfig | None = None, *, autocast_dtype: str = "none"
    ) -> None:
        if autocast_dtype not in ("none", *_AUTOCAST):
            raise ValueError(f"unknown autocast_dtype {autocast_dtype!r}")
        self.model = model.eval()
        self.cfg = cfg or EngineConfig()
        # SAM 2's own resize + normalise (and coordinate scaling), as its predictor uses them;
        # it scripts its resize with torch.jit, which this torch deprecates (noise per actor)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "`torch.jit.script` is deprecated", FutureWarning)
            self.transforms = SAM2Transforms(
                resolution=model.image_size, mask_threshold=self.cfg.mask_threshold
            )
        self.autocast_dtype = autocast_dtype

    @classmethod
    def from_config(cls, sam_cfg: SamConfig, cfg: EngineConfig | None = None) -> Sam2PromptEngine:
        """Build the model from ``sam_cfg`` (a ``sam2.1_hiera_*`` type) and wrap it."""
        return cls(build_sam2(sam_cfg), cfg, autocast_dtype=sam_cfg.autocast_dtype)

    @property
    def device(self) -> torch.device:
        return torch.device(self.model.device)

    def _autocast(self) -> contextlib.AbstractContextManager[object]:
        if self.device.type == "cuda" and self.autocast_dtype in _AUTOCAST:
            return torch.autocast("cuda", dtype=_AUTOCAST[self.autocast_dtype])
        return contextlib.nullcontext()

    def _encode(self, images: Sequence[npt.NDArray[np.uint8]]) -> list[Sam2ImageEmbedding]:
        x = torch.stack([self.transforms(img) for img in images]).to(self.device)
        model = self.model
        with self._autocast():
            backbone_out = model.forward_image(x)
            _, feats, _, sizes = model._prepare_backbone_features(backbone_out)
            if model.directly_add_no_mem_embed:
                feats[-1] = feats[-1] + model.no_mem_embed
        b = len(images)
        maps = [f.permute(1, 2, 0).view(b, -1, *size) for f, size in zip(feats, sizes, strict=True)]
        image_pe = model.sam_prompt_encoder.get_dense_pe()
        return [
            Sam2ImageEmbedding(
                features=maps[-1][i : i + 1],
                high_res=[m[i : i + 1] for m in maps[:-1]],
                image_pe=image_pe,
                original_size=(int(img.shape[0]), int(img.shape[1])),
            )
            for i, img in enumerate(images)
        ]

    def _to_input(self, xy: torch.Tensor, original_size: tuple[int, int]) -> torch.Tensor:
        """Pixel coordinates ``...x2`` (float32) → the model's input frame, as the predictor."""
        return self.transforms.transform_coords(xy, normalize=True, orig_hw=original_size)

    # ------------------------------------------------------------------ decoder
    def _decode(
        self,
        emb: Sam2ImageEmbedding,
        coords: torch.Tensor | None,
        labels: torch.Tensor | None,
        boxes: torch.Tensor | None = None,
        *,
        tokens: Sequence[int] = (0, 1, 2),
        iou_thresh: float = 0.0,
        single: bool = False,
    ) -> tuple[torch.Tensor, ...]:
        """Decode ``B`` prompts given in the model's input frame.

        ``coords`` ``BxKx2`` and ``labels`` ``BxK`` (boxes are two points labelled 2, 3, so
        ``boxes`` must be ``None``: :meth:`_box_inputs` makes those points);
        ``tokens``: the multimask outputs (0–2) wanted; ``single``: the single-mask output
        instead (``multimask_output=False``: token -1, or the best multimask token where
        SAM 2 falls back to it). Returns, for the ``N`` (prompt, token) pairs with predicted
        IoU ``> iou_thresh`` (all when it is 0), prompt-major: low-res logits ``Nxh'xw'``
        (float32), predicted IoU ``N`` (float32), prompt ``N`` and token ``N`` (int64).
        """
        if coords is None or labels is None or boxes is not None:
            raise ValueError("SAM 2 prompts are points (a box is two points labelled 2, 3)")
        model, dec = self.model, self.model.sam_mask_decoder
        with self._autocast():
            sparse, dense = model.sam_prompt_encoder(
                points=(coords, labels), boxes=None, masks=None
            )
            low, iou, _, _ = dec.predict_masks(
                image_embeddings=emb.features,
                image_pe=emb.image_pe,
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                repeat_image=sparse.shape[0] > 1,  # as the predictor: one copy per prompt
                high_res_features=emb.high_res,
            )
        low, iou = low.float(), iou.float()
        b = low.shape[0]
        rows = torch.arange(b, device=low.device)
        if single:
            token = torch.full((b,), -1, dtype=torch.int64, device=low.device)
            if dec.dynamic_multimask_via_stability:
                # MaskDecoder._dynamic_multimask_via_stability, keeping which output it took
                best = iou[:, 1:].argmax(dim=-1)
                stable = dec._get_stability_scores(low[:, 0:1])[:, 0] >= (
                    dec.dynamic_multimask_stability_thresh
                )
                token = torch.where(stable, token, best)
            low, iou = low[rows, token + 1][:, None], iou[rows, token + 1][:, None]
            token = token[:, None]
        else:
            cols = torch.as_tensor(list(tokens), device=low.device) + 1  # 0: single-mask output
            low, iou = low[:, cols], iou[:, cols]
            token = (cols - 1).expand(b, -1)
        prompt = rows[:, None].expand_as(token)
        low, iou, prompt, token = (
            low.flatten(0, 1),
            iou.flatten(),
            prompt.flatten(),
            token.flatten(),
        )
        if iou_thresh > 0.0:
            keep = iou > iou_thresh
            low, iou, prompt, token = low[keep], iou[keep], prompt[keep], token[keep]
        return low, iou, prompt.long(), token.long()

    def _measure(
        self, emb: Sam2ImageEmbedding, low: torch.Tensor, with_masks: bool
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[bytes] | None]:
        """Stability ``N``, inclusive boxes ``Nx4`` (int64), ``nonempty`` ``N`` and (when
        asked) RLE masks of low-res logits ``Nxh'xw'`` at the original size.

        ``SAM2Transforms.postprocess_masks`` without hole filling (one bilinear resize to the
        image size), a few masks at a time; then AMG's stability score and boxes.
        """
        cfg = self.cfg
        h, w = emb.original_size
        budget = 2**22 if self.device.type == "cpu" else 2**28  # logits per chunk
        step = max(1, budget // (h * w))
        parts: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        masks: list[bytes] | None = [] if with_masks else None
        for s in range(0, low.shape[0], step):
            logits = F.interpolate(
                low[s : s + step, None].float(), (h, w), mode="bilinear", align_corners=False
            )[:, 0]
            binary = logits > cfg.mask_threshold
            stab = stability_scores(logits, cfg.mask_threshold, cfg.stability_score_offset)
            boxes, nonempty = mask_boxes(binary)
            parts.append((stab, boxes, nonempty))
            if masks is not None:
                masks += encode_binary_masks(binary)
        if not parts:
            empty = low.new_zeros((0, 1, 1), dtype=torch.bool)
            parts.append((low.new_zeros(0), *mask_boxes(empty)))
        stab, boxes, nonempty = (torch.cat(t) for t in zip(*parts, strict=True))
        return stab, boxes, nonempty, masks

    def _finish(
        self,
        emb: Sam2ImageEmbedding,
        low: torch.Tensor,
        iou: torch.Tensor,
        prompt_index: torch.Tensor,
        token: torch.Tensor,
        with_masks: bool,
    ) -> PromptMasks:
        """Measure kept low-res logits ``Nxh'xw'`` (boxes, stability); RLE if asked for."""
        stab, boxes, nonempty, masks = self._measure(emb, low, with_masks)
        return prompt_masks(boxes, nonempty, iou, stab, prompt_index, token, masks)

    # ------------------------------------------------------------------ prompt frames
    def _grid_coords(self, points: npt.NDArray[np.float64], size: tuple[int, int]) -> torch.Tensor:
        xy = torch.as_tensor(points, dtype=torch.float32, device=self.device)
        return self._to_input(xy, size)

    def _point_coords(self, points: npt.NDArray[np.float64], size: tuple[int, int]) -> torch.Tensor:
        return self._grid_coords(points, size)

    def _box_inputs(
        self, boxes: npt.NDArray[np.float32], size: tuple[int, int]
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        """SAM 2 takes a box as two points labelled 2 (top-left) and 3 (bottom-right)."""
        b = torch.as_tensor(boxes, device=self.device)
        coords = self._to_input(b.reshape(-1, 2, 2), size)
        labels = torch.tensor([_BOX_LABELS], dtype=torch.int, device=self.device)
        return coords, labels.repeat(b.shape[0], 1), None

    def _grid_measure(
        self, emb: Sam2ImageEmbedding, low: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        stab, boxes, nonempty, _ = self._measure(emb, low, False)
        return stab, boxes, nonempty

    def _grid_masks(self, emb: Sam2ImageEmbedding, low: torch.Tensor) -> list[bytes]:
        masks = self._measure(emb, low, True)[3]
        assert masks is not None
        return masks
