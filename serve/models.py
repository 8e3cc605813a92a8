"""What the service's model deployments take and return: the :class:`Detector` protocol, the
calls of the segmenter, and the results that cross Ray (numpy arrays and RLE bytes only).

Coordinates everywhere: XYXY float32 boxes and ``(x, y)`` points in pixels of the original
image, continuous convention (:mod:`weaksam.geometry.boxes`); masks are pycocotools
compressed-RLE ``counts`` sized by ``image_size`` (:mod:`weaksam.io.rle`); class ids 0-based.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]
Image = npt.NDArray[np.uint8]


@dataclass(frozen=True)
class ModelCard:
    """What ``GET /v1/models`` reports about one loaded model (no server paths).

    Attributes:
        role: ``detector`` or ``segmenter``.
        kind: ``retrain`` (a Faster/Mask R-CNN ``model.pt`` of the ``retrain``/``wsis``
            stages), ``wsod``, ``untrained`` (detectors) or ``sam``.
        architecture: e.g. ``maskrcnn_plainconv_fpn``, ``wsod-mist``, ``sam-demo``.
        model_id: architecture plus the first 12 hex digits of the checkpoint's SHA-256 (or
            the random seed of an untrained model).
        digest: the checkpoint's SHA-256 (hex), ``""`` for random weights.
        classes: class names by project id (empty for SAM).
        untrained: random weights (served only when asked for); outputs mean nothing.
        masks: the model predicts instance masks.
        min_score / max_detections: a detector's score floor and per-image cap.
        device: where the model runs.
    """

    role: str
    kind: str
    architecture: str
    model_id: str
    digest: str
    classes: tuple[str, ...]
    untrained: bool
    masks: bool
    device: str
    min_score: float | None = None
    max_detections: int | None = None


@dataclass(frozen=True)
class Detections:
    """Detections of one image, highest score first.

    Attributes:
        boxes: ``Nx4`` float32 XYXY, original pixels.
        scores: ``N`` float32 in ``[0, 1]``, non-increasing.
        classes: ``N`` int64 project class ids (0-based).
        masks: ``N`` RLE counts of ``image_size``, or None for box-only models.
        image_size: ``(H, W)``.
    """

    boxes: FloatArray
    scores: FloatArray
    classes: IntArray
    masks: list[bytes] | None
    image_size: tuple[int, int]

    def __len__(self) -> int:
        return int(self.boxes.shape[0])


class Detector(Protocol):
    """A detector (or instance segmenter) the service can deploy.

    ``predict`` takes an ``HxWx3`` uint8 RGB image and returns :class:`Detections` scoring
    ``>= score_threshold`` (at most ``max_detections``), boxes in original pixels.
    ``predict_batch`` does the same for several images in as few forward passes as it can
    (what ``@serve.batch`` calls); results must equal per-image ``predict`` up to the
    effect of padding images of different sizes into one batch.
    """

    classes: tuple[str, ...]
    model_id: str
    card: ModelCard

    def predict(self, image: Image, score_threshold: float, max_detections: int) -> Detections:
        """Detections of one image."""
        ...

    def predict_batch(
        self,
        images: Sequence[Image],
        score_thresholds: Sequence[float],
        max_detections: Sequence[int],
    ) -> list[Detections]:
        """Detections of each image, with its own threshold and cap."""
        ...


@dataclass(frozen=True)
class SegmentCall:
    """Prompts of one ``/v1/segment`` request (already checked against the image).

    Attributes:
        points: ``Px2`` float64 ``(x, y)``; labels: ``P`` int64 (1 fg, 0 bg).
        boxes: ``Bx4`` float32 XYXY.
        multipoint: all points form one prompt (else one prompt per point).
        multimask: three masks per point prompt (else the best by predicted IoU).
    """

    points: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros((0, 2)))
    labels: IntArray = field(default_factory=lambda: np.zeros(0, np.int64))
    boxes: FloatArray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    multipoint: bool = False
    multimask: bool = False


@dataclass(frozen=True)
class SegmentResult:
    """Masks of one ``/v1/segment`` request: points' masks first, then the boxes'.

    Attributes:
        boxes: ``Nx4`` float32 tight boxes of the masks (``[0, 0, 0, 0]`` when empty).
        scores: ``N`` predicted IoU. stability: ``N`` stability score (NaN when undefined).
        prompt_types: ``N`` of ``point``, ``points`` (a multipoint prompt) or ``box``.
        prompt_index: ``N`` index into the request's points or boxes. token: ``N`` 0..2.
        masks: ``N`` RLE counts. image_size: ``(H, W)``.
    """

    boxes: FloatArray
    scores: FloatArray
    stability: FloatArray
    prompt_types: list[str]
    prompt_index: IntArray
    token: IntArray
    masks: list[bytes]
    image_size: tuple[int, int]

    def __len__(self) -> int:
        return int(self.boxes.shape[0])


@dataclass(frozen=True)
class ProposalCall:
    """One ``/v1/proposals`` request: optional peak points with classes and kinds.

    Attributes:
        points: ``Px2`` float64; classes: ``P`` int64 (-1 class-agnostic) or None;
            kinds: ``P`` point kinds.
        include_grid: prompt with the point grid too. return_masks: build RLE masks.
        max_proposals: keep the top ones (0: the engine config's cap).
    """

    points: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros((0, 2)))
    classes: IntArray | None = None
    kinds: tuple[str, ...] = ()
    include_grid: bool = True
    return_masks: bool = False
    max_proposals: int = 0
