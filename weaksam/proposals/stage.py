"""The ``proposals`` pipeline stage: run the job, then measure what it produced."""

from __future__ import annotations

import logging
from typing import Any

from weaksam import storage
from weaksam.config import Config
from weaksam.eval import evaluate, load_manifest_gt
from weaksam.eval.formats import load_detections_table
from weaksam.eval.table import format_table
from weaksam.io.tables import read_table
from weaksam.proposals.job import generate_proposals, summarize_proposals
from weaksam.runs import manifest_path, points_path, proposals_path
from weaksam.stage import Stage, StageContext

log = logging.getLogger(__name__)


def proposal_recall(manifest: str, proposals: str, split: str) -> dict[str, Any]:
    """Class-agnostic recall of the ``proposals`` table of ``split`` against the ``manifest``
    table's GT boxes (evaluation only)."""
    gt = load_manifest_gt(manifest, split=split)
    props = load_detections_table(read_table(proposals, "proposals"))
    ids = {g.image_id for g in gt.records}
    records = [d for d in props.records if d.image_id in ids]
    res = evaluate(gt.records, records, ("recall",), gt.classes)["recall"]["overall"]
    return dict(res)


def run_proposals(cfg: Config, ctx: StageContext) -> dict[str, Any]:
    """Generate (or resume) WeakSAM proposals for the manifest; metrics per split."""
    manifest = manifest_path(ctx.run_dir)
    points = points_path(ctx.run_dir)
    ctx.ray_init()
    stats = generate_proposals(
        manifest, ctx.out_dir, cfg.sam, cfg.proposals, points if storage.exists(points) else None
    )
    metrics: dict[str, Any] = summarize_proposals(ctx.out_dir)
    metrics.update(
        images_processed=stats.submitted,
        images_resumed=stats.skipped_done,
        device=stats.device or "no images left to process",
        job_seconds=round(stats.seconds, 2),
        images_per_second=round(stats.submitted / stats.seconds, 3) if stats.submitted else None,
    )
    has_gt = any(
        len(b or [])
        for b in read_table(manifest, "manifest", columns=["gt_boxes"])
        .column("gt_boxes")
        .to_pylist()
    )
    if has_gt:
        splits = sorted(
            {s for s in read_table(manifest, columns=["split"]).column("split").to_pylist() if s}
        )
        props = proposals_path(ctx.run_dir)
        metrics["recall"] = {s: proposal_recall(manifest, props, s) for s in splits}
    rows = [[k, v] for k, v in metrics.items() if not isinstance(v, dict)]
    for split, rec in metrics.get("recall", {}).items():
        rows += [[f"{split} {k}", v] for k, v in rec.items() if k.startswith(("recall@", "AR@all"))]
    log.info("\n%s", format_table(rows, ["proposals", "value"]))
    return metrics


def proposals_tables(cfg: Config, run_dir: str) -> list[tuple[str, tuple[str, ...]]]:
    """The ``proposals`` table: one row per manifest image of ``proposals.splits``."""
    return [(proposals_path(run_dir), tuple(cfg.proposals.splits))]


PROPOSALS_STAGE = Stage(
    "proposals",
    run_proposals,
    sections=("sam", "proposals"),
    deps=("ingest", "peaks"),
    covers=proposals_tables,
)
