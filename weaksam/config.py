"""The pipeline's configuration: one frozen dataclass section per stage.

Loaded from YAML by one strict loader (:mod:`weaksam.configlib`): a file may name a ``base``
file it overrides; command-line overrides ``--set a.b=value`` come last (values parsed as YAML,
``--set synth.num_train=20``, ``--set data.splits=[train,test]``); unknown keys raise
:class:`ConfigError` naming the key and the file. The resolved config is written next to the
outputs as ``runs/<name>/config.resolved.yaml``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from weaksam import storage
from weaksam.cam.config import ClassifierConfig, PeakStageConfig
from weaksam.configlib import (
    ConfigError,
    FieldError,
    check_at_least,
    check_at_most,
    check_choice,
    check_fraction,
    check_nonempty,
    check_order,
    check_positive,
    check_range,
    config_hash,
    dump_yaml,
    from_dict,
    given_keys,
    load_into,
    register_check,
    to_dict,
)
from weaksam.detection.config import RetrainConfig, WSISConfig
from weaksam.eval.summary import METRICS
from weaksam.pgt.config import PGTStageConfig
from weaksam.proposals.config import ProposalsConfig
from weaksam.runs import resolved_config_path
from weaksam.sam.build import SamConfig
from weaksam.sam.training import SamTrainConfig
from weaksam.wsod.config import WSODConfig

__all__ = [
    "DATA_FORMATS",
    "ClassifierConfig",
    "Config",
    "ConfigError",
    "DataConfig",
    "EvalConfig",
    "PGTStageConfig",
    "PeakStageConfig",
    "ProposalsConfig",
    "RetrainConfig",
    "SamConfig",
    "SamTrainConfig",
    "SynthConfig",
    "WSISConfig",
    "WSODConfig",
    "config_hash",
    "dump_yaml",
    "from_dict",
    "is_safe_name",
    "load_config",
    "load_run_config",
    "save_resolved",
    "to_dict",
]


@dataclass(frozen=True)
class SynthConfig:
    """The synthetic ``shapes`` benchmark (and the class-agnostic ``blobs`` set).

    Attributes:
        image_size: square image side in pixels.
        num_train / num_test: images per split.
        min_instances / max_instances: objects of the benchmark's classes per image.
        min_scale / max_scale: object size as a fraction of the image side.
        num_distractors: maximum non-class blobs per image.
        occlusion: allow objects to overlap (later objects drawn on top).
        seed: everything is deterministic given the seed.
        export_voc: also write VOC-style Annotations/ImageSets next to the COCO json.
    """

    image_size: int = 256
    num_train: int = 120
    num_test: int = 60
    min_instances: int = 1
    max_instances: int = 5
    min_scale: float = 0.12
    max_scale: float = 0.45
    num_distractors: int = 3
    occlusion: bool = True
    seed: int = 0
    export_voc: bool = True

    def __post_init__(self) -> None:
        check_at_least(self, 16, "image_size")  # the renderer's minimum
        check_at_least(self, 1, "num_train", "num_test", "min_instances")
        check_order(self, "min_instances", "max_instances")
        check_at_least(self, 0, "num_distractors")
        check_range(self, 0.0, 1.0, "min_scale", "max_scale", low_open=True)
        check_order(self, "min_scale", "max_scale")


DATA_FORMATS: tuple[str, ...] = ("synthetic", "coco", "voc", "folder")


@dataclass(frozen=True)
class DataConfig:
    """Where the images and image-level labels come from.

    Attributes:
        format: ``synthetic`` (made by ``synth_data``), ``coco``, ``voc`` or ``folder``.
        root: dataset root (image folder for coco/folder, VOCdevkit/VOCxxxx for voc). For
            ``synthetic`` the data is written to ``<run>/data`` and ``root`` is ignored.
        annotations: per split, a COCO json (coco) or a labels CSV (folder); ``{split}`` in
            the string is replaced by the split name.
        image_labels: optional explicit image-level labels json for coco (``{file: [names]}``).
        splits: the splits to ingest; the first is the training split.
        classes_file: class names, one per line (VOC defaults to the 20 VOC classes).
        max_pixels: images with more pixels are reported as error rows.
        decode_on: where ingest probes (fully decodes) the images: ``ray`` (Ray tasks of
            ``decode_chunk`` images, spread over the cluster), ``driver`` (threads on the
            driver), or ``auto``: Ray tasks when connected to a cluster (``RAY_ADDRESS``),
            the driver otherwise. The manifest is the same either way.
    """

    format: str = "synthetic"
    root: str = ""
    annotations: str = ""
    image_labels: str = ""
    splits: tuple[str, ...] = ("train", "test")
    classes_file: str = ""
    max_pixels: int = 64_000_000
    decode_on: str = "auto"
    decode_chunk: int = 64

    def __post_init__(self) -> None:
        check_choice(self, "format", DATA_FORMATS, "data format")
        check_choice(self, "decode_on", ("auto", "ray", "driver"), "decode_on")
        check_nonempty(self, "splits")
        check_at_least(self, 1, "max_pixels", "decode_chunk")


@dataclass(frozen=True)
class EvalConfig:
    """Metrics computed by ``evaluate`` (see :mod:`weaksam.eval`)."""

    metrics: tuple[str, ...] = ("voc07", "voc", "corloc", "coco")
    iou_threshold: float = 0.5

    def __post_init__(self) -> None:
        check_choice(self, "metrics", METRICS, "metric")
        check_fraction(self, "iou_threshold")


def _check_sam_train(cfg: SamTrainConfig) -> None:
    """The rules of :class:`SamTrainConfig` (kept here while ``weaksam/sam/training.py``
    has no ``__post_init__``; the loader runs them through :func:`register_check`)."""
    check_at_least(
        cfg,
        1,
        "steps",
        "images_per_step",
        "prompts_per_image",
        "checkpoint_every",
        "val_images",  # the validation mIoU averages over them
        "threads",
        "log_every",
    )
    check_at_least(cfg, 16, "image_size")  # the blobs renderer's canvas
    check_at_least(cfg, 0, "min_mask_area", "warmup_steps", "loss_size")  # loss_size 0: input
    check_fraction(cfg, "p_point", "p_box")
    if cfg.p_point + cfg.p_box > 1:
        raise FieldError(
            ("p_point", "p_box"),
            "{p_point} + {p_box} must be <= 1 (probabilities), got {value}",
            cfg.p_point + cfg.p_box,
        )
    check_at_least(cfg, 0, "box_jitter", "weight_decay", "focal_weight")
    check_positive(cfg, "lr", "grad_clip")  # gradients are always clipped to grad_clip
    check_at_most(cfg, 1.0, "focal_alpha")  # < 0: no class weighting


register_check(SamTrainConfig, _check_sam_train)


@dataclass(frozen=True)
class Config:
    """The whole pipeline's config; one section per stage.

    Attributes:
        name: run name; outputs go to ``<run_root>/<name>/``.
        run_root: the folder holding runs: a local path, ``file://...`` or
            ``s3://bucket/prefix`` (see :mod:`weaksam.storage`).
        seed: global seed.
        upstream: another run's folder (a local path, relative to the working directory as
            ``run_root`` is, or ``file://``) whose finished stages this run reuses when their
            keys equal this run's: ``<run>/<stage>`` becomes a link to the upstream's folder,
            which is never written to (:mod:`weaksam.pipeline.upstream`). ``""``: none. Needs
            local storage for both runs.
    """

    name: str = "demo"
    run_root: str = "runs"
    seed: int = 0
    upstream: str = ""
    synth: SynthConfig = field(default_factory=SynthConfig)
    data: DataConfig = field(default_factory=DataConfig)
    evaluate: EvalConfig = field(default_factory=EvalConfig)
    sam: SamConfig = field(default_factory=SamConfig)
    sam_train: SamTrainConfig = field(default_factory=SamTrainConfig)
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    peaks: PeakStageConfig = field(default_factory=PeakStageConfig)
    proposals: ProposalsConfig = field(default_factory=ProposalsConfig)
    wsod: WSODConfig = field(default_factory=WSODConfig)
    pgt: PGTStageConfig = field(default_factory=PGTStageConfig)
    retrain: RetrainConfig = field(default_factory=RetrainConfig)
    wsis: WSISConfig = field(default_factory=WSISConfig)

    def __post_init__(self) -> None:
        if not is_safe_name(self.name):
            raise ValueError(
                f"name must be one folder name (letters, digits, '.', '_', '-'; not '.' or "
                f"'..'), got {self.name!r}"
            )
        if not self.run_root:
            raise ValueError("run_root must not be empty")
        storage.check_location(self.run_root, "run_root")
        if self.upstream:
            storage.check_location(self.upstream, "upstream")
            if storage.is_remote(self.upstream) or storage.is_remote(self.run_root):
                raise ValueError(
                    f"upstream: reusing {self.upstream!r} links stage folders, which needs "
                    f"local storage; upstream and run_root ({self.run_root!r}) must be local "
                    "paths or file:// (an object store has no links)"
                )

    @property
    def run_dir(self) -> str:
        """``<run_root>/<name>``, absolute for a local ``run_root`` (Ray workers run in other
        working directories, so relative paths must not reach them)."""
        if storage.is_uri(self.run_root):
            return storage.join(self.run_root, self.name)
        return os.path.join(os.path.abspath(self.run_root), self.name)

    @property
    def upstream_dir(self) -> str:
        """The absolute folder of ``upstream`` (``""`` when unset)."""
        return storage.resolve(self.upstream)[1] if self.upstream else ""


_SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")


def is_safe_name(name: str) -> bool:
    """True for a single, portable path component: no separator, not ``.``/``..``, not
    hidden, at most 128 characters (a run name becomes ``<run_root>/<name>``)."""
    return len(name) <= 128 and _SAFE_NAME.fullmatch(name) is not None and name != ".."


def load_config(path: str | None = None, overrides: Sequence[str] = ()) -> Config:
    """Load the pipeline :class:`Config` from ``path`` (defaults when None) plus overrides."""
    return load_into(Config, path, overrides)


def load_run_config(path: str | None, overrides: Sequence[str] = ()) -> Config:
    """The config of a command that writes into a run folder.

    As :func:`load_config`, but the run's ``name`` must be given, by the file (or a file it
    names as ``base``) or by ``--set name=...``: a missing ``--config`` or an empty file must
    not silently become the default run and overwrite it. Raises :class:`ConfigError`.
    """
    cfg = load_config(path, overrides)
    if "name" not in given_keys(path, overrides):
        where = path or "no --config given"
        raise ConfigError(f"name: the run needs a name (in {where}); add `name: <run>`")
    return cfg


def save_resolved(cfg: Config, run_dir: str | None = None) -> str:
    """Write ``config.resolved.yaml`` into the run folder; return its path."""
    out_dir = run_dir or cfg.run_dir
    storage.makedirs(out_dir)
    out = resolved_config_path(out_dir)
    storage.write_text(out, dump_yaml(cfg))
    return out
