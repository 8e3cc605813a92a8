"""The ``pgt`` step: rule → (SAM masks) → ``pgt.parquet`` + ``pgt_coco.json`` (+ quality).

:func:`make_pgt_outputs` is shared by the pipeline stage (:func:`run_pgt`) and the CLI
(``python -m ray_jobs.make_pgt``). Output folder::

    pgt.parquet         the ``pgt`` table (class map in its metadata)
    pgt_coco.json       COCO instances json for training (see weaksam.pgt.coco)
    mask_shards/<key>/  the SAM job's resumable shards (when masks are made)
    metrics.json        counts, timings, and quality when ground truth is given

Quality (:func:`weaksam.pgt.quality.pgt_quality`) is computed *after* the PGT is written, from
the written table and the hidden GT; nothing computed from GT flows back into the PGT.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from weaksam import storage
from weaksam.config import Config
from weaksam.eval.formats import load_detections_table, load_ground_truth
from weaksam.eval.table import format_table
from weaksam.io.tables import write_table
from weaksam.pgt.build import build_pgt_rows, read_detections
from weaksam.pgt.coco import pgt_to_coco
from weaksam.pgt.config import PGTStageConfig
from weaksam.pgt.job import generate_pgt_masks, merge_masks
from weaksam.pgt.labels import LabelSet, read_labels
from weaksam.pgt.quality import pgt_quality
from weaksam.runs import (
    PGT_COCO,
    PGT_TABLE,
    detections_path,
    manifest_path,
    pgt_path,
    relative_to_run,
)
from weaksam.sam.build import SamConfig
from weaksam.stage import Stage, StageContext

log = logging.getLogger(__name__)


def make_pgt_outputs(
    detections: str,
    labels: LabelSet,
    cfg: PGTStageConfig,
    out_dir: str,
    *,
    sam: SamConfig | None = None,
    only_detected: bool = False,
    ray_init: Callable[[], None] = lambda: None,
    path_root: str | None = None,
) -> dict[str, Any]:
    """Write ``pgt.parquet`` and ``pgt_coco.json`` into the location ``out_dir`` (local,
    ``file://`` or ``s3://``); return counts.

    Masks are made when ``cfg.masks`` and ``sam`` is given (``ray_init`` is called first).
    With ``path_root`` (the run folder), the COCO ``file_name`` of an image inside it is
    relative to it, so a moved run folder's export stays valid.
    """
    t0 = time.time()
    dets = read_detections(detections, labels)
    rows = build_pgt_rows(dets, labels, cfg.rule, only_detected=only_detected)
    metrics: dict[str, Any] = {"mode": cfg.mode, "rule_seconds": round(time.time() - t0, 2)}
    if cfg.masks and sam is not None:
        ray_init()
        paths = {im.image_id: im.path for im in labels.images.values()}
        stats = generate_pgt_masks(rows, paths, out_dir, sam, cfg.mask_job, classes=labels.classes)
        rows = merge_masks(rows, out_dir, sam, cfg.mask_job)
        metrics.update(
            mask_images=stats.submitted,
            mask_images_resumed=stats.skipped_done,
            mask_seconds=round(stats.seconds, 2),
            mask_device=stats.device or "no images left to process",
        )
    storage.makedirs(out_dir)
    write_table(rows, storage.join(out_dir, PGT_TABLE), "pgt", labels.classes)
    paths = {
        im.image_id: relative_to_run(im.path, path_root) if path_root else im.path
        for im in labels.images.values()
        if im.path
    }
    coco = pgt_to_coco(rows, labels.classes, cfg.bbox_source, paths)
    storage.write_json(storage.join(out_dir, PGT_COCO), coco, indent=None)
    good = [r for r in rows if not r["error"]]
    counts = np.asarray([len(r["scores"] or []) for r in good], dtype=np.float64)
    metrics.update(
        images=len(rows),
        error_rows=len(rows) - len(good),
        images_without_pgt=int((counts == 0).sum()),
        pgt_boxes=int(counts.sum()),
        pgt_per_image=float(counts.mean()) if counts.size else 0.0,
        with_masks=any(r["masks"] is not None for r in good),
        images_without_detections=sum(1 for i in labels.images if i not in dets),
    )
    return metrics


def evaluate_pgt(out_dir: str, ground_truth: str, split: str | None = None) -> dict[str, Any]:
    """PGT precision/recall of ``out_dir/pgt.parquet`` against a manifest or COCO json GT."""
    gt = load_ground_truth(ground_truth, split=split)
    pgt = load_detections_table(storage.join(out_dir, PGT_TABLE))
    ids = {d.image_id for d in pgt.records}
    return pgt_quality(pgt.records, [g for g in gt.records if g.image_id in ids], gt.classes)


def quality_table(metrics: dict[str, Any], title: str) -> str:
    keys = ("pgt_per_image", "precision", "recall", "mask_precision", "mask_recall")
    q = metrics.get("quality", {})
    rows = [[k, q.get(k, metrics.get(k))] for k in keys if q.get(k, metrics.get(k)) is not None]
    return format_table(rows, ["PGT", "value"], title=title)


def run_pgt(cfg: Config, ctx: StageContext) -> dict[str, Any]:
    """PGT of the training split from ``<run>/wsod/detections_<train>.parquet`` and the
    manifest's image-level labels; masks from the run's SAM; quality vs the hidden GT."""
    train_split = cfg.data.splits[0]
    manifest = manifest_path(ctx.run_dir)
    detections = detections_path(ctx.run_dir, "wsod", train_split)
    if not storage.exists(detections):
        raise FileNotFoundError(f"no WSOD detections at {detections} (run the wsod stage)")
    labels = read_labels(manifest, split=train_split)
    metrics = make_pgt_outputs(
        detections,
        labels,
        cfg.pgt,
        ctx.out_dir,
        sam=cfg.sam,
        ray_init=ctx.ray_init,
        path_root=ctx.run_dir,
    )
    metrics["detections"] = relative_to_run(detections, ctx.run_dir)
    try:
        metrics["quality"] = evaluate_pgt(ctx.out_dir, manifest, split=train_split)
    except ValueError as exc:  # a manifest without ground truth
        log.info("no PGT quality: %s", exc)
    log.info("\n%s", quality_table(metrics, f"PGT ({cfg.pgt.mode}) on {train_split}"))
    return metrics


def _pgt_table(cfg: Config, run_dir: str) -> list[tuple[str, tuple[str, ...]]]:
    return [(pgt_path(run_dir), (cfg.data.splits[0],))]  # one row per training image


PGT_STAGE = Stage(
    "pgt",
    run_pgt,
    sections=("pgt", "sam"),
    deps=("ingest", "wsod"),
    covers=_pgt_table,
)
