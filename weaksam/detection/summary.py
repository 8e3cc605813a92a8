"""The weak-vs-full quality table of a run, in the style of the paper's tables.

:func:`quality_summary` reads the ``metrics.json`` of the ``wsod``, ``pgt``, ``retrain`` and
``wsis`` stages of a run folder (whichever exist) and returns a flat dict of the numbers;
:func:`quality_table` prints them as two tables (detection, VOC07 11-point AP50 on the test
split; instance segmentation, mask AP at IoU 0.25/0.5/0.7/0.75 and COCO segm AP). Numbers a
run did not produce are shown as ``-``. Rows name the stages' architectures (the ``family`` in
their metrics: Faster R-CNN or RT-DETR, Mask R-CNN or Mask2Former).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from weaksam import storage
from weaksam.detection.family_names import display_name
from weaksam.eval.table import format_table
from weaksam.runs import METRICS, read_metrics


def _stage(run_dir: str, name: str) -> dict[str, Any]:
    path = storage.join(run_dir, name)
    return read_metrics(path) if storage.exists(storage.join(path, METRICS)) else {}


def _get(node: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(node, Mapping):
            return None
        node = node.get(key)
    return node


def quality_summary(
    run_dir: str, stages: Mapping[str, Mapping[str, Any]] | None = None
) -> dict[str, Any]:
    """Flat numbers of the weak pipeline and its upper bounds (``None`` when absent).

    ``stages`` overrides the metrics read from disk (e.g. the stage running right now).
    """
    m = {
        s: dict((stages or {}).get(s) or _stage(run_dir, s))
        for s in ("wsod", "pgt", "retrain", "wsis")
    }
    method = m["wsod"].get("method")
    out: dict[str, Any] = {
        "retrain_family": m["retrain"].get("family") or "rcnn",
        "wsis_family": m["wsis"].get("family") or "rcnn",
        "wsod_method": method,
        "wsod_ap50": _get(m["wsod"], "methods", method or "", "ap50_voc07"),
        "pgt_mode": m["pgt"].get("mode"),
        "pgt_precision": _get(m["pgt"], "quality", "precision"),
        "pgt_recall": _get(m["pgt"], "quality", "recall"),
        "pgt_mask_precision": _get(m["pgt"], "quality", "mask_precision"),
        "retrain_ap50": m["retrain"].get("ap50_voc07"),
        "retrain_ap50_no_drop": m["retrain"].get("ap50_no_drop"),
        "upper_bound_ap50": m["retrain"].get("upper_bound_ap50"),
    }
    for t in (25, 50, 70, 75):
        out[f"wsis_ap{t}"] = m["wsis"].get(f"mask_ap{t}")
        out[f"upper_bound_mask_ap{t}"] = _get(m["wsis"], "variants", "upper_bound", f"mask_ap{t}")
    out["wsis_segm_ap"] = m["wsis"].get("segm_ap")
    out["upper_bound_segm_ap"] = _get(m["wsis"], "variants", "upper_bound", "segm_ap")
    for key, weak, full in (
        ("weak_full_ratio", "retrain_ap50", "upper_bound_ap50"),
        ("weak_full_mask_ratio", "wsis_ap50", "upper_bound_mask_ap50"),
    ):
        out[key] = out[weak] / out[full] if out[weak] is not None and out[full] else None
    return out


def quality_table(
    summary: Mapping[str, Any], title: str = "", train: str = "train", test: str = "test"
) -> str:
    """Three aligned tables of :func:`quality_summary`'s numbers; the labels name the splits
    ``train`` (PGT) and ``test`` (detectors)."""
    s = summary
    box_family = s.get("retrain_family") or "rcnn"
    box = display_name(box_family)
    mask = display_name(s.get("wsis_family") or "rcnn", masks=True)
    pgt_source = f"PGT {s.get('pgt_mode') or ''}".strip()
    det = [[f"WSOD ({s.get('wsod_method') or '-'})", "image labels", s.get("wsod_ap50")]]
    if box_family == "rcnn":  # RoI drop is a rule of the R-CNN box head
        det += [
            [f"{box} on PGT", pgt_source, s.get("retrain_ap50_no_drop")],
            [f"{box} on PGT + RoI drop", pgt_source, s.get("retrain_ap50")],
        ]
    else:
        det.append([f"{box} on PGT", pgt_source, s.get("retrain_ap50")])
    det += [
        [f"{box} on GT (upper bound)", "GT boxes", s.get("upper_bound_ap50")],
        ["ratio weak / full", "", s.get("weak_full_ratio")],
    ]
    pgt = [
        [f"PGT precision / recall ({train})", s.get("pgt_precision"), s.get("pgt_recall")],
        [f"PGT mask precision ({train})", s.get("pgt_mask_precision"), None],
    ]
    seg_keys = ("ap25", "ap50", "ap70", "ap75")
    seg = [
        [f"{mask} on PGT masks", *(s.get(f"wsis_{k}") for k in seg_keys), s.get("wsis_segm_ap")],
        [
            f"{mask} on GT masks (upper bound)",
            *(s.get(f"upper_bound_mask_{k}") for k in seg_keys),
            s.get("upper_bound_segm_ap"),
        ],
    ]
    return "\n\n".join(
        [
            format_table(
                det, ["detector", "supervision", f"AP50 VOC07 ({test})"], title=title or None
            ),
            format_table(pgt, ["pseudo ground truth", "precision", "recall"]),
            format_table(
                seg,
                [
                    f"instance segmentation ({test})",
                    "AP25",
                    "AP50",
                    "AP70",
                    "AP75",
                    "COCO segm AP",
                ],
            ),
        ]
    )
