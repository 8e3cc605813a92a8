"""Turning model results into response bodies: RLE/polygon masks, the PNG overlay, and the
pydantic responses of :mod:`serve.schemas`. Pure functions (no Ray, no FastAPI)."""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Sequence

import cv2
import numpy as np
from PIL import Image as PILImage

from serve.models import Detections, Image, ModelCard, SegmentResult
from serve.schemas import (
    RLE,
    Detection,
    DetectOptions,
    DetectResponse,
    ModelInfo,
    Proposal,
    ProposalsResponse,
    SegmentMask,
    SegmentResponse,
)
from weaksam.io.rle import decode_mask, decode_masks
from weaksam.sam.engine import ProposalSet
from weaksam.viz.draw import class_color, draw_boxes, overlay_masks


def rle_json(counts: bytes, height: int, width: int) -> RLE:
    return RLE(size=[int(height), int(width)], counts=counts.decode("ascii"))


def mask_polygons(counts: bytes, height: int, width: int) -> list[list[float]]:
    """COCO polygons ``[x0, y0, x1, y1, ...]`` of a mask's outer contours, through the centres
    of its boundary pixels (continuous coordinates: pixel ``(r, c)`` has centre
    ``(c + 0.5, r + 0.5)``); contours of fewer than 3 points are dropped."""
    mask = decode_mask(counts, height, width).astype(np.uint8)
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polys = []
    for c in contours:
        pts = c.reshape(-1, 2).astype(np.float64) + 0.5
        if pts.shape[0] >= 3:
            polys.append([round(float(v), 2) for v in pts.reshape(-1)])
    return polys


def _box(b: np.ndarray) -> list[float]:
    return [float(v) for v in b]


def _finite_or_none(v: float) -> float | None:
    return float(v) if math.isfinite(float(v)) else None


def encode_png(image: Image) -> bytes:
    buf = io.BytesIO()
    PILImage.fromarray(image).save(buf, format="PNG", compress_level=3)
    return buf.getvalue()


def render_detections(image: Image, dets: Detections, classes: Sequence[str]) -> bytes:
    """The image with masks (if any), boxes and ``class score`` tags, as PNG bytes; colours
    by class id (:func:`weaksam.viz.draw.class_color`)."""
    colors = [class_color(int(c)) for c in dets.classes]
    out = image
    h, w = dets.image_size
    if dets.masks:
        out = overlay_masks(out, decode_masks(dets.masks, h, w), colors=colors)
    labels = [classes[int(c)] for c in dets.classes]
    out = draw_boxes(out, dets.boxes, labels=labels, scores=dets.scores, colors=colors)
    return encode_png(out)


def detect_response(
    dets: Detections,
    classes: Sequence[str],
    model_id: str,
    options: DetectOptions,
    overlay_png: bytes | None = None,
) -> DetectResponse:
    h, w = dets.image_size
    items = []
    for i in range(len(dets)):
        cid = int(dets.classes[i])
        rle = polygons = None
        if dets.masks is not None and options.masks == "rle":
            rle = rle_json(dets.masks[i], h, w)
        elif dets.masks is not None and options.masks == "polygon":
            polygons = mask_polygons(dets.masks[i], h, w)
        items.append(
            Detection(
                box=_box(dets.boxes[i]),
                score=float(dets.scores[i]),
                class_id=cid,
                class_name=classes[cid],
                rle=rle,
                polygons=polygons,
            )
        )
    return DetectResponse(
        model_id=model_id,
        width=w,
        height=h,
        detections=items,
        overlay_png=base64.b64encode(overlay_png).decode("ascii") if overlay_png else None,
    )


def segment_response(result: SegmentResult, model_id: str) -> SegmentResponse:
    h, w = result.image_size
    masks = [
        SegmentMask(
            prompt_type=result.prompt_types[i],  # type: ignore[arg-type]
            prompt_index=int(result.prompt_index[i]),
            token=int(result.token[i]),
            score=float(result.scores[i]),
            stability=_finite_or_none(result.stability[i]),
            box=_box(result.boxes[i]),
            rle=rle_json(result.masks[i], h, w),
        )
        for i in range(len(result))
    ]
    return SegmentResponse(model_id=model_id, width=w, height=h, masks=masks)


def proposals_response(
    props: ProposalSet, classes: Sequence[str], model_id: str
) -> ProposalsResponse:
    h, w = props.image_size
    items = []
    for i in range(len(props)):
        cid = int(props.class_hints[i])
        items.append(
            Proposal(
                box=_box(props.boxes[i]),
                score=float(props.scores[i]),
                source=props.sources[i],
                class_id=cid if cid >= 0 else None,
                class_name=classes[cid] if 0 <= cid < len(classes) else None,
                rle=rle_json(props.masks[i], h, w) if props.masks is not None else None,
            )
        )
    return ProposalsResponse(model_id=model_id, width=w, height=h, proposals=items)


def model_info(card: ModelCard) -> ModelInfo:
    return ModelInfo(
        role=card.role,  # type: ignore[arg-type]
        kind=card.kind,
        architecture=card.architecture,
        model_id=card.model_id,
        digest=card.digest,
        classes=list(card.classes),
        untrained=card.untrained,
        masks=card.masks,
        min_score=card.min_score,
        max_detections=card.max_detections,
        device=card.device,
    )
