"""Request and response bodies of the HTTP API (pydantic), as the OpenAPI document shows them.

Conventions: boxes are ``[x1, y1, x2, y2]`` in pixels of the uploaded image as displayed (EXIF
orientation applied), continuous convention (the image spans ``[0, W] x [0, H]``; a box covers
pixel columns ``x1 .. x2 - 1``); points are ``(x, y)`` in the same frame (a pixel's centre is
``(col + 0.5, row + 0.5)``); masks are COCO compressed RLE ``{"size": [H, W], "counts": str}``
(``pycocotools.mask.decode`` reads them) or COCO polygons; class ids are the project's 0-based
ids, with names from ``GET /v1/models``.

Every request model forbids unknown fields and validates strictly (no coercion: ``"0.5"`` is
not a number, ``1`` is not a boolean). The hard list caps here only bound parsing; the
service's own (lower) limits come from its config, are checked in :mod:`serve.validation` and
are written into the OpenAPI document by :mod:`serve.openapi`, with the class names, the image
field's pattern and the rules JSON Schema can state.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

HARD_MAX_ITEMS = 4096


def _integral(value: object) -> object:
    """``3.0`` as ``3``: JSON Schema's ``integer`` is any number without a fraction."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


# An integer as JSON Schema has it, under strict validation (no "3", no true, no 3.5).
JsonInt = Annotated[int, BeforeValidator(_integral)]
Coord = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Box = Annotated[
    list[Coord],
    Field(
        min_length=4,
        max_length=4,
        description="[x1, y1, x2, y2], pixels, x1 < x2 <= width and y1 < y2 <= height",
    ),
]
Base64Image = Annotated[
    str,
    Field(
        min_length=1,
        description="The image file (PNG, JPEG, GIF, WebP, BMP or TIFF; at most the service's "
        "upload limit once decoded, 413 above it) as standard base64 (RFC 4648 alphabet with "
        "'=' padding; spaces and line breaks are ignored), or as a data URL "
        "'data:image/<type>;base64,<base64>' whose type must match the file (415 otherwise).",
    ),
]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


# --------------------------------------------------------------------------- errors


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable machine-readable code, e.g. 'invalid_image'.")
    message: str = Field(description="What was wrong, for a person.")


class ErrorResponse(BaseModel):
    """The body of every 4xx and 5xx response."""

    error: ErrorDetail


# --------------------------------------------------------------------------- shared


class RLE(BaseModel):
    """COCO compressed RLE of one mask."""

    size: list[int] = Field(description="[height, width]")
    counts: str


# --------------------------------------------------------------------------- detect


class DetectOptions(_Request):
    """Options of ``POST /v1/detect`` (multipart form fields, or JSON fields next to
    ``image``)."""

    score_threshold: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="Keep detections scoring at least this (a threshold below the model's "
        "floor, see /v1/models, acts as the floor).",
    )
    max_detections: JsonInt = Field(
        100, ge=1, le=1000, description="At most this many, highest scores first."
    )
    masks: Literal["none", "rle", "polygon"] = Field(
        "rle", description="Instance mask format (only for models that predict masks)."
    )
    overlay: bool = Field(False, description="Add 'overlay_png', a rendered PNG (base64).")
    response_format: Literal["json", "png"] = Field(
        "json",
        description="'png' answers with the rendered overlay as image/png (as does an "
        "'Accept: image/png' header).",
    )


class DetectJsonRequest(DetectOptions):
    """``POST /v1/detect`` as ``application/json``."""

    image: Base64Image


class Detection(BaseModel):
    box: list[float] = Field(description="[x1, y1, x2, y2], original pixels")
    score: float
    class_id: int
    class_name: str
    rle: RLE | None = None
    polygons: list[list[float]] | None = Field(
        None, description="COCO polygons [x0, y0, x1, y1, ...] through boundary pixel centres"
    )


class DetectResponse(BaseModel):
    model_id: str
    width: int
    height: int
    detections: list[Detection]
    overlay_png: str | None = Field(None, description="base64 PNG, when 'overlay' was asked")


# --------------------------------------------------------------------------- segment


class PointPrompt(_Request):
    x: Coord = Field(description="0 <= x <= image width")
    y: Coord = Field(description="0 <= y <= image height")
    label: JsonInt = Field(1, ge=0, le=1, description="1 foreground, 0 background")


