"""The figure sections of the run report (:mod:`weaksam.pipeline.report`).

Each section reads one or more stages' outputs from the run folder, links a picture the stage
already drew or draws a new one into ``<run>/report/``, and lists what it had to leave out.
Sample images are the first good rows of a split by ``image_index`` (deterministic); images
are shrunk to ``max_side`` before drawing so labels stay readable.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from weaksam import storage
from weaksam.data.imageio import ImageDecodeError, load_image
from weaksam.detection.family_names import display_name
from weaksam.eval.formats import load_detections_table, load_manifest_gt
from weaksam.eval.mask_ap import mask_pr_curves
from weaksam.eval.voc import ap_from_curves, eval_detection_voc, nanmean
from weaksam.geometry.boxes import as_boxes
from weaksam.io.rle import decode_masks
from weaksam.io.tables import read_classes, read_table
from weaksam.runs import (
    METRICS,
    detections_path,
    manifest_path,
    pgt_path,
    points_path,
    proposals_path,
)
from weaksam.viz.draw import (
    class_color,
    contact_sheet,
    draw_boxes,
    draw_points,
    fit_image,
    fit_masks,
    overlay_masks,
    save_png,
)
from weaksam.viz.plots import PRCurve, PRPanel, plot_pr_curves

# paths relative to the run folder (the helpers joined to an empty run folder)
MANIFEST = manifest_path("")
POINTS = points_path("")
PROPOSALS = proposals_path("")
PGT = pgt_path("")
_MANIFEST_COLUMNS = (
    "image_id",
    "image_index",
    "height",
    "width",
    "path",
    "split",
    "gt_boxes",
    "gt_classes",
    "error",
)
_GREY = (170, 170, 170)
UInt8Image = npt.NDArray[np.uint8]


@dataclass(frozen=True)
class FigureOptions:
    """What the sample figures show.

    Attributes:
        samples: images per figure of PGT (train split) and detections (test split).
        proposal_samples: images per split in the proposals figure.
        max_side: longest side of a drawn tile, pixels.
        top_proposals: proposals drawn per image, highest SAM score first.
        score_thresh: detections drawn are those scoring at least this ...
        max_detections: ... at most this many, highest first ...
        fallback_top: ... or, when none reaches the threshold, the best few.
    """

    samples: int = 4
    proposal_samples: int = 2
    max_side: int = 320
    top_proposals: int = 30
    score_thresh: float = 0.5
    max_detections: int = 12
    fallback_top: int = 3


@dataclass
class Section:
    """A part of the report: text lines, figures ``(path, caption)`` and left-out notes."""

    title: str
    text: list[str] = field(default_factory=list)
    figures: list[tuple[str, str]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


@dataclass
class SampleContext:
    """The run folder and lazily read manifest shared by the sections.

    ``missing(stage)`` is None when the stage completed, else the reason it did not.
    """

    run_dir: str
    fig_dir: str
    options: FigureOptions
    splits: tuple[str, ...] | None
    missing: Callable[[str], str | None]

    def path(self, rel: str) -> str:
        """The location of ``rel`` (``/``-separated) inside the run folder."""
        return storage.join(self.run_dir, rel)

    def need(self, stage: str, rel: str) -> str | None:
        """None when ``stage`` completed and ``rel`` exists, else why not."""
        reason = self.missing(stage)
        if reason is None and not storage.exists(self.path(rel)):
            reason = f"`{rel}` is missing"
        return reason

    def architecture(self, stage: str) -> str:
        """The detector of ``retrain`` / ``wsis`` by name (Faster R-CNN, RT-DETR, Mask R-CNN,
        Mask2Former): the ``family`` in the stage's metrics (R-CNN when absent)."""
        path = self.path(f"{stage}/{METRICS}")
        family = "rcnn"
        if storage.exists(path):
            family = str(storage.read_json(path).get("family") or "rcnn")
        return display_name(family, masks=stage == "wsis")

    @functools.cached_property
    def manifest(self) -> list[dict[str, Any]]:
        tbl = read_table(self.path(MANIFEST), columns=_MANIFEST_COLUMNS)
        return sorted(tbl.to_pylist(), key=lambda r: int(r["image_index"]))

    @functools.cached_property
    def names(self) -> tuple[str, ...]:
        return read_classes(self.path(MANIFEST)).names

    @functools.cached_property
    def train_test(self) -> tuple[str, str]:
        if self.splits:
            return self.splits[0], self.splits[-1]
        if self.need("ingest", MANIFEST) is not None:
            return "train", "test"
        seen = list(dict.fromkeys(str(r["split"]) for r in self.manifest))
        train = "train" if "train" in seen else seen[0]
        test = "test" if "test" in seen else seen[-1]
        return train, test

    def samples(
        self, split: str, n: int, having: Mapping[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        """The first ``n`` good manifest rows of ``split`` (and in ``having``, if given)."""
        rows = [
            r
            for r in self.manifest
            if r["split"] == split
            and r["error"] is None
            and (having is None or str(r["image_id"]) in having)
        ]
        return rows[:n]

    def name(self, c: int) -> str:
        return self.names[c] if 0 <= c < len(self.names) else str(c)


def _rows_by_id(
    path: str, ids: Sequence[str], columns: Sequence[str] | None = None
) -> dict[str, dict[str, Any]]:
    """The good rows of the table at ``path`` whose ``image_id`` is in ``ids``."""
    tbl = read_table(path, columns=columns)
    tbl = tbl.filter(pc.is_in(tbl.column("image_id"), value_set=pa.array(list(ids), pa.string())))
    return {str(r["image_id"]): r for r in tbl.to_pylist() if r.get("error") is None}


def _all_ids(path: str) -> dict[str, None]:
    tbl = read_table(path, columns=["image_id", "error"])
    return {
        str(i): None
        for i, e in zip(tbl["image_id"].to_pylist(), tbl["error"].to_pylist(), strict=True)
        if e is None
    }


# --------------------------------------------------------------------------- tiles


def _load(row: Mapping[str, Any], max_side: int, sec: Section) -> tuple[UInt8Image, float] | None:
    """The row's image fitted to ``max_side`` and its scale; None (noted in ``sec``) when the
    file cannot be read any more."""
    try:
        return fit_image(load_image(str(row["path"])), max_side)
    except ImageDecodeError as exc:
        sec.missing.append(f"image `{row['image_id']}`: {exc}")
        return None


def _gt_tile(ctx: SampleContext, img: UInt8Image, s: float, row: Mapping[str, Any]) -> UInt8Image:
    boxes = as_boxes(row.get("gt_boxes") or []) * s
    classes = [int(c) for c in row.get("gt_classes") or []]
    return draw_boxes(
        img, boxes, [ctx.name(c) for c in classes], colors=[class_color(c) for c in classes]
    )


def _objects_tile(
    ctx: SampleContext,
    img: UInt8Image,
    s: float,
    row: Mapping[str, Any],
    keep: npt.NDArray[np.intp],
) -> UInt8Image:
    """Boxes (and masks, when the row has them) of ``row``'s objects ``keep``, with labels."""
    boxes = as_boxes(row.get("boxes") or [])[keep] * s
    scores = np.asarray(row.get("scores") or [], dtype=np.float32)[keep]
    classes = [int(c) for c in np.asarray(row.get("classes") or [], dtype=np.int64)[keep]]
    colors = [class_color(c) for c in classes]
    masks = row.get("masks")
    if masks and keep.size:
        dense = decode_masks([masks[i] for i in keep], int(row["height"]), int(row["width"]))
        img = overlay_masks(img, fit_masks(dense, img.shape[0], img.shape[1]), colors=colors)
    return draw_boxes(img, boxes, [ctx.name(c) for c in classes], scores, colors)


def _top_detections(
    scores: Sequence[float], opts: FigureOptions
) -> tuple[npt.NDArray[np.intp], str]:
    sc = np.asarray(scores, dtype=np.float32)
    order = np.argsort(-sc, kind="stable")
    keep = order[sc[order] >= opts.score_thresh][: opts.max_detections]
    if keep.size:
        return keep, f"{keep.size} with score >= {opts.score_thresh:g}"
    keep = order[: opts.fallback_top]
    if not keep.size:
        return keep, "no detections"
    return keep, f"best {keep.size}, all < {opts.score_thresh:g}"


def _save(
    ctx: SampleContext, name: str, tiles: list[UInt8Image], titles: list[str], ncols: int
) -> str:
    rel = f"{ctx.fig_dir}/{name}"
    save_png(ctx.path(rel), contact_sheet(tiles, ncols, titles=titles))
    return rel


def _stage_figure(
    ctx: SampleContext, sec: Section, stage: str, rel: str, caption: str, what: str
) -> None:
    """Add a stage's own picture ``rel`` (run-relative) to ``sec`` with ``caption``, or, where
    the stage or the file is missing, say why under ``what``."""
    reason = ctx.need(stage, rel)
    if reason is None:
        sec.figures.append((rel, caption))
    else:
        sec.missing.append(f"{what}: {reason}")


# --------------------------------------------------------------------------- sections


def data_section(ctx: SampleContext) -> Section:
    sec = Section("Data")
    metrics_path = ctx.path("ingest/metrics.json")
    if ctx.need("ingest", MANIFEST) is None and storage.exists(metrics_path):
        m = storage.read_json(metrics_path)
        splits = ", ".join(
            f"{k} {v.get('images', 0)} images ({v.get('errors', 0)} error rows)"
            for k, v in (m.get("splits") or {}).items()
        )
        names = ", ".join(m.get("classes") or [])
        sec.text.append(f"Manifest: {splits}; {m.get('num_classes', '?')} classes: {names}.")
    else:
        sec.missing.append(f"the manifest summary: {ctx.need('ingest', MANIFEST)}")
    _stage_figure(
        ctx,
        sec,
        "data",
        "data/contact_sheet.png",
        "Synthetic images (titled split/file) with their ground truth.",
        "the contact sheet of the synthetic data",
    )
    return sec


def peaks_section(ctx: SampleContext) -> Section:
    sec = Section("Class activation maps and peak points")
    _stage_figure(
        ctx,
        sec,
        "peaks",
        "peaks/peaks.png",
        "Class maps (max over the image's classes) of images of split "
        f"`{ctx.train_test[1]}` with their peak points, per map kind.",
        "the class-map picture",
    )
    return sec


def proposals_section(ctx: SampleContext) -> Section:
    sec = Section("Proposals and peak points")
    reason = ctx.need("proposals", PROPOSALS) or ctx.need("ingest", MANIFEST)
    if reason is not None:
        sec.missing.append(f"the proposals figure: {reason}")
        return sec
    opts = ctx.options
    train, test = ctx.train_test
    rows = []
    for split in dict.fromkeys((train, test)):
        rows += ctx.samples(split, opts.proposal_samples)
    ids = [str(r["image_id"]) for r in rows]
    props = _rows_by_id(
        ctx.path(PROPOSALS), ids, ["image_id", "boxes", "scores", "class_hints", "error"]
    )
    points_reason = ctx.need("peaks", POINTS)
    points: dict[str, dict[str, Any]] = {}
    if points_reason is None:
        points = _rows_by_id(
            ctx.path(POINTS), ids, ["image_id", "points", "point_classes", "error"]
        )
    else:
        sec.missing.append(f"peak points: {points_reason}")
    tiles: list[UInt8Image] = []
    titles: list[str] = []
    for row in rows:
        iid = str(row["image_id"])
        loaded = _load(row, opts.max_side, sec)
        if loaded is None:
            continue
        img, s = loaded
        tiles.append(_gt_tile(ctx, img, s, row))
        titles.append(f"{row['split']} {iid}: ground truth")
        if points_reason is None:
            p = points.get(iid, {})
            xy = np.asarray(p.get("points") or [], dtype=np.float32).reshape(-1, 2) * s
            pcls = [int(c) for c in p.get("point_classes") or []]
            cols = [class_color(c) if c >= 0 else (255, 255, 255) for c in pcls]
            tiles.append(draw_points(img, xy, colors=cols))
            titles.append(f"peak points ({len(pcls)})")
        pr = props.get(iid, {})
        sc = np.asarray(pr.get("scores") or [], dtype=np.float32)
        top = np.argsort(-sc, kind="stable")[: opts.top_proposals]
        hints = [int(h) for h in np.asarray(pr.get("class_hints") or [], np.int64)[top]]
        cols = [class_color(h) if h >= 0 else _GREY for h in hints]
        boxes = as_boxes(pr.get("boxes") or [])[top] * s
        tiles.append(draw_boxes(img, boxes, colors=cols, width=1))
        titles.append(f"proposals: best {top.size} of {sc.size}")
    if not tiles:
        sec.missing.append("the proposals figure: no good manifest rows")
        return sec
    ncols = 3 if points_reason is None else 2
    rel = _save(ctx, "proposals.png", tiles, titles, ncols)
    sec.figures.append(
        (
            rel,
            "Per image: ground truth; peak points in their class colours; the "
            f"{opts.top_proposals} best proposals by SAM score, coloured by the class of the "
            f"prompting point (grey: none). Splits `{train}` then `{test}`.",
        )
    )
    return sec


def wsod_section(ctx: SampleContext) -> Section:
    sec = Section("Weakly-supervised detector (WSOD) training")
    _stage_figure(
        ctx,
        sec,
        "wsod",
        "wsod/curves.png",
        f"WSOD loss terms and learning rate per step (training on split `{ctx.train_test[0]}`).",
        "the WSOD training curves",
    )
    return sec


def pgt_section(ctx: SampleContext) -> Section:
    sec = Section("Pseudo ground truth (PGT)")
    reason = ctx.need("pgt", PGT) or ctx.need("ingest", MANIFEST)
    if reason is not None:
        sec.missing.append(f"the PGT figure: {reason}")
        return sec
    opts = ctx.options
    train, _ = ctx.train_test
    rows = ctx.samples(train, opts.samples, _all_ids(ctx.path(PGT)))
    pgt = _rows_by_id(ctx.path(PGT), [str(r["image_id"]) for r in rows])
    tiles: list[UInt8Image] = []
    titles: list[str] = []
    for row in rows:
        iid = str(row["image_id"])
        loaded = _load(row, opts.max_side, sec)
        if loaded is None:
            continue
        img, s = loaded
        tiles.append(_gt_tile(ctx, img, s, row))
        titles.append(f"{train} {iid}: ground truth (hidden)")
        p = pgt[iid]
        keep = np.arange(len(p.get("scores") or []))
        tiles.append(_objects_tile(ctx, img, s, p, keep))
        titles.append(f"PGT: {keep.size} objects" + (", SAM masks" if p.get("masks") else ""))
    if not tiles:
        sec.missing.append(f"the PGT figure: no good PGT rows of split `{train}`")
        return sec
    rel = _save(ctx, "pgt.png", tiles, titles, 4)
    sec.figures.append(
        (
            rel,
            "Training images: hidden ground truth next to the PGT boxes (and SAM masks) "
            "with the detector score that selected them.",
        )
    )
    return sec


def detections_section(ctx: SampleContext) -> Section:
    sec = Section("Final detections")
    _, test = ctx.train_test
    detectors = [("wsod", "WSOD"), *((s, ctx.architecture(s)) for s in ("retrain", "wsis"))]
    rel_of = {stage: detections_path("", stage, test) for stage, _ in detectors}
    avail = []
    for stage, label in detectors:
        reason = ctx.need(stage, rel_of[stage])
        if reason is None:
            avail.append((stage, label))
        else:
            sec.missing.append(f"{label} detections: {reason}")
    if not any(stage in ("retrain", "wsis") for stage, _ in avail):
        sec.missing.append("the detections figure: neither final detector ran")
        return sec
    reason = ctx.need("ingest", MANIFEST)
    if reason is not None:
        sec.missing.append(f"the detections figure: {reason}")
        return sec
    opts = ctx.options
    rows = ctx.samples(test, opts.samples)
    ids = [str(r["image_id"]) for r in rows]
    dets = {stage: _rows_by_id(ctx.path(rel_of[stage]), ids) for stage, _ in avail}
    tiles: list[UInt8Image] = []
    titles: list[str] = []
    for row in rows:
        iid = str(row["image_id"])
        loaded = _load(row, opts.max_side, sec)
        if loaded is None:
            continue
        img, s = loaded
        tiles.append(_gt_tile(ctx, img, s, row))
        titles.append(f"{test} {iid}: ground truth")
        for stage, label in avail:
            d = dets[stage].get(iid, {})
            keep, note = _top_detections(d.get("scores") or [], opts)
            tiles.append(_objects_tile(ctx, img, s, d, keep))
            titles.append(f"{label}: {note}")
    if not tiles:
        sec.missing.append(f"the detections figure: no good manifest rows of split `{test}`")
        return sec
    rel = _save(ctx, "detections.png", tiles, titles, 1 + len(avail))
    sec.figures.append(
        (
            rel,
            f"Test images: ground truth, then each detector's detections scoring at least "
            f"{opts.score_thresh:g} (the best {opts.fallback_top} when none does); "
            f"{ctx.architecture('wsis')} with its masks.",
        )
    )
    return sec


def _curves(
    ctx: SampleContext,
    precision: Sequence[npt.NDArray[np.float64]],
    recall: Sequence[npt.NDArray[np.float64]],
    npos: npt.NDArray[np.int64],
    ap: npt.NDArray[np.float64],
) -> list[PRCurve]:
    return [
        PRCurve(f"{ctx.name(c)} AP {ap[c]:.2f} ({int(npos[c])} GT)", recall[c], precision[c], c)
        for c in range(len(precision))
        if npos[c] > 0
    ]


def pr_section(ctx: SampleContext) -> Section:
    _, test = ctx.train_test
    sec = Section(f"Precision-recall on split `{test}`")
    panels: list[PRPanel] = []
    gt = None
    for stage in ("retrain", "wsis"):
        label = f"{ctx.architecture(stage)} ({stage})"
        rel = detections_path("", stage, test)
        reason = ctx.need(stage, rel) or ctx.need("ingest", MANIFEST)
        if reason is not None:
            sec.missing.append(f"{label} curves: {reason}")
            continue
        gt = gt or load_manifest_gt(ctx.path(MANIFEST), split=test)
        num_classes = gt.classes.num_classes
        dets = load_detections_table(ctx.path(rel)).records
        voc = eval_detection_voc(gt.records, dets, num_classes, 0.5, use_07_metric=True)
        panels.append(
            PRPanel(
                f"{label} on {test}, boxes, IoU > 0.5\nmAP {voc.map:.3f} (VOC07 11-point)",
                _curves(ctx, voc.precision, voc.recall, voc.npos, voc.ap),
            )
        )
        if stage == "wsis":
            if any(g.masks is None for g in gt.records):
                sec.missing.append("mask curves: the manifest has no ground-truth masks")
                continue
            prec, rec, npos = mask_pr_curves(gt.records, dets, num_classes, 0.5)
            ap = ap_from_curves(prec, rec, npos, use_07_metric=False)
            panels.append(
                PRPanel(
                    f"{label} on {test}, masks, IoU >= 0.5\n"
                    f"mask AP50 {nanmean(ap):.3f} (all-point)",
                    _curves(ctx, prec, rec, npos, ap),
                )
            )
    if not panels:
        return sec
    rel = f"{ctx.fig_dir}/pr_curves.png"
    plot_pr_curves(panels, ctx.path(rel))
    sec.figures.append(
        (
            rel,
            f"Per-class precision-recall of the final detectors on split `{test}` (the "
            "legend gives each class's AP and ground-truth count).",
        )
    )
    return sec


def sections(ctx: SampleContext) -> list[tuple[str, Callable[[], Section]]]:
    """The figure sections in report order, each as ``(title, build)``."""
    makers = (
        ("Data", data_section),
        ("Class activation maps and peak points", peaks_section),
        ("Proposals and peak points", proposals_section),
        ("Weakly-supervised detector (WSOD) training", wsod_section),
        ("Pseudo ground truth (PGT)", pgt_section),
        ("Final detections", detections_section),
        ("Precision-recall on the test split", pr_section),
    )
    return [(title, functools.partial(make, ctx)) for title, make in makers]
