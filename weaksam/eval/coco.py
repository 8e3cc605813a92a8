"""COCO box and mask AP through pycocotools' ``COCOeval``, built in memory.

The GT is :func:`weaksam.eval.formats.gt_to_coco` of the records (difficult objects become
``iscrowd = 1``, which COCOeval ignores: a detection matching one is neither TP nor FP).
Detections become a result ``COCO`` object built directly (not with ``COCO.loadRes``), as
detectron2's ``COCOEvaluator`` does it: for ``segm`` the detection's area is its mask area
(``loadRes`` would take the box area when a ``bbox`` is present). pycocotools' prints are
captured.

The 12 stats are named ``AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100, ARs, ARm, ARl``
(``maxDets`` 1/10/100; AP, AR over IoU 0.5:0.95). As in pycocotools, a stat whose area range
has no GT is ``-1``; with no detections every AP/AR over existing GT is ``0``.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from weaksam.eval.formats import detections_to_coco_results, gt_to_coco
from weaksam.eval.records import Detections, GroundTruth, align_detections
from weaksam.io.classes import ClassMap
from weaksam.io.rle import rle_area

STAT_NAMES: tuple[str, ...] = (
    "AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl",
)  # fmt: skip
IOU_TYPES = ("bbox", "segm")


@dataclass
class COCOResult:
    """Attributes: ``stats`` (the 12 named stats), ``per_class_ap`` (``C`` AP@[.5:.95], NaN
    for classes without GT), ``iou_type``."""

    stats: dict[str, float]
    per_class_ap: npt.NDArray[np.float64]
    iou_type: str


def _coco_from_dict(dataset: dict[str, Any]) -> COCO:
    coco = COCO()
    coco.dataset = dataset
    coco.createIndex()
    return coco


def _results_dataset(
    gt_json: dict[str, Any], dets: Sequence[Detections], classes: ClassMap, iou_type: str
) -> dict[str, Any]:
    anns = detections_to_coco_results(dets, classes)
    # areas for the size ranges: box area for bbox, mask area for segm (detectron2's choice)
    if iou_type == "segm":
        areas = [a for d in dets if len(d) for a in rle_area(d.masks or [], d.height, d.width)]
    else:
        areas = [r["bbox"][2] * r["bbox"][3] for r in anns]
    for k, (ann, area) in enumerate(zip(anns, areas, strict=True)):
        ann.update(id=k + 1, area=float(area), iscrowd=0)
    return {"images": gt_json["images"], "categories": gt_json["categories"], "annotations": anns}


def eval_coco(
    gts: Sequence[GroundTruth],
    dets: Sequence[Detections],
    classes: ClassMap,
    iou_type: str = "bbox",
) -> COCOResult:
    """COCO AP/AR of ``dets`` against ``gts``.

    Args:
        gts: ground truth; for ``segm`` every image needs masks.
        dets: detections paired to ``gts`` by ``image_id``; for ``segm`` all need masks.
            Class-agnostic (``-1``) detections are not allowed.
        classes: class map; its source ids are the COCO category ids.
        iou_type: ``"bbox"`` or ``"segm"``.

    Raises ``ValueError`` for an unknown ``iou_type`` or missing masks.
    """
    if iou_type not in IOU_TYPES:
        raise ValueError(f"unknown iou_type {iou_type!r}; known: {list(IOU_TYPES)}")
    segm = iou_type == "segm"
    aligned = align_detections(gts, dets)
    if segm:
        if any(g.masks is None for g in gts):
            raise ValueError("segm evaluation needs ground-truth masks for every image")
        if any(d.masks is None for d in aligned if len(d)):
            raise ValueError("segm evaluation needs a mask for every detection")
    # COCO ids and mask sizes always come from the ground truth
    aligned = [
        replace(
            d,
            image_index=g.image_index,
            height=g.height,
            width=g.width,
            masks=d.masks if segm else None,
        )
        for d, g in zip(aligned, gts, strict=True)
    ]
    gt_json = gt_to_coco(gts, classes)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = _coco_from_dict(gt_json)
        coco_dt = _coco_from_dict(_results_dataset(gt_json, aligned, classes, iou_type))
        ev = COCOeval(coco_gt, coco_dt, iouType=iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    stats = {name: float(v) for name, v in zip(STAT_NAMES, ev.stats, strict=True)}
    return COCOResult(stats=stats, per_class_ap=_per_class_ap(ev, classes), iou_type=iou_type)


def coco_stats(
    gts: Sequence[GroundTruth],
    dets: Sequence[Detections],
    classes: ClassMap,
    iou_type: str = "bbox",
) -> dict[str, float]:
    """Just the 12 named stats of :func:`eval_coco`."""
    return eval_coco(gts, dets, classes, iou_type).stats


def _per_class_ap(ev: COCOeval, classes: ClassMap) -> npt.NDArray[np.float64]:
    """AP@[.5:.95] per class (area ``all``, 100 dets); NaN where the class has no GT."""
    precision = ev.eval["precision"]  # T x R x K x A x M, -1 where undefined
    cat_ids = list(ev.params.catIds)
    out = np.full(classes.num_classes, np.nan)
    for c, sid in enumerate(classes.source_ids):
        if sid not in cat_ids:
            continue
        p = precision[:, :, cat_ids.index(sid), 0, -1]
        p = p[p > -1]
        if p.size:
            out[c] = float(p.mean())
    return out