class SegmentOptions(_Request):
    """Prompts of ``POST /v1/segment``: at least one point or box (in multipart, ``points``
    and ``boxes`` are JSON text fields)."""

    model_config = ConfigDict(
        json_schema_extra={
            "anyOf": [
                {"required": ["points"], "properties": {"points": {"minItems": 1}}},
                {"required": ["boxes"], "properties": {"boxes": {"minItems": 1}}},
            ]
        }
    )

    points: list[PointPrompt] = Field(
        default_factory=list,
        max_length=HARD_MAX_ITEMS,
        description="Point prompts; each is its own prompt unless 'multipoint'.",
    )
    boxes: list[Box] = Field(
        default_factory=list,
        max_length=HARD_MAX_ITEMS,
        description="Box prompts, one mask each (the output with the best predicted IoU).",
    )
    multipoint: bool = Field(
        False, description="All points form one prompt (foreground and background clicks)."
    )
    multimask_output: bool = Field(
        False,
        description="Return SAM's three masks per point prompt instead of the best one "
        "(box prompts always return one).",
    )


class SegmentJsonRequest(SegmentOptions):
    """``POST /v1/segment`` as ``application/json``."""

    image: Base64Image


class SegmentMask(BaseModel):
    prompt_type: Literal["point", "points", "box"]
    prompt_index: int = Field(description="Index into 'points' or 'boxes' (0 for 'points').")
    token: int = Field(description="SAM's multimask output 0..2")
    score: float = Field(description="SAM's predicted IoU")
    stability: float | None = Field(None, description="Stability score (null if undefined)")
    box: list[float] = Field(description="Tight box of the mask ([0, 0, 0, 0] when empty)")
    rle: RLE


class SegmentResponse(BaseModel):
    model_id: str
    width: int
    height: int
    masks: list[SegmentMask]


# --------------------------------------------------------------------------- proposals


class ProposalPoint(_Request):
    x: Coord = Field(description="0 <= x <= image width")
    y: Coord = Field(description="0 <= y <= image height")
    class_name: str | None = Field(
        None,
        description="Class of the point (a name from /v1/models); null or absent: "
        "class-agnostic. Either every point of a request has a class or none has.",
    )
    kind: Literal["peak", "coarse", "fine", "cross"] = "peak"


class ProposalsOptions(_Request):
    """Options of ``POST /v1/proposals``.

    The service has no classifier: WeakSAM's peak points come from the client (e.g. CAM
    peaks computed elsewhere) as ``points`` with classes; without points only the grid
    prompts SAM. ``labels`` are the image-level tags: when given, only points of those
    classes prompt SAM (as the pipeline only has peaks for labelled classes).
    """

    points: list[ProposalPoint] = Field(
        default_factory=list,
        max_length=HARD_MAX_ITEMS,
        description="Peak points; either every one has a class_name or none has.",
    )
    labels: list[str] | None = Field(
        None,
        max_length=HARD_MAX_ITEMS,
        description="Image-level labels, distinct (names from /v1/models); only points of "
        "these classes prompt SAM. In multipart: one 'labels' part per label.",
    )
    include_grid: bool = Field(True, description="Prompt with the 'everything' point grid.")
    return_masks: bool = Field(False, description="Add each proposal's RLE mask.")
    max_proposals: JsonInt = Field(
        0, ge=0, le=100_000, description="Keep the highest-scoring ones (0: the config's cap)."
    )


class ProposalsJsonRequest(ProposalsOptions):
    """``POST /v1/proposals`` as ``application/json``."""

    image: Base64Image


class Proposal(BaseModel):
    box: list[float]
    score: float = Field(description="SAM's predicted IoU")
    source: str = Field(description="'grid', 'point:<kind>' or 'class:<kind>'")
    class_id: int | None = None
    class_name: str | None = None
    rle: RLE | None = None


class ProposalsResponse(BaseModel):
    model_id: str
    width: int
    height: int
    proposals: list[Proposal]


# --------------------------------------------------------------------------- status


class ModelInfo(BaseModel):
    """One loaded model. No server paths: the checkpoint is named by its content hash."""

    role: Literal["detector", "segmenter"]
    kind: str = Field(
        description="'retrain' (a Faster/Mask R-CNN of the retrain/wsis stages), 'wsod', "
        "'untrained' (random weights, served only when asked for) or 'sam'"
    )
    architecture: str
    model_id: str = Field(description="Architecture and the checkpoint's short SHA-256")
    digest: str = Field(description="SHA-256 of the checkpoint file ('' for random weights)")
    classes: list[str]
    untrained: bool = Field(description="Random weights: outputs are meaningless")
    masks: bool = Field(description="Predicts instance masks")
    min_score: float | None = Field(None, description="The detector's score floor")
    max_detections: int | None = None
    device: str


class ModelsResponse(BaseModel):
    models: list[ModelInfo]


class HealthResponse(BaseModel):
    status: Literal["ok"] = "ok"


class ReadyResponse(BaseModel):
    ready: bool
    models: dict[str, bool]
