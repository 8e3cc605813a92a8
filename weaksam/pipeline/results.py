"""``runs/<name>/results.json``: one flat object a script can read, and its printed table.

Keys are fixed (see :data:`RESULT_KEYS`); a stage that did not run leaves its keys ``null``.
Fractions are in ``[0, 1]``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from weaksam import storage
from weaksam.eval.table import format_table
from weaksam.runs import results_path
from weaksam.stage import StageReport

RESULT_KEYS: tuple[str, ...] = (
    "proposal_recall50",
    "proposals_per_image",
    "cls_map",
    "point_precision",
    "wsod_ap50_wsddn",
    "wsod_ap50_oicr",
    "wsod_ap50_mist",
    "wsod_corloc",
    "pgt_precision",
    "pgt_recall",
    "retrain_ap50",
    "retrain_ap50_no_drop",
    "wsis_ap25",
    "wsis_ap50",
    "wsis_ap70",
    "wsis_ap75",
    "upper_bound_ap50",
    "upper_bound_mask_ap50",
    "weak_full_ratio",
    "baseline_ap50",
    "baseline_corloc",
)

# ``{train}`` / ``{test}``: the run's split names (:func:`label`).
LABELS: dict[str, str] = {
    "proposal_recall50": "proposal recall @ IoU 0.5 ({test})",
    "proposals_per_image": "proposals per image (all splits)",
    "cls_map": "classification mAP ({test})",
    "point_precision": "peak-point precision ({train} + {test}, pooled)",
    "wsod_ap50_wsddn": "WSOD AP50, WSDDN ({test})",
    "wsod_ap50_oicr": "WSOD AP50, OICR ({test})",
    "wsod_ap50_mist": "WSOD AP50, MIST ({test})",
    "wsod_corloc": "WSOD CorLoc ({train})",
    "pgt_precision": "PGT precision ({train})",
    "pgt_recall": "PGT recall ({train})",
    "retrain_ap50": "retrained Faster R-CNN AP50 ({test})",
    "retrain_ap50_no_drop": "  ... without RoI drop ({test})",
    "wsis_ap25": "Mask R-CNN mask AP25 ({test})",
    "wsis_ap50": "Mask R-CNN mask AP50 ({test})",
    "wsis_ap70": "Mask R-CNN mask AP70 ({test})",
    "wsis_ap75": "Mask R-CNN mask AP75 ({test})",
    "upper_bound_ap50": "fully supervised AP50 ({test})",
    "upper_bound_mask_ap50": "fully supervised mask AP50 ({test})",
    "weak_full_ratio": "retrain AP50 / fully supervised ({test})",
    "baseline_ap50": "window-prior baseline AP50, VOC07 ({test})",
    "baseline_corloc": "window-prior baseline CorLoc ({train})",
}


def label(key: str, results: Mapping[str, Any]) -> str:
    """The label of result ``key`` with the run's split names (``results["splits"]``;
    ``train`` / ``test`` when absent, as in results of older runs)."""
    splits = results.get("splits") or {}
    return LABELS[key].format(train=splits.get("train", "train"), test=splits.get("test", "test"))


def _get(metrics: Mapping[str, Any], *path: str) -> float | None:
    node: Any = metrics
    for key in path:
        if not isinstance(node, Mapping) or key not in node:
            return None
        node = node[key]
    if node is None:
        return None
    value = float(node)
    return None if math.isnan(value) else value


def collect_results(
    reports: Sequence[StageReport],
    total_seconds: float,
    test_split: str = "test",
    train_split: str = "train",
) -> dict[str, Any]:
    """Build the flat results object from the stages' metrics; split-wise figures are quoted on
    ``test_split`` (the config's last split) or ``train_split`` (its first), as the labels
    say."""
    by_stage = {r.name: r.metrics for r in reports if r.action in ("ran", "skipped")}
    out: dict[str, Any] = dict.fromkeys(RESULT_KEYS)
    ev = by_stage.get("evaluate", {})
    props = by_stage.get("proposals", {})
    out["proposal_recall50"] = _get(props, "recall", test_split, "recall@0.5")
    out["proposals_per_image"] = _get(props, "proposals_per_image")
    out["cls_map"] = _get(by_stage.get("classify", {}), "cls_map")
    out["point_precision"] = _get(by_stage.get("peaks", {}), "point_precision")
    wsod = by_stage.get("wsod", {})
    for method in ("wsddn", "oicr", "mist"):
        out[f"wsod_ap50_{method}"] = _get(wsod, "methods", method, "ap50_voc07")
    if wsod.get("method"):
        out["wsod_corloc"] = _get(wsod, "methods", wsod["method"], "corloc")
    pgt = by_stage.get("pgt", {})
    out["pgt_precision"] = _get(pgt, "quality", "precision")
    out["pgt_recall"] = _get(pgt, "quality", "recall")
    retrain = by_stage.get("retrain", {})
    out["retrain_ap50"] = _get(retrain, "ap50_voc07")
    out["retrain_ap50_no_drop"] = _get(retrain, "ap50_no_drop")
    out["upper_bound_ap50"] = _get(retrain, "upper_bound_ap50")
    wsis = by_stage.get("wsis", {})
    for t in (25, 50, 70, 75):
        out[f"wsis_ap{t}"] = _get(wsis, f"mask_ap{t}")
    out["upper_bound_mask_ap50"] = _get(wsis, "upper_bound_mask_ap50")
    out["baseline_ap50"] = _get(ev, "baseline", "voc07", "overall", "mAP")
    out["baseline_corloc"] = _get(ev, "baseline", "corloc", "overall", "CorLoc")
    if out["upper_bound_ap50"] and out["retrain_ap50"] is not None:
        out["weak_full_ratio"] = out["retrain_ap50"] / out["upper_bound_ap50"]
    out["splits"] = {"train": train_split, "test": test_split}
    out["total_seconds"] = round(total_seconds, 1)
    out["stage_seconds"] = {r.name: round(r.seconds, 1) for r in reports if r.action == "ran"}
    out["stages"] = {r.name: r.action for r in reports}
    return out


def write_results(run_dir: str, results: Mapping[str, Any]) -> str:
    """Write ``results.json`` into the run folder (keys in :data:`RESULT_KEYS` order, not
    sorted); return its location."""
    path = results_path(run_dir)
    storage.write_text(path, json.dumps(results, indent=2))
    return path


def results_table(results: Mapping[str, Any]) -> str:
    """The results that have values, as a readable table."""
    rows = [[label(k, results), results[k]] for k in RESULT_KEYS if results.get(k) is not None]
    return format_table(rows, ["result", "value"], title="weaksam results")


def stage_table(reports: Sequence[StageReport]) -> str:
    """Action, seconds, the driver's peak RSS and the largest Ray worker's per stage."""
    rows = [
        [
            r.name,
            "resumed" if r.resumed else r.action,
            f"{r.seconds:.1f}",
            f"{r.peak_rss_mb:.0f}",
            f"{r.worker_rss_mb:.0f} {_short(r.worker_kind)}" if r.worker_kind else "-",
        ]
        for r in reports
    ]
    head = ["stage", "action", "seconds", "driver peak MiB", "largest worker peak MiB"]
    return format_table(rows, head, title="stages")


def _short(kind: str) -> str:
    """``MapWorker(MapBatches(ProposalGenerator))`` → ``(ProposalGenerator)``."""
    inner = kind.rstrip(")").rsplit("(", 1)[-1]
    return f"({inner})"
