"""The ``baseline`` and ``evaluate`` pipeline stages.

* ``baseline``: the window-prior detector (:mod:`weaksam.baselines`) on the test split (class
  prior only) and the training split (image labels), written as ``detections`` tables.
* ``evaluate``: its test-split AP (and COCO) and training-split CorLoc: the floor every
  detector's figures are read against. Ground truth is read here for evaluation only.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from weaksam.baselines import class_prior, window_prior_detections
from weaksam.eval.formats import load_detections_table, load_manifest_gt
from weaksam.eval.summary import evaluate, format_report, to_jsonable
from weaksam.io.tables import read_classes, read_table, write_table
from weaksam.runs import detections_path, manifest_path
from weaksam.stage import Stage, StageContext

if TYPE_CHECKING:
    from weaksam.config import Config

log = logging.getLogger(__name__)


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
        path = detections_path(ctx.run_dir, "baseline", split)
        write_table(rows, path, "detections", classes)
    return {"class_prior": dict(zip(classes.names, prior.tolist(), strict=True))}


def evaluate_split(
    run_dir: str, detections: str, split: str, metrics: tuple[str, ...]
) -> dict[str, Any]:
    """Evaluate a detections table against the manifest's ground truth of ``split``."""
    gt = load_manifest_gt(manifest_path(run_dir), split=split)
    dets = load_detections_table(detections)
    return evaluate(gt.records, dets.records, metrics, gt.classes)


def run_evaluate(cfg: Config, ctx: StageContext) -> dict[str, Any]:
    """Metrics of the baseline: test-split AP (and COCO), train-split CorLoc."""
    train_split, test_split = cfg.data.splits[0], cfg.data.splits[-1]
    test_metrics = tuple(m for m in cfg.evaluate.metrics if m != "corloc")
    test = detections_path(ctx.run_dir, "baseline", test_split)
    res = evaluate_split(ctx.run_dir, test, test_split, test_metrics)
    if "corloc" in cfg.evaluate.metrics:
        train = detections_path(ctx.run_dir, "baseline", train_split)
        res.update(evaluate_split(ctx.run_dir, train, train_split, ("corloc",)))
    log.debug("window-prior baseline:\n%s", format_report(res))
    return {"baseline": to_jsonable(res)}


def _baseline_tables(cfg: Config, run_dir: str) -> list[tuple[str, tuple[str, ...]]]:
    return [(detections_path(run_dir, "baseline", s), (s,)) for s in dict.fromkeys(cfg.data.splits)]


BASELINE_STAGE = Stage(
    "baseline", run_baseline, sections=(), deps=("ingest",), covers=_baseline_tables
)
EVALUATE_STAGE = Stage(
    "evaluate", run_evaluate, sections=("evaluate",), deps=("baseline", "ingest")
)
