"""Evaluation: VOC AP, CorLoc, COCO AP, proposal recall and VOC-style mask AP.

Records (:class:`GroundTruth`, :class:`Detections`) come from the project's tables or COCO
json files (:mod:`weaksam.eval.formats`); :func:`evaluate` computes metrics by name and
:func:`format_report` / :func:`format_table` print them.
"""

from weaksam.eval.coco import STAT_NAMES, COCOResult, coco_stats, eval_coco
from weaksam.eval.corloc import CorLocResult, eval_corloc
from weaksam.eval.formats import (
    detections_to_coco_results,
    gt_to_coco,
    load_coco_gt,
    load_coco_results,
    load_detections_table,
    load_manifest_gt,
)
from weaksam.eval.mask_ap import MASK_IOUS, MaskAPResult, eval_mask_ap
from weaksam.eval.recall import RecallResult, eval_recall, greedy_match_ious
from weaksam.eval.records import (
    Detections,
    DetectionSet,
    GroundTruth,
    GroundTruthSet,
    IdMismatchError,
    align_detections,
)
from weaksam.eval.summary import METRICS, evaluate, format_report, to_jsonable
from weaksam.eval.table import format_table, metrics_table
from weaksam.eval.voc import VOCResult, eval_detection_voc, voc_ap

__all__ = [
    "MASK_IOUS",
    "METRICS",
    "STAT_NAMES",
    "COCOResult",
    "CorLocResult",
    "DetectionSet",
    "Detections",
    "GroundTruth",
    "GroundTruthSet",
    "IdMismatchError",
    "MaskAPResult",
    "RecallResult",
    "VOCResult",
    "align_detections",
    "coco_stats",
    "detections_to_coco_results",
    "eval_coco",
    "eval_corloc",
    "eval_detection_voc",
    "eval_mask_ap",
    "eval_recall",
    "evaluate",
    "format_report",
    "format_table",
    "greedy_match_ious",
    "gt_to_coco",
    "load_coco_gt",
    "load_coco_results",
    "load_detections_table",
    "load_manifest_gt",
    "metrics_table",
    "to_jsonable",
    "voc_ap",
]
