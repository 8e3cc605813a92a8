"""The service's configuration: one frozen :class:`ServeConfig`, loaded by the project's strict
YAML loader (:func:`weaksam.configlib.load_into`; unknown keys raise ``ConfigError``).

``configs/serve_app.yaml`` is the file the service reads by default; ``configs/serve.yaml`` is the
Ray Serve config (``serve run`` / ``serve deploy``) that names it in ``args``. By default the
service serves the trained detector of the demo run (``runs/demo``, what ``make demo`` writes)
and the committed demo SAM; :func:`detector_checkpoint` says which file that is, or why there
is none. Relative model paths in the config are relative to the project root.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from weaksam import storage
from weaksam.configlib import load_into
from weaksam.data.synth.shapes import SHAPE_CLASSES
from weaksam.detection.config import DetectorModelConfig
from weaksam.runs import model_path
from weaksam.sam.build import BUILTIN, SamConfig, resolve_checkpoint
from weaksam.sam.engine import EngineConfig

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = "configs/serve_app.yaml"
DEFAULT_RUN = "runs/demo"
DETECTOR_KINDS = ("run", "retrain", "wsod", "untrained")
# A run's detector: the Mask R-CNN of the wsis stage when it exists, else retrain's Faster R-CNN.
RUN_STAGES = ("wsis", "retrain")


@dataclass(frozen=True)
class AutoscalingConfig:
    """Ray Serve autoscaling of one deployment (replaces ``num_replicas`` when enabled).

    Attributes:
        enabled: scale between ``min_replicas`` and ``max_replicas``.
        target_ongoing_requests: requests per replica the autoscaler aims at.
    """

    enabled: bool = False
    min_replicas: int = 1
    max_replicas: int = 2
    target_ongoing_requests: float = 2.0

    def __post_init__(self) -> None:
        if self.min_replicas < 0 or self.max_replicas < max(1, self.min_replicas):
            raise ValueError("autoscaling needs 0 <= min_replicas <= max_replicas, max >= 1")
        if self.target_ongoing_requests <= 0:
            raise ValueError("target_ongoing_requests must be > 0")


@dataclass(frozen=True)
class DeploymentConfig:
    """Replicas and resources of one Ray Serve deployment.

    Attributes:
        num_replicas: fixed replica count (ignored when autoscaling is enabled).
        num_cpus / num_gpus: Ray resources reserved per replica (fractions allowed).
        max_ongoing_requests: requests a replica accepts at once; more wait in the router.
    """

    num_replicas: int = 1
    num_cpus: float = 0.5
    num_gpus: float = 0.0
    max_ongoing_requests: int = 16
    autoscaling: AutoscalingConfig = field(default_factory=AutoscalingConfig)

    def __post_init__(self) -> None:
        if self.num_replicas < 1 or self.max_ongoing_requests < 1:
            raise ValueError("num_replicas and max_ongoing_requests must be >= 1")
        if self.num_cpus < 0 or self.num_gpus < 0:
            raise ValueError("num_cpus and num_gpus must be >= 0")


@dataclass(frozen=True)
class BatchConfig:
    """``@serve.batch`` of the detector: images per forward pass and the wait to fill one."""

    max_batch_size: int = 4
    batch_wait_timeout_s: float = 0.01

    def __post_init__(self) -> None:
        if self.max_batch_size < 1 or self.batch_wait_timeout_s < 0:
            raise ValueError("max_batch_size must be >= 1 and batch_wait_timeout_s >= 0")


@dataclass(frozen=True)
class UntrainedModelConfig(DetectorModelConfig):
    """The architecture of the ``untrained`` detector: a small FPN Mask R-CNN for CPUs (a
    :class:`~weaksam.detection.config.DetectorModelConfig` with these defaults, so a partial
    YAML section starts from them rather than from ResNet-50)."""

    backbone: str = "small_fpn"
    width: int = 16
    fpn_channels: int = 32
    min_size: tuple[int, ...] = (256,)
    max_size: int = 256
    test_size: int = 256
    rpn_pre_nms_test: int = 300
    rpn_post_nms_test: int = 100
    box_head_dim: int = 128
    mask_head_channels: int = 32
    mask_head_layers: int = 2


@dataclass(frozen=True)
class DetectorConfig:
    """The detector behind ``/v1/detect`` (and the class names of ``/v1/proposals``).

    Every detector is built and loaded by :mod:`weaksam.detection` (or :mod:`weaksam.wsod`):
    the ``model.pt`` the pipeline exports, ``weights_only=True``, strict keys.

    Attributes:
        kind: ``run`` (the trained detector of the pipeline run ``run``: its ``wsis`` Mask
            R-CNN, else its ``retrain`` Faster R-CNN), ``retrain`` (a ``model.pt`` of the
            ``retrain``/``wsis`` stages at ``checkpoint``), ``wsod`` (a WSOD ``model.pt`` at
            ``checkpoint``, run on SAM proposals from ``segmenter``) or ``untrained`` (random
            weights from ``seed``; served only when asked for by this name).
        run: the run folder of kind ``run`` (relative: to the project root).
        checkpoint: the ``model.pt`` of kinds ``retrain`` and ``wsod`` (relative: to the
            project root); must be empty for the others.
        model / classes / masks / seed: the ``untrained`` model (checkpoints carry their own).
        min_score: model-level score floor; requests choose a threshold at or above it.
        max_detections: detections per image the model keeps; the most a request may ask for.
        mask_threshold: mask probability at or above which a pixel is in an instance mask.
        device: ``auto`` (CUDA when the replica has one), ``cpu`` or ``cuda``.
        wsod_scales / wsod_flip / wsod_max_side: test-time passes of a ``wsod`` detector.
    """

    kind: str = "run"
    run: str = DEFAULT_RUN
    checkpoint: str = ""
    model: UntrainedModelConfig = field(default_factory=UntrainedModelConfig)
    classes: tuple[str, ...] = SHAPE_CLASSES
    masks: bool = True
    seed: int = 0
    min_score: float = 0.05
    max_detections: int = 100
    mask_threshold: float = 0.5
    device: str = "auto"
    wsod_scales: tuple[int, ...] = (480,)
    wsod_flip: bool = False
    wsod_max_side: int = 1000
    batching: BatchConfig = field(default_factory=BatchConfig)
    deployment: DeploymentConfig = field(default_factory=DeploymentConfig)

    def __post_init__(self) -> None:
        if self.kind not in DETECTOR_KINDS:
            raise ValueError(f"unknown detector kind {self.kind!r}; known: {list(DETECTOR_KINDS)}")
        if self.kind in ("retrain", "wsod") and not self.checkpoint:
            raise ValueError(f"detector kind {self.kind!r} needs a checkpoint")
        if self.kind in ("run", "untrained") and self.checkpoint:
            raise ValueError(
                f"detector kind {self.kind!r} takes no checkpoint (kind 'retrain' or 'wsod' do)"
            )
        if self.kind == "run" and not self.run:
            raise ValueError("detector kind 'run' needs a run folder (detector.run)")
        if not self.classes:
            raise ValueError("detector.classes must name at least one class")
        if not 0.0 <= self.min_score <= 1.0 or self.max_detections < 1:
            raise ValueError("min_score must be in [0, 1] and max_detections >= 1")


@dataclass(frozen=True)
class ServeSamConfig:
    """:class:`weaksam.sam.build.SamConfig`'s fields with the service's defaults (the demo SAM);
    a relative ``checkpoint`` path is relative to the project root.

    (A section given in YAML starts from its class's defaults, so the service keeps its own
    class rather than a ``SamConfig`` whose default is ``vit_h``.)
    """

    model_type: str = "demo"
    checkpoint: str = "builtin"
    device: str = "auto"
    autocast_dtype: str = "none"

    def __post_init__(self) -> None:
        self.to_sam_config()  # validates

    def to_sam_config(self) -> SamConfig:
        """The library's config; a relative checkpoint path is made relative to the project
        root (``builtin`` and ``""`` stay as they are)."""
        named = self.checkpoint in ("", BUILTIN)
        return SamConfig(
            model_type=self.model_type,
            checkpoint=self.checkpoint if named else project_path(self.checkpoint),
            device=self.device,
            autocast_dtype=self.autocast_dtype,
        )


@dataclass(frozen=True)
class SegmenterConfig:
    """The SAM behind ``/v1/segment`` and ``/v1/proposals``.

    Attributes:
        sam: which SAM; ``checkpoint: builtin`` is the committed demo SAM (trained on
            class-agnostic blobs). ``checkpoint: ""`` asks for random weights from ``seed``,
            reported ``untrained`` by ``/v1/models``.
        engine: prompting settings (``points_per_side`` is the proposal grid; WeakSAM's 32 by
            default, 16 in ``configs/serve_app.yaml`` for CPUs).
    """

    sam: ServeSamConfig = field(default_factory=ServeSamConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    seed: int = 0
    deployment: DeploymentConfig = field(default_factory=DeploymentConfig)


@dataclass(frozen=True)
class LimitsConfig:
    """Request limits; anything above them is a 4xx before a model sees it.

    Attributes:
        max_upload_bytes: encoded image size (the body may carry this plus base64/multipart
            overhead).
        max_pixels: decoded ``H*W``, checked from the image header before decoding.
        max_points / max_boxes: prompts per ``/v1/segment`` request.
        max_proposal_points: point prompts per ``/v1/proposals`` request.
        max_aspect_ratio: longer over shorter side (extreme strips resize to zero pixels).
    """

    max_upload_bytes: int = 8 * 2**20
    max_pixels: int = 16_777_216
    max_aspect_ratio: float = 32.0
    max_points: int = 64
    max_boxes: int = 64
    max_proposal_points: int = 256

    def __post_init__(self) -> None:
        if min(self.max_upload_bytes, self.max_pixels) < 1:
            raise ValueError("max_upload_bytes and max_pixels must be >= 1")
        if min(self.max_points, self.max_boxes, self.max_proposal_points) < 0:
            raise ValueError("prompt limits must be >= 0")
        if self.max_aspect_ratio < 1:
            raise ValueError("max_aspect_ratio must be >= 1")

    @property
    def max_body_bytes(self) -> int:
        """Largest accepted request body: base64 of the image plus 64 KiB for the rest."""
        return (self.max_upload_bytes + 2) // 3 * 4 + 64 * 2**10


@dataclass(frozen=True)
class AuthConfig:
    """``api_key_env``: name of the environment variable holding the bearer token that every
    endpoint but ``/healthz`` and ``/readyz`` requires; empty = no authentication."""

    api_key_env: str = ""


@dataclass(frozen=True)
class ServeConfig:
    """The whole service.

    Attributes:
        app_name / route_prefix: the Ray Serve application.
        host / port: where ``python -m serve`` binds the HTTP proxy (loopback by default).
        torch_threads: intra-op threads per model replica.
    """

    app_name: str = "weaksam"
    route_prefix: str = "/"
    host: str = "127.0.0.1"
    port: int = 8000
    torch_threads: int = 1
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    ingress: DeploymentConfig = field(default_factory=DeploymentConfig)
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    segmenter: SegmenterConfig = field(default_factory=SegmenterConfig)

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in 0..65535, got {self.port}")
        if self.torch_threads < 1:
            raise ValueError("torch_threads must be >= 1")


def resolve_path(path: str) -> str:
    """``path`` as given when it exists (or is absolute), else relative to the project root
    (so ``serve deploy`` finds ``configs/...`` whatever the working directory)."""
    if os.path.isabs(path) or os.path.exists(path):
        return path
    candidate = PROJECT_ROOT / path
    return str(candidate) if candidate.exists() else path


def project_path(path: str) -> str:
    """``path`` when absolute or a URI (``file://``, ``s3://``), else relative to the project
    root (a model path in the config names the same file whatever the working directory)."""
    return path if storage.is_uri(path) or os.path.isabs(path) else str(PROJECT_ROOT / path)


def detector_checkpoint(det: DetectorConfig) -> str:
    """The file the detector of ``det`` loads (``""`` for ``untrained``): a local path or a
    location of :mod:`weaksam.storage` (a run or checkpoint at ``file://`` or ``s3://``; the
    loaders read it through ``storage.open_input``).

    Raises:
        FileNotFoundError: with a one-line message saying what to do, when kind ``run`` finds
            no trained detector in its run, or the ``checkpoint`` does not exist.
    """
    if det.kind == "untrained":
        return ""
    if det.kind == "run":
        run = project_path(det.run)
        for stage in RUN_STAGES:
            path = model_path(run, stage)
            if storage.is_file(path):
                return path
        raise FileNotFoundError(
            f"no trained detector in {run} (neither wsis/model.pt nor retrain/model.pt): run "
            "`make demo` first, or name a run (--run runs/<name>) or a checkpoint "
            "(--set detector.kind=retrain --set detector.checkpoint=PATH), or ask for the "
            "untrained model (--set detector.kind=untrained)"
        )
    path = project_path(det.checkpoint)
    if not storage.is_file(path):
        raise FileNotFoundError(f"detector checkpoint not found: {path}")
    return path


def check_model_files(cfg: ServeConfig) -> None:
    """Raise ``FileNotFoundError`` with a one-line message when a model file the service
    would load is missing (run before starting anything)."""
    detector_checkpoint(cfg.detector)
    sam = cfg.segmenter.sam.to_sam_config()
    if sam.checkpoint and not storage.is_file(resolve_checkpoint(sam)):
        raise FileNotFoundError(f"SAM checkpoint not found: {resolve_checkpoint(sam)}")


def load_serve_config(path: str | None = None, overrides: Sequence[str] = ()) -> ServeConfig:
    """Load :class:`ServeConfig` from ``path`` (defaults when None) plus ``a.b=value``
    overrides; raises ``weaksam.configlib.ConfigError`` naming a bad key and its file."""
    return load_into(ServeConfig, resolve_path(path) if path else None, overrides)
