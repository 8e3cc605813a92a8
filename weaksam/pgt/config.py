"""Settings of the ``pgt`` stage: the rule, the SAM box-prompt mask job, the COCO export."""

from __future__ import annotations

from dataclasses import dataclass, field

from weaksam.configlib import (
    check_at_least,
    check_choice,
    check_fraction,
    check_gpu_policy,
    check_gpus,
)
from weaksam.pgt.coco import BBOX_SOURCES
from weaksam.pgt.rules import MODES, NORMALIZATIONS, PGTConfig
from weaksam.sam.engine import EngineConfig


@dataclass(frozen=True)
class PGTMaskJobConfig:
    """The Ray Data job that prompts SAM with each PGT box (like the proposals job).

    Attributes:
        num_actors / cpus_per_actor / gpus_per_actor: the SAM actor pool (GPUs when used).
        max_actors: the pool's maximum (0: grow with the cluster on GPUs, fixed on CPU), as
            in :class:`weaksam.proposals.config.ProposalsConfig`.
        use_gpu: ``auto``, ``true`` or ``false`` (:mod:`weaksam.train.placement`).
        batch_size: images per ``map_batches`` call. decode_cpus: CPUs of each decode task.
        rows_per_file: row cap per Parquet shard. max_pixels: larger images are error rows.
        engine: SAM settings; ``engine.box_mask`` picks the mask of each box (``single``:
            SAM's ``multimask_output=False``, the default; ``best_iou``: the multimask output
            with the highest predicted IoU; ``token``: a fixed multimask output).
    """

    num_actors: int = 1
    max_actors: int = 0
    cpus_per_actor: float = 1.0
    gpus_per_actor: float = 1.0
    use_gpu: str = "auto"
    batch_size: int = 4
    decode_cpus: float = 0.25
    rows_per_file: int = 500
    max_pixels: int = 64_000_000
    engine: EngineConfig = field(default_factory=EngineConfig)

    def __post_init__(self) -> None:
        check_at_least(self, 1, "num_actors", "batch_size", "rows_per_file", "max_pixels")
        check_at_least(self, 0, "cpus_per_actor", "decode_cpus", "max_actors")
        check_gpus(self, "gpus_per_actor")
        check_gpu_policy(self, "use_gpu")


@dataclass(frozen=True)
class PGTStageConfig:
    """The ``pgt`` section.

    Attributes:
        mode: ``adaptive`` (WeakSAM's ``pgt`` rule, without its bugs) or ``top1``.
        t_keep / t_con: the adaptive rule's thresholds (0.5, 0.85).
        normalization: the adaptive rule's per-class score normalisation: ``reference``
            (``s / (max - min)``, the reference code's, method §4.1; the default) or ``minmax``
            (``(s - min) / (max - min)``, this project's first rule; docs/benchmarks.md
            compares the two on the RoI-drop tuning pool: the same PGT there).
        masks: prompt SAM with each PGT box for masks (needed by the ``wsis`` stage).
        bbox_source: the COCO json's ``bbox``: ``pgt`` (the PGT box) or ``mask`` (the mask's
            tight box). The ``pgt`` table always keeps the PGT boxes.
        mask_job: the SAM job.
    """

    mode: str = "adaptive"
    t_keep: float = 0.5
    t_con: float = 0.85
    normalization: str = "reference"
    masks: bool = True
    bbox_source: str = "pgt"
    mask_job: PGTMaskJobConfig = field(default_factory=PGTMaskJobConfig)

    def __post_init__(self) -> None:
        check_choice(self, "mode", MODES, "PGT mode")
        check_fraction(self, "t_keep", "t_con")
        check_choice(self, "normalization", NORMALIZATIONS, "PGT score normalization")
        check_choice(self, "bbox_source", BBOX_SOURCES, "bbox source")

    @property
    def rule(self) -> PGTConfig:
        return PGTConfig(self.mode, self.t_keep, self.t_con, self.normalization)
