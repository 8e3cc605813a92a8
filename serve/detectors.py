"""Detector adapters behind :class:`serve.models.Detector`, and their loaders.

Every detector comes from the library: the Faster/Mask R-CNN of :mod:`weaksam.detection`
(built by its builders; a ``model.pt`` of the ``retrain``/``wsis`` stages loaded by
:func:`weaksam.detection.inference.load_detector`, ``weights_only=True``, strict keys) or the
WSOD model of :mod:`weaksam.wsod.inference`. The loaders, by ``detector.kind``:

- ``run``: the trained detector of a pipeline run (its ``wsis`` Mask R-CNN, else its
  ``retrain`` Faster R-CNN; :func:`serve.config.detector_checkpoint`);
- ``retrain``: a ``model.pt`` of those stages at ``detector.checkpoint``;
- ``wsod``: a WSOD ``model.pt``, run on SAM proposals of the image;
- ``untrained``: :func:`weaksam.detection.model.init_detector` with ``detector.model`` and a
  seed, reported ``untrained`` (served only when asked for by name).

:class:`RCNNDetector` serves the R-CNNs: ``3xHxW`` float tensors in ``[0, 1]`` in; boxes, 1-based
labels (0 is background), scores and ``Nx1xHxW`` mask probabilities out, in original
coordinates.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torchvision.models.detection import FasterRCNN

from serve.config import ServeConfig, detector_checkpoint
from serve.models import Detections, Detector, Image, ModelCard, ProposalCall
from serve.segmenter import Segmenter
from weaksam.detection.data import image_tensor
from weaksam.detection.inference import load_detector as load_detection_model
from weaksam.detection.model import init_detector
from weaksam.io.rle import encode_masks
from weaksam.runs import file_digest
from weaksam.sam.build import resolve_device

log = logging.getLogger(__name__)

DIGEST_CHARS = 12  # of the SHA-256 in a model id


def _select(boxes: np.ndarray, scores: np.ndarray, threshold: float, cap: int) -> np.ndarray:
    """Rows with finite values scoring ``>= threshold``, best first, at most ``cap``."""
    ok = np.isfinite(scores) & np.isfinite(boxes).all(axis=1) & (scores >= threshold)
    rows = np.flatnonzero(ok)
    order = np.argsort(-scores[rows], kind="stable")
    return rows[order][:cap]


class RCNNDetector:
    """:class:`serve.models.Detector` for a :mod:`weaksam.detection` Faster/Mask R-CNN.

    Args:
        model: the detector (its transform resizes and normalises; outputs are in original
            coordinates).
        card: what ``/v1/models`` shows (classes, id, floor and cap).
        mask_threshold: mask probability ``>=`` this is inside the mask (as the pipeline's
            detections).
        device: ``auto``, ``cpu`` or ``cuda``.

    ``card.min_score`` / ``card.max_detections`` are the floor and cap of every request; each
    forward sets the RoI heads to its batch's lowest threshold and largest cap.
    """

    def __init__(
        self, model: FasterRCNN, card: ModelCard, mask_threshold: float = 0.5, device: str = "cpu"
    ) -> None:
        dev = resolve_device(device)
        self.model = model.to(dev).eval()
        # Mask2Former has no RoI heads: the model holds the same settings itself
        heads: Any = getattr(self.model, "roi_heads", self.model)
        n = (
            heads.box_predictor.cls_score.out_features - 1
            if hasattr(heads, "box_predictor")
            else heads.num_classes
        )
        if n != len(card.classes):
            raise ValueError(f"the model has {n} classes, {len(card.classes)} names given")
        self.card = dataclasses.replace(card, masks=bool(heads.has_mask()), device=str(dev))
        self.classes = card.classes
        self.model_id = card.model_id
        self.min_score = float(card.min_score or 0.0)
        self.max_detections = int(card.max_detections or heads.detections_per_img)
        self.mask_threshold = float(mask_threshold)
        self.device = dev
        self._lock = threading.Lock()

    def predict(self, image: Image, score_threshold: float, max_detections: int) -> Detections:
        return self.predict_batch([image], [score_threshold], [max_detections])[0]

    @torch.inference_mode()
    def predict_batch(
        self,
        images: Sequence[Image],
        score_thresholds: Sequence[float],
        max_detections: Sequence[int],
    ) -> list[Detections]:
        if not images:
            return []
        tensors = [image_tensor(np.ascontiguousarray(im)).to(self.device) for im in images]
        # The RoI heads keep (and Mask R-CNN pastes masks for) only what some request of the
        # batch can return: the lowest threshold and the largest cap of the batch, within the
        # configured floor and cap. One forward at a time holds the heads' settings.
        heads: Any = getattr(self.model, "roi_heads", self.model)
        with self._lock:
            heads.score_thresh = max(self.min_score, min(float(t) for t in score_thresholds))
            heads.detections_per_img = min(self.max_detections, max(int(k) for k in max_detections))
            outputs = self.model(tensors)
        results = []
        for im, out, thr, cap in zip(
            images, outputs, score_thresholds, max_detections, strict=True
        ):
            h, w = int(im.shape[0]), int(im.shape[1])
            boxes = out["boxes"].float().cpu().numpy().reshape(-1, 4)
            scores = out["scores"].float().cpu().numpy().reshape(-1)
            rows = _select(boxes, scores, float(thr), int(cap))
            masks = None
            if "masks" in out:
                keep = torch.as_tensor(rows, dtype=torch.long, device=out["masks"].device)
                binary = (out["masks"][keep, 0] >= self.mask_threshold).cpu().numpy()
                masks = encode_masks(binary.reshape(-1, h, w))
            results.append(
                Detections(
                    boxes=boxes[rows].astype(np.float32),
                    scores=scores[rows].astype(np.float32),
                    classes=(out["labels"].cpu().numpy()[rows] - 1).astype(np.int64),
                    masks=masks,
                    image_size=(h, w),
                )
            )
        return results


class WSODDetector:
    """:class:`serve.models.Detector` for a WSOD checkpoint, on SAM proposals of the image
    (one ``generate`` call, the pipeline's grid settings); box-only."""

    def __init__(self, checkpoint: str, cfg: ServeConfig) -> None:
        from weaksam.wsod.config import WSODTestConfig
        from weaksam.wsod.inference import load_checkpoint

        det = cfg.detector
        dev = resolve_device(det.device)
        self.model, meta = load_checkpoint(checkpoint, dev)
        self.proposer = Segmenter.from_config(cfg.segmenter)
        self.test = WSODTestConfig(
            scales=det.wsod_scales,
            flip=det.wsod_flip,
            score_thresh=det.min_score,
            max_detections=det.max_detections,
        )
        self.max_side = det.wsod_max_side
        self.classes = tuple(str(c) for c in meta["class_names"])
        digest = file_digest(checkpoint)
        architecture = f"wsod-{meta['method']}"
        self.model_id = f"{architecture}:{digest[:DIGEST_CHARS]}"
        self.card = ModelCard(
            role="detector",
            kind="wsod",
            architecture=architecture,
            model_id=self.model_id,
            digest=digest,
            classes=self.classes,
            untrained=False,
            masks=False,
            device=str(dev),
            min_score=det.min_score,
            max_detections=det.max_detections,
        )

    def predict(self, image: Image, score_threshold: float, max_detections: int) -> Detections:
        from weaksam.wsod.inference import detect

        h, w = int(image.shape[0]), int(image.shape[1])
        props = self.proposer.proposals(image, ProposalCall()).boxes
        if props.shape[0] == 0:
            boxes, scores = np.zeros((0, 4), np.float32), np.zeros(0, np.float32)
            classes = np.zeros(0, np.int64)
        else:
            tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
            boxes, scores, classes = detect(
                self.model, tensor, torch.from_numpy(props), self.test, self.max_side
            )
        rows = _select(boxes.reshape(-1, 4), scores, score_threshold, max_detections)
        return Detections(
            boxes=boxes.reshape(-1, 4)[rows],
            scores=scores[rows],
            classes=classes[rows].astype(np.int64),
            masks=None,
            image_size=(h, w),
        )

    def predict_batch(
        self,
        images: Sequence[Image],
        score_thresholds: Sequence[float],
        max_detections: Sequence[int],
    ) -> list[Detections]:
        return [
            self.predict(im, t, k)
            for im, t, k in zip(images, score_thresholds, max_detections, strict=True)
        ]


# --------------------------------------------------------------------------- loaders


def load_trained_detector(cfg: ServeConfig) -> Detector:
    """The ``retrain``/``wsis`` ``model.pt`` of kinds ``run`` and ``retrain``, loaded by
    :func:`weaksam.detection.inference.load_detector` (weights only, strict keys, the stage's
    test size)."""
    det = cfg.detector
    path = detector_checkpoint(det)
    model, meta = load_detection_model(path)
    masks = bool(meta["masks"])
    mc = meta["model_config"]
    architecture = f"{'maskrcnn' if masks else 'fasterrcnn'}_{mc['backbone']}"
    if mc.get("family") == "mask2former":
        architecture = f"mask2former_{mc['mask2former']['trunk']}"
    digest = file_digest(path)
    variant = f"-{meta['variant']}" if meta.get("variant") else ""
    card = ModelCard(
        role="detector",
        kind="retrain",
        architecture=architecture,
        model_id=f"{architecture}{variant}:{digest[:DIGEST_CHARS]}",
        digest=digest,
        classes=tuple(str(c) for c in meta["class_names"]),
        untrained=False,
        masks=masks,
        device=det.device,
        min_score=det.min_score,
        max_detections=det.max_detections,
    )
    return RCNNDetector(model, card, det.mask_threshold, det.device)


def build_untrained_detector(cfg: ServeConfig) -> Detector:
    """Kind ``untrained``: ``detector.model`` with weights drawn from ``detector.seed``."""
    det = cfg.detector
    model = init_detector(det.model, len(det.classes), masks=det.masks, seed=det.seed)
    architecture = f"{'maskrcnn' if det.masks else 'fasterrcnn'}_{det.model.backbone}"
    log.warning("detector: serving the UNTRAINED %s (random weights, as asked)", architecture)
    card = ModelCard(
        role="detector",
        kind="untrained",
        architecture=architecture,
        model_id=f"{architecture}-untrained:seed{det.seed}",
        digest="",
        classes=tuple(det.classes),
        untrained=True,
        masks=det.masks,
        device=det.device,
        min_score=det.min_score,
        max_detections=det.max_detections,
    )
    return RCNNDetector(model, card, det.mask_threshold, det.device)


def load_wsod_detector(cfg: ServeConfig) -> Detector:
    return WSODDetector(detector_checkpoint(cfg.detector), cfg)


DETECTOR_LOADERS: dict[str, Callable[[ServeConfig], Detector]] = {
    "run": load_trained_detector,
    "retrain": load_trained_detector,
    "wsod": load_wsod_detector,
    "untrained": build_untrained_detector,
}


def load_detector(cfg: ServeConfig) -> Detector:
    """The detector ``cfg.detector.kind`` names (see :data:`DETECTOR_LOADERS`)."""
    try:
        loader = DETECTOR_LOADERS[cfg.detector.kind]
    except KeyError:
        raise ValueError(
            f"unknown detector kind {cfg.detector.kind!r}; known: {sorted(DETECTOR_LOADERS)}"
        ) from None
    return loader(cfg)
