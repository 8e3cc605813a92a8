"""The pipeline's stages, in order. Each stage package declares its own :class:`Stage`
(:mod:`weaksam.stage`); this tuple only orders them."""

from __future__ import annotations

from weaksam.cam.stage import CLASSIFY_STAGE, PEAKS_STAGE
from weaksam.data.stage import DATA_STAGE, INGEST_STAGE
from weaksam.detection.stage import RETRAIN_STAGE, WSIS_STAGE
from weaksam.eval.stage import BASELINE_STAGE, EVALUATE_STAGE
from weaksam.pgt.stage import PGT_STAGE
from weaksam.proposals.stage import PROPOSALS_STAGE
from weaksam.stage import Stage
from weaksam.wsod.stage import WSOD_STAGE

STAGES: tuple[Stage, ...] = (
    DATA_STAGE,
    INGEST_STAGE,
    CLASSIFY_STAGE,
    PEAKS_STAGE,
    PROPOSALS_STAGE,
    WSOD_STAGE,
    PGT_STAGE,
    RETRAIN_STAGE,
    WSIS_STAGE,
    BASELINE_STAGE,
    EVALUATE_STAGE,
)

STAGE_NAMES: tuple[str, ...] = tuple(s.name for s in STAGES)
