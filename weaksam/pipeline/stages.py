"""The pipeline's stages, in order. Each ``run_*`` reads earlier stages' outputs from the run
directory and writes its own; the entry points in ``ray_jobs/`` call the same functions."""

from __future__ import annotations

import logging
import os
from typing import Any

from weaksam.baselines import class_prior, window_prior_detections
from weaksam.cam.stage import run_classify, run_peaks
from weaksam.config import Config
from weaksam.data.ingest import ingest_splits, summarize_rows
from weaksam.data.synth import generate_shapes_dataset
from weaksam.detection.stage import RETRAIN_STAGE, WSIS_STAGE
from weaksam.eval import evaluate, format_report, load_manifest_gt, to_jsonable
from weaksam.eval.formats import load_detections_table
from weaksam.io.tables import read_classes, read_table, write_table
from weaksam.pgt.stage import PGT_STAGE
from weaksam.pipeline.core import Stage, StageContext
from weaksam.proposals.stage import run_proposals
from weaksam.wsod.stage import WSOD_STAGE

log = logging.getLogger(__name__)

MANIFEST = "ingest/manifest.parquet"


def manifest_path(run_dir: str) -> str:
    return os.path.join(run_dir, MANIFEST)


def run_data(cfg: Config, ctx: StageContext) -> dict[str, Any]:
    """Generate the synthetic dataset into ``<run>/data`` (synthetic configs only)."""
    return generate_shapes_dataset(cfg.synth, ctx.out_dir, progress=False)


def run_ingest(cfg: Config, ctx: StageContext) -> dict[str, Any]:
    """Images + image-level labels → ``<run>/ingest/manifest.parquet``."""
    data_root = os.path.join(ctx.run_dir, "data") if cfg.data.format == "synthetic" else None
    rows, classes = ingest_splits(cfg.data, data_root)
    write_table(rows, manifest_path(ctx.run_dir), "manifest", classes)
    return summarize_rows(rows, classes)


def _split_rows(run_dir: str, split: str) -> list[dict[str, Any]]:
    tbl = read_table(manifest_path(run_dir), "manifest")
    return [r for r in tbl.to_pylist() if r["split"] == split]


def run_baseline(cfg: Config, ctx: StageContext) -> dict[str, Any]:
    """The window-prior baseline on the test split (class prior) and train split (labels)."""
    classes = read_classes(manifest_path(ctx.run_dir))
    train_split, test_split = cfg.data.splits[0], cfg.data.splits[-1]
    train = _split_rows(ctx.run_dir, train_split)
    prior = class_prior(train, classes.num_classes)
    for split, use_labels in ((test_split, False), (train_split, True)):
        rows = window_prior_detections(_split_rows(ctx.run_dir, split), prior, use_labels)
        write_table(
            rows, os.path.join(ctx.out_dir, f"detections_{split}.parquet"), "detections", classes
        )
    return {"class_prior": dict(zip(classes.names, prior.tolist(), strict=True))}


def evaluate_split(
    run_dir: str, detections: str, split: str, metrics: tuple[str, ...]
) -> dict[str, Any]:
    """Evaluate a detections table against the manifest's ground truth of ``split``."""
    gt = load_manifest_gt(manifest_path(run_dir), split=split)
    dets = load_detections_table(detections)
    return evaluate(gt.records, dets.records, metrics, gt.classes)


def run_evaluate(cfg: Config, ctx: StageContext) -> dict[str, Any]:
    """Metrics of every detector that ran: test-split AP (and COCO), train-split CorLoc."""
    train_split, test_split = cfg.data.splits[0], cfg.data.splits[-1]
    test_metrics = tuple(m for m in cfg.evaluate.metrics if m != "corloc")
    out: dict[str, Any] = {}
    base = os.path.join(ctx.run_dir, "baseline")
    res = evaluate_split(
        ctx.run_dir,
        os.path.join(base, f"detections_{test_split}.parquet"),
        test_split,
        test_metrics,
    )
    if "corloc" in cfg.evaluate.metrics:
        res.update(
            evaluate_split(
                ctx.run_dir,
                os.path.join(base, f"detections_{train_split}.parquet"),
                train_split,
                ("corloc",),
            )
        )
    log.debug("window-prior baseline:\n%s", format_report(res))
    out["baseline"] = to_jsonable(res)
    return out


def _synthetic(cfg: Config) -> bool:
    return cfg.data.format == "synthetic"


STAGES: tuple[Stage, ...] = (
    Stage("data", run_data, sections=("synth",), enabled=_synthetic),
    Stage("ingest", run_ingest, sections=("data",), deps=("data",)),
    Stage("classify", run_classify, sections=("classifier",), deps=("ingest",)),
    Stage("peaks", run_peaks, sections=("peaks",), deps=("classify",)),
    Stage("proposals", run_proposals, sections=("sam", "proposals"), deps=("ingest", "peaks")),
    WSOD_STAGE,
    PGT_STAGE,
    RETRAIN_STAGE,
    WSIS_STAGE,
    Stage("baseline", run_baseline, sections=(), deps=("ingest",)),
    Stage("evaluate", run_evaluate, sections=("evaluate",), deps=("baseline", "ingest")),
)
