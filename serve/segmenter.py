"""SAM for the service: prompted masks (``/v1/segment``) and WeakSAM proposals
(``/v1/proposals``), both through :class:`weaksam.sam.engine.SamPromptEngine`.

The engine keeps no per-image state (each call encodes its image into an embedding that
lives in the call), so one :class:`Segmenter` serves concurrent requests from several
threads; a ``SamPredictor`` shared that way raced (see MEASURED.md).
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import numpy.typing as npt
import torch
from segment_anything.modeling import Sam

from serve.config import SegmenterConfig
from serve.models import Image, ModelCard, ProposalCall, SegmentCall, SegmentResult
from weaksam.runs import file_digest
from weaksam.sam.build import build_sam, resolve_checkpoint
from weaksam.sam.engine import EngineConfig, PromptMasks, ProposalSet, SamPromptEngine, reorder

log = logging.getLogger(__name__)
DIGEST_CHARS = 12  # of the SHA-256 in a model id


def _best_per_prompt(pm: PromptMasks) -> npt.NDArray[np.int64]:
    """Row of the highest predicted IoU of each prompt (first on ties), prompts ascending."""
    order = np.lexsort((-pm.scores, pm.prompt_index))  # by prompt, then score descending
    first = np.ones(order.size, dtype=bool)
    first[1:] = pm.prompt_index[order][1:] != pm.prompt_index[order][:-1]
    return order[first].astype(np.int64)


class Segmenter:
    """Prompted segmentation and proposals with one SAM.

    Args:
        model: a segment-anything ``Sam`` in eval mode.
        engine_cfg: prompting settings (the proposals' grid, thresholds, batch size).
        card: what ``/v1/models`` shows.
        autocast_dtype: mixed precision on CUDA (``none``, ``bf16``, ``fp16``).
    """

    def __init__(
        self, model: Sam, engine_cfg: EngineConfig, card: ModelCard, autocast_dtype: str = "none"
    ) -> None:
        self.model = model.eval()
        self.engine_cfg = engine_cfg
        self.card = card
        self.model_id = card.model_id
        self.autocast_dtype = autocast_dtype

    @classmethod
    def from_config(cls, cfg: SegmenterConfig) -> Segmenter:
        """Build the SAM of ``cfg`` (``checkpoint: builtin``: the committed demo SAM). An empty
        checkpoint asks for random weights from ``seed``, reported ``untrained``; a missing
        checkpoint file is an error, never a silent fallback to random weights."""
        sam_cfg = cfg.sam.to_sam_config()
        path = resolve_checkpoint(sam_cfg) if sam_cfg.checkpoint else ""
        if not path:
            log.warning("segmenter: serving an UNTRAINED SAM (empty checkpoint, as asked)")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            model = build_sam(sam_cfg)
        digest = file_digest(path)
        suffix = digest[:DIGEST_CHARS] if path else f"seed{cfg.seed}"
        card = ModelCard(
            role="segmenter",
            kind="sam",
            architecture=f"sam-{sam_cfg.model_type}",
            model_id=f"sam-{sam_cfg.model_type}:{suffix}",
            digest=digest,
            classes=(),
            untrained=not path,
            masks=True,
            device=str(model.device),
        )
        return cls(model, cfg.engine, card, sam_cfg.autocast_dtype)

    def engine(self, **changes: object) -> SamPromptEngine:
        """A prompt engine on the shared model with ``changes`` to the engine config (cheap:
        the engine holds only the model and its settings)."""
        cfg = dataclasses.replace(self.engine_cfg, **changes)  # type: ignore[arg-type]
        return SamPromptEngine(self.model, cfg, autocast_dtype=self.autocast_dtype)

    def segment(self, image: Image, call: SegmentCall) -> SegmentResult:
        """Masks for the prompts of ``call`` (points first, then boxes), one encoder pass.

        A point prompt gives SAM's multimask output with the best predicted IoU (all three
        with ``multimask``), as ``SamPredictor.predict(..., multimask_output=True)`` users
        pick; a box prompt the best of three (``box_mask = "best_iou"``).
        """
        eng = self.engine(
            keep_multimask_tokens=(0, 1, 2),
            point_pred_iou_thresh=0.0,
            return_masks=True,
            box_mask="best_iou",
        )
        emb = eng.embed_image(image)
        parts: list[tuple[PromptMasks, str]] = []
        if call.points.shape[0]:
            if call.multipoint:
                pm = eng.predict_multipoint(emb, [(call.points, call.labels)])
                kind = "points"
            else:
                pm = eng.predict_points(emb, call.points, call.labels)
                kind = "point"
            if not call.multimask:
                pm = reorder(pm, _best_per_prompt(pm))
            parts.append((pm, kind))
        if call.boxes.shape[0]:
            parts.append((eng.predict_boxes(emb, call.boxes), "box"))
        h, w = emb.original_size
        return SegmentResult(
            boxes=_cat([p.boxes for p, _ in parts], (0, 4), np.float32),
            scores=_cat([p.scores for p, _ in parts], (0,), np.float32),
            stability=_cat([p.stability for p, _ in parts], (0,), np.float32),
            prompt_types=[kind for p, kind in parts for _ in range(len(p))],
            prompt_index=_cat([p.prompt_index for p, _ in parts], (0,), np.int64),
            token=_cat([p.token for p, _ in parts], (0,), np.int64),
            masks=[m for p, _ in parts for m in (p.masks or [])],
            image_size=(h, w),
        )

    def proposals(self, image: Image, call: ProposalCall) -> ProposalSet:
        """WeakSAM proposals of one image: :meth:`SamPromptEngine.generate` with the grid
        (unless ``include_grid`` is false) and the call's points, classes and kinds."""
        cfg = self.engine_cfg
        eng = self.engine(
            points_per_side=cfg.points_per_side if call.include_grid else 0,
            return_masks=call.return_masks,
            max_proposals=call.max_proposals or cfg.max_proposals,
        )
        n = call.points.shape[0]
        return eng.generate(
            image,
            points=call.points if n else None,
            point_classes=call.classes if n and call.classes is not None else None,
            point_kinds=list(call.kinds) if n and call.kinds else None,
        )


def _cat(arrays: list[np.ndarray], empty: tuple[int, ...], dtype: type) -> np.ndarray:
    if not arrays:
        return np.zeros(empty, dtype=dtype)
    return np.concatenate(arrays).astype(dtype)
