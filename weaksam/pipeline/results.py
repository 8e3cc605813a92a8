"""``runs/<name>/results.json``: one flat object a script can read, and its printed table.

Keys are fixed (see :data:`RESULT_KEYS`); a stage that did not run leaves its keys ``null``, and
so does a detector family the run did not train (``families`` names the run's). Fractions are in
``[0, 1]``. A run with ``upstream:`` also stores the upstream run's figures under ``upstream``
(:func:`add_upstream`) and prints them beside its own (:func:`comparison_table`).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from weaksam import storage
from weaksam.detection.family_names import RESULT_SUFFIXES, display_name, result_suffix
from weaksam.eval.table import format_table
from weaksam.pipeline.upstream import linked_target
from weaksam.runs import results_path
from weaksam.stage import StageReport

# The figures of the retrain (boxes) and wsis (masks) detectors: keys of a non-R-CNN family
# carry its suffix (weaksam.detection.family_names): retrain_ap50_detr, wsis_ap50_m2f.
BOX_KEYS: tuple[str, ...] = ("retrain_ap50", "upper_bound_ap50", "weak_full_ratio")
MASK_KEYS: tuple[str, ...] = (
    "wsis_ap25",
    "wsis_ap50",
    "wsis_ap70",
    "wsis_ap75",
    "upper_bound_mask_ap50",
    "weak_full_mask_ratio",
)
_DETR, _M2F = result_suffix("rt_detr"), result_suffix("mask2former")

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
    "retrain_ap50" + _DETR,
    "wsis_ap25",
    "wsis_ap50",
    "wsis_ap70",
    "wsis_ap75",
    *(f"wsis_ap{t}{_M2F}" for t in (25, 50, 70, 75)),
    "upper_bound_ap50",
    "upper_bound_ap50" + _DETR,
    "upper_bound_mask_ap50",
    "upper_bound_mask_ap50" + _M2F,
    "weak_full_ratio",
    "weak_full_ratio" + _DETR,
    "weak_full_mask_ratio",
    "weak_full_mask_ratio" + _M2F,
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
    "retrain_ap50_no_drop": "  ... without RoI drop ({test})",
    "baseline_ap50": "window-prior baseline AP50, VOC07 ({test})",
    "baseline_corloc": "window-prior baseline CorLoc ({train})",
}
_TEMPLATES: dict[str, str] = {  # {name}: the architecture (Faster R-CNN, RT-DETR, ...)
    "retrain_ap50": "retrained {name} AP50",
    "upper_bound_ap50": "fully supervised {name} AP50",
    "weak_full_ratio": "{name} AP50 / fully supervised",
    **{f"wsis_ap{t}": "{name} mask AP" + str(t) for t in (25, 50, 70, 75)},
    "upper_bound_mask_ap50": "fully supervised {name} mask AP50",
    "weak_full_mask_ratio": "{name} mask AP50 / fully supervised",
}
for _family, _masks in (("rcnn", False), ("rt_detr", False), ("rcnn", True), ("mask2former", True)):
    for _key in MASK_KEYS if _masks else BOX_KEYS:
        LABELS[_key + result_suffix(_family)] = (
            _TEMPLATES[_key].format(name=display_name(_family, _masks)) + " ({test})"
        )


def family_keys(results: Mapping[str, Any]) -> tuple[str, ...]:
    """The :data:`RESULT_KEYS` of the run's families (``results["families"]``; R-CNN when
    absent, as in results of older runs): the keys a run of them can fill."""
    families = results.get("families") or {}
    box = result_suffix(families.get("retrain", "rcnn"))
    mask = result_suffix(families.get("wsis", "rcnn"))
    other = {k + x for k in BOX_KEYS for x in RESULT_SUFFIXES.values() if x != box}
    other |= {k + x for k in MASK_KEYS for x in RESULT_SUFFIXES.values() if x != mask}
    if box:  # RoI drop is an R-CNN rule: no "without RoI drop" comparison
        other.add("retrain_ap50_no_drop")
    return tuple(k for k in RESULT_KEYS if k not in other)


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
    *,
    retrain_family: str = "rcnn",
    wsis_family: str = "rcnn",
) -> dict[str, Any]:
    """Build the flat results object from the stages' metrics; split-wise figures are quoted on
    ``test_split`` (the config's last split) or ``train_split`` (its first), as the labels
    say. The retrain and wsis figures go under the keys of their families
    (``retrain.model.family``, ``wsis.model.family``: ``retrain_ap50_detr`` for RT-DETR,
    ``wsis_ap50_m2f`` for Mask2Former, no suffix for the R-CNNs)."""
    by_stage = {r.name: r.metrics for r in reports if r.action in ("ran", "skipped", "upstream")}
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
    retrain, box = by_stage.get("retrain", {}), result_suffix(retrain_family)
    out["retrain_ap50" + box] = _get(retrain, "ap50_voc07")
    if not box:
        out["retrain_ap50_no_drop"] = _get(retrain, "ap50_no_drop")
    out["upper_bound_ap50" + box] = _get(retrain, "upper_bound_ap50")
    wsis, mask = by_stage.get("wsis", {}), result_suffix(wsis_family)
    for t in (25, 50, 70, 75):
        out[f"wsis_ap{t}{mask}"] = _get(wsis, f"mask_ap{t}")
    out["upper_bound_mask_ap50" + mask] = _get(wsis, "upper_bound_mask_ap50")
    out["baseline_ap50"] = _get(ev, "baseline", "voc07", "overall", "mAP")
    out["baseline_corloc"] = _get(ev, "baseline", "corloc", "overall", "CorLoc")
    for ratio, weak, full in (
        ("weak_full_ratio" + box, "retrain_ap50" + box, "upper_bound_ap50" + box),
        ("weak_full_mask_ratio" + mask, f"wsis_ap50{mask}", "upper_bound_mask_ap50" + mask),
    ):
        if out[full] and out[weak] is not None:
            out[ratio] = out[weak] / out[full]
    out["families"] = {"retrain": retrain_family, "wsis": wsis_family}
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
    """Action, seconds, the driver's peak RSS and the largest Ray worker's per stage; the
    title names the upstream run a stage marked ``upstream`` links to."""
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
    linked = sorted({os.path.dirname(r.source) for r in reports if r.action == "upstream"})
    title = "stages" + (f" (upstream: linked to {', '.join(linked)})" if linked else "")
    return format_table(rows, head, title=title)


def _short(kind: str) -> str:
    """``MapWorker(MapBatches(ProposalGenerator))`` → ``(ProposalGenerator)``."""
    inner = kind.rstrip(")").rsplit("(", 1)[-1]
    return f"({inner})"


# --------------------------------------------------------------------------- upstream


def add_upstream(results: Mapping[str, Any], run_dir: str, upstream_dir: str) -> dict[str, Any]:
    """``results`` with the upstream run's figures under ``upstream``: ``run`` (its folder),
    ``same_pgt`` (this run's ``pgt`` is a link to the upstream's: both trained on the same
    pseudo ground truth), its ``families`` and ``results`` (the values of its
    ``results.json`` under :data:`RESULT_KEYS` that are not null). Unchanged (a copy) when the
    upstream has no ``results.json``."""
    out = dict(results)
    path = results_path(upstream_dir)
    if not storage.exists(path):
        return out
    theirs = storage.read_json(path)
    target = linked_target(storage.join(run_dir, "pgt"))
    try:
        same_pgt = target is not None and os.path.samefile(
            target, storage.join(upstream_dir, "pgt")
        )
    except OSError:  # a dangling link, or no pgt folder upstream
        same_pgt = False
    out["upstream"] = {
        "run": upstream_dir,
        "same_pgt": same_pgt,
        "families": theirs.get("families") or {"retrain": "rcnn", "wsis": "rcnn"},
        "results": {k: theirs[k] for k in RESULT_KEYS if theirs.get(k) is not None},
    }
    return out


@dataclass(frozen=True)
class ComparisonRow:
    """One detector of the weak-vs-full comparison of a run and its upstream.

    Attributes:
        architecture: ``Faster R-CNN``, ``RT-DETR``, ``Mask R-CNN``, ``Mask2Former``.
        run: ``upstream`` or ``this run``.
        target: ``boxes`` (AP50 only, VOC07 11-point) or ``masks`` (mask AP25/50/70/75).
        ap: AP at IoU 0.25, 0.5, 0.7, 0.75 on the test split (None: not measured).
        full_ap50: the same architecture trained on ground truth (the upper bound), AP50.
        ratio: ``ap50 / full_ap50``.
    """

    architecture: str
    run: str
    target: str
    ap: tuple[float | None, float | None, float | None, float | None]
    full_ap50: float | None
    ratio: float | None


def _ratio(res: Mapping[str, Any], key: str, weak: str, full: str) -> float | None:
    """``res[key]``, or ``weak / full`` when the results predate the key (an older run's
    ``results.json`` has no ``weak_full_mask_ratio``)."""
    if res.get(key) is not None:
        return float(res[key])
    if res.get(weak) is not None and res.get(full):
        return float(res[weak]) / float(res[full])
    return None


def _rows(res: Mapping[str, Any], families: Mapping[str, str], run: str) -> list[ComparisonRow]:
    box_family, mask_family = families.get("retrain", "rcnn"), families.get("wsis", "rcnn")
    b, m = result_suffix(box_family), result_suffix(mask_family)
    box = ComparisonRow(
        display_name(box_family),
        run,
        "boxes",
        (None, res.get("retrain_ap50" + b), None, None),
        res.get("upper_bound_ap50" + b),
        _ratio(res, "weak_full_ratio" + b, "retrain_ap50" + b, "upper_bound_ap50" + b),
    )
    mask = ComparisonRow(
        display_name(mask_family, masks=True),
        run,
        "masks",
        (
            res.get(f"wsis_ap25{m}"),
            res.get(f"wsis_ap50{m}"),
            res.get(f"wsis_ap70{m}"),
            res.get(f"wsis_ap75{m}"),
        ),
        res.get("upper_bound_mask_ap50" + m),
        _ratio(res, "weak_full_mask_ratio" + m, f"wsis_ap50{m}", "upper_bound_mask_ap50" + m),
    )
    return [box, mask]


def comparison_rows(results: Mapping[str, Any]) -> list[ComparisonRow]:
    """The upstream's detectors beside this run's (:func:`add_upstream`), boxes then masks,
    the upstream's first; rows without any figure are left out; none without ``upstream``."""
    up = results.get("upstream")
    if not up:
        return []
    theirs = _rows(up.get("results") or {}, up.get("families") or {}, "upstream")
    mine = _rows(results, results.get("families") or {}, "this run")
    rows = [theirs[0], mine[0], theirs[1], mine[1]]
    return [r for r in rows if any(v is not None for v in (*r.ap, r.full_ap50, r.ratio))]


def comparison_title(results: Mapping[str, Any]) -> str:
    """The comparison's title, saying whether both runs trained on the same PGT."""
    up = results.get("upstream") or {}
    test = (results.get("splits") or {}).get("test", "test")
    same = "from the same PGT" if up.get("same_pgt") else "NOT from the same PGT"
    return f"weak / full beside the upstream run's detectors, {same} ({test})"


COMPARISON_HEADERS: tuple[str, ...] = (
    "architecture",
    "run",
    "target",
    "AP25",
    "AP50",
    "AP70",
    "AP75",
    "fully supervised AP50",
    "weak / full",
)


def comparison_table(results: Mapping[str, Any]) -> str:
    """:func:`comparison_rows` as a printed table (``""`` when there is none)."""
    rows = comparison_rows(results)
    if not rows:
        return ""
    cells = [[r.architecture, r.run, r.target, *r.ap, r.full_ap50, r.ratio] for r in rows]
    return format_table(cells, list(COMPARISON_HEADERS), title=comparison_title(results))
