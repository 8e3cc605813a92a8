"""One entry for every metric: :func:`evaluate` by name, plus report text and JSON helpers.

Every metric's summary has the same shape::

    {"overall": {name: value}, "per_class": {class_name: {column: value}}, ...}

(``per_class`` is absent for class-agnostic metrics; ``recall`` adds ``ar_curve``). Values are
floats (NaN where undefined) or ints; :func:`to_jsonable` turns NaN into ``None``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from weaksam.eval.coco import eval_coco
from weaksam.eval.corloc import eval_corloc
from weaksam.eval.mask_ap import eval_mask_ap
from weaksam.eval.recall import eval_recall
from weaksam.eval.records import Detections, GroundTruth
from weaksam.eval.table import format_table, metrics_table
from weaksam.eval.voc import eval_detection_voc
from weaksam.io.classes import ClassMap

Summary = dict[str, Any]
MetricFn = Callable[[Sequence[GroundTruth], Sequence[Detections], ClassMap, float, bool], Summary]


def _per_class(classes: ClassMap, **columns: npt.ArrayLike) -> dict[str, dict[str, Any]]:
    arrays = {col: np.asarray(values).tolist() for col, values in columns.items()}
    return {
        name: {col: values[c] for col, values in arrays.items()}
        for c, name in enumerate(classes.names)
    }


def _voc(use_07: bool) -> MetricFn:
    def run(
        gts: Sequence[GroundTruth],
        dets: Sequence[Detections],
        classes: ClassMap,
        iou_thresh: float,
        include_difficult: bool,
    ) -> Summary:
        r = eval_detection_voc(gts, dets, classes.num_classes, iou_thresh, use_07)
        return {
            "overall": {"mAP": r.map},
            "per_class": _per_class(classes, AP=r.ap, npos=r.npos),
            "iou_thresh": r.iou_thresh,
            "use_07_metric": use_07,
        }

    return run


def _corloc(
    gts: Sequence[GroundTruth],
    dets: Sequence[Detections],
    classes: ClassMap,
    iou_thresh: float,
    include_difficult: bool,
) -> Summary:
    r = eval_corloc(gts, dets, classes.num_classes, iou_thresh)
    return {
        "overall": {"CorLoc": r.corloc},
        "per_class": _per_class(classes, CorLoc=r.per_class, hits=r.hits, images=r.num_images),
        "iou_thresh": r.iou_thresh,
    }


def _coco(iou_type: str) -> MetricFn:
    def run(
        gts: Sequence[GroundTruth],
        dets: Sequence[Detections],
        classes: ClassMap,
        iou_thresh: float,
        include_difficult: bool,
    ) -> Summary:
        r = eval_coco(gts, dets, classes, iou_type)
        return {"overall": dict(r.stats), "per_class": _per_class(classes, AP=r.per_class_ap)}

    return run


def _mask_ap(
    gts: Sequence[GroundTruth],
    dets: Sequence[Detections],
    classes: ClassMap,
    iou_thresh: float,
    include_difficult: bool,
) -> Summary:
    r = eval_mask_ap(gts, dets, classes.num_classes)
    names = [f"AP{round(t * 100)}" for t in r.thresholds]
    return {
        "overall": {n: r.ap[t] for n, t in zip(names, r.thresholds, strict=True)},
        "per_class": _per_class(
            classes, **{n: r.per_class[k] for k, n in enumerate(names)}, npos=r.npos
        ),
    }


def _recall(
    gts: Sequence[GroundTruth],
    dets: Sequence[Detections],
    classes: ClassMap,
    iou_thresh: float,
    include_difficult: bool,
) -> Summary:
    r = eval_recall(gts, dets, include_difficult=include_difficult)
    overall: dict[str, Any] = {f"recall@{t:g}": v for t, v in r.recall_at.items()}
    overall.update({f"AR@{'all' if n is None else n}": ar for n, ar in r.ar_curve})
    overall.update(
        proposals_per_image=r.proposals_per_image, num_gt=r.num_gt, num_images=r.num_images
    )
    return {
        "overall": overall,
        "ar_curve": [["all" if n is None else n, ar] for n, ar in r.ar_curve],
        "include_difficult": include_difficult,
    }


METRICS: dict[str, MetricFn] = {
    "voc07": _voc(True),
    "voc": _voc(False),
    "coco": _coco("bbox"),
    "segm": _coco("segm"),
    "corloc": _corloc,
    "recall": _recall,
    "mask_ap": _mask_ap,
}
CLASS_AGNOSTIC = frozenset({"recall"})


def check_metrics(metrics: Sequence[str]) -> None:
    """Raise ``ValueError`` naming the known metrics if any name is unknown."""
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; known: {sorted(METRICS)}")


def evaluate(
    gts: Sequence[GroundTruth],
    dets: Sequence[Detections],
    metrics: Sequence[str],
    classes: ClassMap,
    *,
    iou_thresh: float = 0.5,
    include_difficult: bool = True,
) -> dict[str, Summary]:
    """Compute the named metrics; returns ``{metric: summary}`` in the order given.

    Args:
        gts, dets: records, paired by ``image_id`` (detections of unknown images raise
            :class:`weaksam.eval.records.IdMismatchError`).
        metrics: names among ``voc07`` (VOC07 11-point box AP), ``voc`` (all-point box AP),
            ``coco`` (COCO bbox), ``segm`` (COCO mask), ``corloc``, ``recall`` (class-agnostic
            proposal recall) and ``mask_ap`` (VOC-style mask AP25/50/70/75).
        classes: the class map (names for the per-class keys, source ids for COCO).
        iou_thresh: box IoU threshold of ``voc07``/``voc``/``corloc`` (hit when ``>``).
        include_difficult: whether ``recall`` counts difficult GT.

    Raises ``ValueError`` listing the known names when one is unknown (before any work).
    """
    check_metrics(metrics)
    return {
        m: METRICS[m](gts, dets, classes, iou_thresh, include_difficult)
        for m in dict.fromkeys(metrics)
    }


def to_jsonable(obj: Any) -> Any:
    """``obj`` with numpy values made Python, tuples made lists and NaN/inf made ``None``."""
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [to_jsonable(v) for v in obj.tolist()]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def format_report(results: Mapping[str, Summary]) -> str:
    """Readable text of :func:`evaluate`'s output: per metric an overall and a per-class table."""
    blocks: list[str] = []
    for name, summary in results.items():
        blocks.append(metrics_table(summary["overall"], title=f"== {name} =="))
        per_class = summary.get("per_class")
        if per_class:
            cols = list(next(iter(per_class.values())))
            rows = [[cls, *(vals[c] for c in cols)] for cls, vals in per_class.items()]
            blocks.append(format_table(rows, ["class", *cols]))
    return "\n\n".join(blocks)
