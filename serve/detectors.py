"""Detector adapters behind :class:`serve.models.Detector`, and their loaders.

- :class:`TorchvisionDetector` wraps any torchvision R-CNN (``GeneralizedRCNN``: Faster R-CNN,
  Mask R-CNN): a list of ``3xHxW`` float tensors in ``[0, 1]`` in; boxes, 1-based labels (0 is
  background), scores and ``Nx1xHxW`` mask probabilities out, in original coordinates.
- Checkpoints (:func:`save_detector_checkpoint` / :func:`load_detector_checkpoint`):
  ``{"model": state_dict, "config": {"architecture", "class_names", "min_size", "max_size",
  "model_kwargs"}, ...}``, loaded with ``weights_only=True`` and a strict key check; the
  architecture is a name of :data:`ARCHITECTURES`.
- ``demo``: when no trained checkpoint is configured, a randomly initialised (seeded) small
  Mask R-CNN of torchvision's classes, reported ``untrained``, so the service runs today.
- ``retrain``: the pipeline's ``retrain``/``wsis`` ``model.pt`` (Faster/Mask R-CNN), loaded by
  :func:`weaksam.detection.inference.load_detector` and served by the same adapter.
- ``wsod``: the WSOD detector (:mod:`weaksam.wsod.inference`) on SAM proposals.

A new checkpoint format plugs in as a loader ``(ServeConfig) -> Detector`` in
:data:`DETECTOR_LOADERS` (for a torchvision model: rebuild it, then
``TorchvisionDetector(model, classes=..., ...)``).
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

import numpy as np
import torch
from torch import nn
from torchvision.models import detection as tvd
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.ops import MultiScaleRoIAlign

from serve.config import ServeConfig
from serve.models import Detections, Detector, Image, ModelCard, ProposalCall
from weaksam.io.rle import encode_masks
from weaksam.sam.build import resolve_device

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- architectures


class TinyBackbone(nn.Sequential):
    """Four stride-2 3x3 convs (stride 16), ``2 * width`` output channels: a CPU-sized
    backbone for the demo model and tests (``out_channels`` is what R-CNN heads read)."""

    def __init__(self, width: int = 32) -> None:
        chans = [3, width, width, 2 * width, 2 * width]
        layers: list[nn.Module] = []
        for cin, cout in itertools.pairwise(chans):
            layers += [nn.Conv2d(cin, cout, 3, stride=2, padding=1), nn.ReLU(inplace=True)]
        super().__init__(*layers)
        self.out_channels = chans[-1]


def build_tiny_rcnn(
    *, num_classes: int, min_size: int, max_size: int, masks: bool, width: int = 32
) -> nn.Module:
    """A small Faster R-CNN (``masks=False``) or Mask R-CNN of torchvision's classes.

    ``num_classes`` counts the background. One feature level, 9 anchors per location,
    300/100 RPN proposals before/after NMS at test time.
    """
    backbone = TinyBackbone(width)
    c = backbone.out_channels
    common: dict[str, Any] = {
        "min_size": min_size,
        "max_size": max_size,
        "rpn_anchor_generator": AnchorGenerator(((32, 64, 128),), ((0.5, 1.0, 2.0),)),
        "box_roi_pool": MultiScaleRoIAlign(["0"], 7, 2),
        "box_head": TwoMLPHead(c * 49, 128),
        "box_predictor": FastRCNNPredictor(128, num_classes),
        "rpn_pre_nms_top_n_test": 300,
        "rpn_post_nms_top_n_test": 100,
    }
    if not masks:
        return tvd.FasterRCNN(backbone, num_classes=None, **common)
    return tvd.MaskRCNN(
        backbone,
        num_classes=None,
        mask_roi_pool=MultiScaleRoIAlign(["0"], 14, 2),
        mask_head=MaskRCNNHeads(c, (64, 64), 1),
        mask_predictor=MaskRCNNPredictor(64, 64, num_classes),
        **common,
    )


def _torchvision(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """A torchvision builder with no downloads (``weights=None, weights_backbone=None``)."""
    return partial(fn, weights=None, weights_backbone=None)


ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    "tiny_fasterrcnn": partial(build_tiny_rcnn, masks=False),
    "tiny_maskrcnn": partial(build_tiny_rcnn, masks=True),
    "fasterrcnn_resnet50_fpn": _torchvision(tvd.fasterrcnn_resnet50_fpn),
    "fasterrcnn_resnet50_fpn_v2": _torchvision(tvd.fasterrcnn_resnet50_fpn_v2),
    "fasterrcnn_mobilenet_v3_large_fpn": _torchvision(tvd.fasterrcnn_mobilenet_v3_large_fpn),
    "maskrcnn_resnet50_fpn": _torchvision(tvd.maskrcnn_resnet50_fpn),
    "maskrcnn_resnet50_fpn_v2": _torchvision(tvd.maskrcnn_resnet50_fpn_v2),
}


def build_detection_model(
    architecture: str,
    *,
    num_classes: int,
    min_size: int,
    max_size: int,
    model_kwargs: Mapping[str, Any] | None = None,
) -> nn.Module:
    """A randomly initialised ``architecture`` (``num_classes`` with the background), eval
    mode. Raises ``ValueError`` listing the known architectures for an unknown one."""
    try:
        builder = ARCHITECTURES[architecture]
    except KeyError:
        raise ValueError(
            f"unknown detector architecture {architecture!r}; known: {sorted(ARCHITECTURES)}"
        ) from None
    model = builder(
        num_classes=num_classes, min_size=min_size, max_size=max_size, **dict(model_kwargs or {})
    )
    return model.eval()


# --------------------------------------------------------------------------- checkpoints


class DetectorCheckpointError(ValueError):
    """A file that is not a loadable detector checkpoint."""


def file_digest(path: str, n: int = 12) -> str:
    """The first ``n`` hex digits of the file's SHA-256 (the checkpoint part of model ids)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:n]


def save_detector_checkpoint(
    model: nn.Module,
    path: str,
    *,
    architecture: str,
    class_names: Sequence[str],
    min_size: int,
    max_size: int,
    model_kwargs: Mapping[str, Any] | None = None,
) -> None:
    """Write ``{"model": state_dict, "config": {...}}`` (see the module docstring) atomically;
    every config value is a plain type, so it loads with ``weights_only=True``."""
    payload = {
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "config": {
            "architecture": architecture,
            "class_names": [str(c) for c in class_names],
            "min_size": int(min_size),
            "max_size": int(max_size),
            "model_kwargs": dict(model_kwargs or {}),
        },
    }
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".pt")
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load_detector_checkpoint(path: str) -> tuple[nn.Module, dict[str, Any]]:
    """The model (eval mode, CPU) and its ``config`` dict from a detector checkpoint.

    Raises:
        FileNotFoundError: no such file.
        DetectorCheckpointError: not loadable with ``weights_only=True``, no ``model`` /
            ``config``, an unknown architecture, or state-dict keys/shapes that do not match.
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"detector checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # zip / pickle / weights_only refusal: all mean "invalid"
        raise DetectorCheckpointError(
            f"{path} is not a valid detector checkpoint ({type(exc).__name__})"
        ) from exc
    if not isinstance(ckpt, Mapping) or not isinstance(ckpt.get("model"), Mapping):
        raise DetectorCheckpointError(f"{path}: expected {{'model': state_dict, 'config': ...}}")
    config = ckpt.get("config")
    if not isinstance(config, Mapping) or not config.get("class_names"):
        raise DetectorCheckpointError(f"{path}: 'config' with 'class_names' is missing")
    try:
        model = build_detection_model(
            str(config["architecture"]),
            num_classes=len(config["class_names"]) + 1,
            min_size=int(config["min_size"]),
            max_size=int(config["max_size"]),
            model_kwargs=config.get("model_kwargs"),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise DetectorCheckpointError(f"{path}: bad config: {exc}") from exc
    _check_keys(model.state_dict(), ckpt["model"], path)
    model.load_state_dict(ckpt["model"], strict=True)
    return model.eval(), dict(config)


def _check_keys(expected: Mapping[str, Any], state: Mapping[str, Any], path: str) -> None:
    """Raise naming the first few missing, unexpected and mis-shaped state-dict entries."""

    def first(names: list[str], n: int = 5) -> str:
        return ", ".join(names[:n]) + (f", ... ({len(names) - n} more)" if len(names) > n else "")

    missing = [k for k in expected if k not in state]
    unexpected = [str(k) for k in state if k not in expected]
    shapes = [
        f"{k}: {tuple(getattr(state[k], 'shape', ()))} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(getattr(state[k], "shape", ())) != tuple(v.shape)
    ]
    parts = [
        f"{len(items)} {what}: {first(items)}"
        for what, items in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("shape mismatches", shapes),
        )
        if items
    ]
    if parts:
        raise DetectorCheckpointError(
            f"{path} does not match its architecture: " + "; ".join(parts)
        )


# --------------------------------------------------------------------------- adapters


def _select(boxes: np.ndarray, scores: np.ndarray, threshold: float, cap: int) -> np.ndarray:
    """Rows with finite values scoring ``>= threshold``, best first, at most ``cap``."""
    ok = np.isfinite(scores) & np.isfinite(boxes).all(axis=1) & (scores >= threshold)
    rows = np.flatnonzero(ok)
    order = np.argsort(-scores[rows], kind="stable")
    return rows[order][:cap]


class TorchvisionDetector:
    """:class:`serve.models.Detector` for a torchvision R-CNN (see the module docstring).

    Args:
        model: a ``GeneralizedRCNN`` (its transform resizes and normalises; outputs are in
            original coordinates).
        classes: names of the ``C`` foreground classes (model labels ``1..C``).
        min_score / max_detections: the floor and cap of every request; each forward sets the
            RoI heads to its batch's lowest threshold and largest cap.
        mask_threshold: mask probability ``>=`` this is inside the mask (as the pipeline's
            detections).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        classes: Sequence[str],
        model_id: str,
        architecture: str,
        kind: str = "torchvision",
        checkpoint: str = "",
        untrained: bool = False,
        min_score: float = 0.05,
        max_detections: int = 100,
        mask_threshold: float = 0.5,
        device: str = "cpu",
    ) -> None:
        dev = resolve_device(device)
        self.model = model.to(dev).eval()
        heads: Any = self.model.roi_heads
        predictor = getattr(heads.box_predictor, "cls_score", None)
        if predictor is not None and predictor.out_features != len(classes) + 1:
            raise ValueError(
                f"the model has {predictor.out_features - 1} classes, {len(classes)} names given"
            )
        self.mask_threshold = float(mask_threshold)
        self.min_score = float(min_score)
        self.max_detections = int(max_detections)
        self._lock = threading.Lock()
        self.device = dev
        self.classes = tuple(classes)
        self.model_id = model_id
        self.card = ModelCard(
            role="detector",
            kind=kind,
            architecture=architecture,
            model_id=model_id,
            checkpoint=checkpoint,
            classes=self.classes,
            untrained=untrained,
            masks=bool(heads.has_mask()),
            device=str(dev),
            min_score=float(min_score),
            max_detections=int(max_detections),
        )

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
        tensors = [
            torch.from_numpy(np.ascontiguousarray(im)).to(self.device).permute(2, 0, 1).float()
            / 255.0
            for im in images
        ]
        # The RoI heads keep (and Mask R-CNN pastes masks for) only what some request of the
        # batch can return: the lowest threshold and the largest cap of the batch, within the
        # configured floor and cap. One forward at a time holds the heads' settings.
        heads: Any = self.model.roi_heads
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

    def __init__(
        self,
        checkpoint: str,
        cfg: ServeConfig,
    ) -> None:
        from serve.segmenter import Segmenter
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
        self.model_id = f"wsod-{meta['method']}:{file_digest(checkpoint)}"
        self.card = ModelCard(
            role="detector",
            kind="wsod",
            architecture=f"wsod-{meta['method']}",
            model_id=self.model_id,
            checkpoint=checkpoint,
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


def build_demo_detector(cfg: ServeConfig) -> Detector:
    """The untrained demo: ``detector.architecture`` with seeded random weights."""
    det = cfg.detector
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(det.seed)
        model = build_detection_model(
            det.architecture,
            num_classes=len(det.classes) + 1,
            min_size=det.min_size,
            max_size=det.max_size,
        )
    log.warning("detector: no trained checkpoint configured; serving an UNTRAINED demo model")
    return TorchvisionDetector(
        model,
        classes=det.classes,
        model_id=f"demo-{det.architecture}:seed{det.seed}",
        architecture=det.architecture,
        kind="demo",
        untrained=True,
        min_score=det.min_score,
        max_detections=det.max_detections,
        mask_threshold=det.mask_threshold,
        device=det.device,
    )


def load_torchvision_detector(cfg: ServeConfig) -> Detector:
    """A torchvision R-CNN from ``detector.checkpoint`` (see :func:`load_detector_checkpoint`)."""
    det = cfg.detector
    model, config = load_detector_checkpoint(det.checkpoint)
    return TorchvisionDetector(
        model,
        classes=[str(c) for c in config["class_names"]],
        model_id=f"{config['architecture']}:{file_digest(det.checkpoint)}",
        architecture=str(config["architecture"]),
        checkpoint=det.checkpoint,
        min_score=det.min_score,
        max_detections=det.max_detections,
        mask_threshold=det.mask_threshold,
        device=det.device,
    )


def load_retrain_detector(cfg: ServeConfig) -> Detector:
    """The pipeline's own detector: a ``retrain`` (Faster R-CNN) or ``wsis`` (Mask R-CNN)
    ``model.pt``, loaded by :func:`weaksam.detection.inference.load_detector` (weights-only,
    strict keys, the stage's test size)."""
    from weaksam.detection.inference import load_detector as load_pipeline_detector

    det = cfg.detector
    model, meta = load_pipeline_detector(det.checkpoint)
    kind = "maskrcnn" if meta["masks"] else "fasterrcnn"
    architecture = f"{kind}_{meta['model_config'].get('backbone', 'unknown')}"
    return TorchvisionDetector(
        model,
        classes=[str(c) for c in meta["class_names"]],
        model_id=f"{architecture}-{meta.get('variant', '')}:{file_digest(det.checkpoint)}",
        architecture=architecture,
        kind="retrain",
        checkpoint=det.checkpoint,
        min_score=det.min_score,
        max_detections=det.max_detections,
        mask_threshold=det.mask_threshold,
        device=det.device,
    )


def load_wsod_detector(cfg: ServeConfig) -> Detector:
    return WSODDetector(cfg.detector.checkpoint, cfg)


DETECTOR_LOADERS: dict[str, Callable[[ServeConfig], Detector]] = {
    "demo": build_demo_detector,
    "torchvision": load_torchvision_detector,
    "retrain": load_retrain_detector,
    "wsod": load_wsod_detector,
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
