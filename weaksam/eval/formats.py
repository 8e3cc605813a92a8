"""Loading records from the project's tables and COCO json files, and exporting them as COCO.

* Ground truth: a ``manifest`` table (:func:`load_manifest_gt`) or a COCO instances json
  (:func:`load_coco_gt`).
* Detections: a ``detections`` / ``pgt`` / ``proposals`` table (:func:`load_detections_table`)
  or a COCO results json (:func:`load_coco_results`).
* Export: :func:`gt_to_coco` (COCO instances json) and :func:`detections_to_coco_results`.

COCO ``image_id`` is the record's ``image_index``; ``category_id`` the class map's source id;
``bbox`` is ``[x, y, w, h]`` with ``w = x2 - x1`` (continuous convention, as pycocotools).
A COCO image's ``image_id`` string is ``str(id)``. An annotation is difficult when it has
``"difficult": 1``, ``"iscrowd": 1`` or ``"ignore": 1``; on export difficult becomes
``iscrowd = 1`` so that COCOeval ignores it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from weaksam import storage
from weaksam.eval.records import (
    Detections,
    DetectionSet,
    GroundTruth,
    GroundTruthSet,
    IdMismatchError,
)
from weaksam.geometry.boxes import as_boxes, box_area, xywh_to_xyxy, xyxy_to_xywh
from weaksam.io.classes import ClassMap
from weaksam.io.rle import from_json_rle, polygons_to_rle, rle_area, to_json_rle
from weaksam.io.tables import read_classes, read_table, table_name

DETECTION_TABLES = ("detections", "pgt", "proposals")


def _as_table(tbl_or_path: pa.Table | str) -> pa.Table:
    return read_table(tbl_or_path) if isinstance(tbl_or_path, str) else tbl_or_path


def _load_json(obj_or_path: Any) -> Any:
    """A parsed json object as is; a path or ``file://`` / ``s3://`` location read through
    :mod:`weaksam.storage`."""
    if isinstance(obj_or_path, str | os.PathLike):
        return storage.read_json(os.fspath(obj_or_path))
    return obj_or_path


# --------------------------------------------------------------------------- tables


def load_manifest_gt(tbl_or_path: pa.Table | str, split: str | None = None) -> GroundTruthSet:
    """Ground truth from a ``manifest`` table (a path to a file or a folder of shards).

    Rows with a non-null ``error`` and rows whose ``gt_boxes`` is null (no annotation) are
    skipped and listed in ``skipped``; rows of other splits are left out silently when
    ``split`` is given. ``gt_masks`` null gives ``masks=None``. Raises ``ValueError`` if the
    table is not a manifest or no row has ground truth.
    """
    tbl = _as_table(tbl_or_path)
    name = table_name(tbl)
    if name not in (None, "manifest"):
        raise ValueError(f"expected a manifest table for the ground truth, got {name!r}")
    classes = read_classes(tbl)
    records: list[GroundTruth] = []
    skipped: dict[str, str] = {}
    for row in tbl.to_pylist():
        if split is not None and row.get("split") != split:
            continue
        image_id = str(row["image_id"])
        if row.get("error") is not None:
            skipped[image_id] = f"error row: {row['error']}"
            continue
        if row.get("gt_boxes") is None:
            skipped[image_id] = "no ground truth"
            continue
        records.append(
            GroundTruth(
                image_id=image_id,
                image_index=int(row["image_index"]),
                height=int(row["height"] or 0),
                width=int(row["width"] or 0),
                boxes=as_boxes(row["gt_boxes"]),
                classes=np.asarray(row.get("gt_classes") or [], dtype=np.int64),
                difficult=np.asarray(
                    row.get("gt_difficult") or [False] * (len(row["gt_boxes"]) // 4), bool
                ),
                masks=row.get("gt_masks"),
            )
        )
    if not records:
        where = f" of split {split!r}" if split is not None else ""
        raise ValueError(f"the manifest has no rows{where} with ground truth")
    return GroundTruthSet(records=records, classes=classes, skipped=skipped)


def load_detections_table(tbl_or_path: pa.Table | str) -> DetectionSet:
    """Detections from a ``detections``, ``pgt`` or ``proposals`` table (file or folder).

    Proposals are class-agnostic: classes ``-1``, scores from ``scores``, stored order kept.
    Error rows give empty detections and are listed in ``errors``.
    """
    tbl = _as_table(tbl_or_path)
    kind = table_name(tbl)
    if kind not in DETECTION_TABLES:
        raise ValueError(f"expected one of the tables {DETECTION_TABLES}, got {kind!r}")
    try:
        classes: ClassMap | None = read_classes(tbl)
    except ValueError:
        classes = None
    records: list[Detections] = []
    errors: dict[str, str] = {}
    for row in tbl.to_pylist():
        image_id = str(row["image_id"])
        boxes = as_boxes(row.get("boxes") or [])
        if row.get("error") is not None:
            errors[image_id] = str(row["error"])
            boxes = boxes[:0]
        n = len(boxes)
        scores = row.get("scores") or []
        if kind == "proposals":
            cls = np.full(n, -1, dtype=np.int64)
        else:
            cls = np.asarray(row.get("classes") or [], dtype=np.int64)[:n]
        masks = row.get("masks")
        records.append(
            Detections(
                image_id=image_id,
                boxes=boxes,
                scores=np.asarray(scores, dtype=np.float32)[:n],
                classes=cls,
                masks=list(masks)[:n] if masks is not None else None,
                image_index=int(row["image_index"]),
                height=int(row.get("height") or 0),
                width=int(row.get("width") or 0),
            )
        )
    return DetectionSet(records=records, kind=kind, errors=errors, classes=classes)


# --------------------------------------------------------------------------- COCO json


def _segmentation_to_rle(segm: Any, height: int, width: int, where: str) -> bytes:
    if isinstance(segm, list):
        return polygons_to_rle(segm, height, width)
    if isinstance(segm, Mapping):
        counts, h, w = from_json_rle(dict(segm))
        if (h, w) != (height, width):
            raise ValueError(f"{where}: RLE sized {h}x{w}, image is {height}x{width}")
        return counts
    raise ValueError(f"{where}: unsupported segmentation of type {type(segm).__name__}")


def load_coco_gt(obj_or_path: Mapping[str, Any] | str) -> GroundTruthSet:
    """Ground truth from a COCO instances json (path or loaded dict).

    Every image is a record (``image_id = str(id)``, ``image_index = id``), in file order.
    Classes come from ``categories`` (project ids follow sorted category ids). Masks are kept
    when every annotation of the image has a ``segmentation`` (polygons or RLE), else the
    image's ``masks`` is ``None``; ``area`` is kept when every annotation has one.
    """
    data = _load_json(obj_or_path)
    classes = ClassMap.from_coco_categories(data.get("categories", []))
    per_image: dict[int, list[Mapping[str, Any]]] = {}
    images = data.get("images", [])
    for img in images:
        per_image[int(img["id"])] = []
    for ann in data.get("annotations", []):
        img_id = int(ann["image_id"])
        if img_id not in per_image:
            raise IdMismatchError(f"annotation {ann.get('id')} names unknown image {img_id}")
        per_image[img_id].append(ann)
    records: list[GroundTruth] = []
    for img in images:
        img_id, h, w = int(img["id"]), int(img["height"]), int(img["width"])
        anns = per_image[img_id]
        try:
            cls = [classes.from_source_id(int(a["category_id"])) for a in anns]
        except KeyError as exc:
            raise IdMismatchError(f"image {img_id}: {exc.args[0]}") from None
        boxes = xywh_to_xyxy([a["bbox"] for a in anns]) if anns else np.zeros((0, 4), np.float32)
        difficult = [
            bool(a.get("difficult", 0) or a.get("iscrowd", 0) or a.get("ignore", 0)) for a in anns
        ]
        masks: list[bytes] | None = None
        if all(a.get("segmentation") for a in anns):
            masks = [
                _segmentation_to_rle(a["segmentation"], h, w, f"annotation {a.get('id')}")
                for a in anns
            ]
        areas = [float(a["area"]) for a in anns] if all("area" in a for a in anns) else None
        records.append(
            GroundTruth(
                image_id=str(img_id),
                image_index=img_id,
                height=h,
                width=w,
                boxes=boxes,
                classes=np.asarray(cls, np.int64),
                difficult=np.asarray(difficult, dtype=bool),
                masks=masks,
                areas=np.asarray(areas, np.float32) if areas is not None else None,
            )
        )
    return GroundTruthSet(records=records, classes=classes)


def load_coco_results(
    obj_or_path: Sequence[Mapping[str, Any]] | str,
    gts: Sequence[GroundTruth],
    classes: ClassMap,
) -> DetectionSet:
    """Detections from a COCO results json: ``[{image_id, category_id, bbox, score, ...}]``.

    ``image_id`` is matched to the GT's ``image_index`` and ``category_id`` mapped through
    ``classes`` (source ids). A ``segmentation`` (RLE or polygons) becomes a mask; masks must
    be given for all results or none. File order is kept per image. Raises
    :class:`IdMismatchError` for unknown image or category ids.
    """
    data = _load_json(obj_or_path)
    if not isinstance(data, list):
        raise ValueError("a COCO results json is a list of detections")
    by_index = {g.image_index: g for g in gts}
    per_image: dict[int, list[Mapping[str, Any]]] = {}
    unknown: set[int] = set()
    for res in data:
        idx = int(res["image_id"])
        if idx not in by_index:
            unknown.add(idx)
            continue
        per_image.setdefault(idx, []).append(res)
    if unknown:
        shown = sorted(unknown)[:5]
        raise IdMismatchError(
            f"{len(unknown)} result image ids are not in the ground truth, e.g. {shown}"
        )
    with_masks = {bool(r.get("segmentation")) for r in data}
    if len(with_masks) > 1:
        raise ValueError("some results have a segmentation and some do not")
    records: list[Detections] = []
    for idx, results in per_image.items():
        g = by_index[idx]
        try:
            cls = [classes.from_source_id(int(r["category_id"])) for r in results]
        except KeyError as exc:
            raise IdMismatchError(f"image {idx}: {exc.args[0]}") from None
        masks = None
        if with_masks == {True}:
            masks = [
                _segmentation_to_rle(r["segmentation"], g.height, g.width, f"result for {idx}")
                for r in results
            ]
        records.append(
            Detections(
                image_id=g.image_id,
                boxes=xywh_to_xyxy([r["bbox"] for r in results]),
                scores=np.asarray([float(r["score"]) for r in results], np.float32),
                classes=np.asarray(cls, np.int64),
                masks=masks,
                image_index=g.image_index,
                height=g.height,
                width=g.width,
            )
        )
    return DetectionSet(records=records, kind="detections")


def _gt_areas(g: GroundTruth) -> np.ndarray:
    if g.areas is not None:
        return g.areas
    if g.masks is not None:
        return rle_area(g.masks, g.height, g.width)
    return box_area(g.boxes)


def gt_to_coco(gts: Sequence[GroundTruth], classes: ClassMap) -> dict[str, Any]:
    """A COCO instances json dict (JSON-serialisable) of ``gts``.

    Images: ``id = image_index``, ``file_name = image_id``. Annotations are numbered from 1;
    ``area`` is the record's area, else the mask area, else the box area; difficult objects
    get ``iscrowd = 1``; ``segmentation`` is a compressed RLE when the image has masks.
    """
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for g in gts:
        images.append(
            {
                "id": int(g.image_index),
                "file_name": g.image_id,
                "height": g.height,
                "width": g.width,
            }
        )
        xywh = xyxy_to_xywh(g.boxes)
        areas = _gt_areas(g)
        for k in range(len(g)):
            ann: dict[str, Any] = {
                "id": len(annotations) + 1,
                "image_id": int(g.image_index),
                "category_id": int(classes.source_ids[int(g.classes[k])]),
                "bbox": [float(v) for v in xywh[k]],
                "area": float(areas[k]),
                "iscrowd": int(g.difficult[k]),
            }
            if g.masks is not None:
                ann["segmentation"] = to_json_rle(g.masks[k], g.height, g.width)
            annotations.append(ann)
    return {"images": images, "annotations": annotations, "categories": classes.coco_categories()}


def detections_to_coco_results(
    dets: Sequence[Detections], classes: ClassMap
) -> list[dict[str, Any]]:
    """COCO results (JSON-serialisable): one dict per detection, in stored order.

    ``image_id`` is the record's ``image_index`` and ``category_id`` the source id; masks become
    ``segmentation`` RLEs (the record needs ``height``/``width``). Raises ``ValueError`` for a
    record without ``image_index`` or with class-agnostic (``-1``) detections.
    """
    out: list[dict[str, Any]] = []
    for d in dets:
        if len(d) == 0:
            continue
        if d.image_index < 0:
            raise ValueError(f"image {d.image_id!r}: detections without an image_index")
        if (d.classes < 0).any() or (d.classes >= classes.num_classes).any():
            raise ValueError(f"image {d.image_id!r}: class ids outside the class map")
        if d.masks is not None and (d.height <= 0 or d.width <= 0):
            raise ValueError(f"image {d.image_id!r}: masks without the image size")
        xywh = xyxy_to_xywh(d.boxes)
        for k in range(len(d)):
            res: dict[str, Any] = {
                "image_id": int(d.image_index),
                "category_id": int(classes.source_ids[int(d.classes[k])]),
                "bbox": [float(v) for v in xywh[k]],
                "score": float(d.scores[k]),
            }
            if d.masks is not None:
                res["segmentation"] = to_json_rle(d.masks[k], d.height, d.width)
            out.append(res)
    return out


# --------------------------------------------------------------------------- by path


def _is_json(path: str) -> bool:
    return path.lower().endswith(".json")


def load_ground_truth(path: str, split: str | None = None) -> GroundTruthSet:
    """Ground truth from a COCO instances json (``*.json``) or a manifest Parquet file/folder.

    ``split`` filters manifest rows (ignored for COCO json). Raises ``FileNotFoundError`` or
    ``ValueError``.
    """
    if _is_json(path):
        return load_coco_gt(path)
    return load_manifest_gt(read_table(path), split=split)


def load_detections(path: str, gt: GroundTruthSet) -> DetectionSet:
    """Detections from a COCO results json or a detections/pgt/proposals Parquet file/folder.

    Raises :class:`IdMismatchError` when the table's class names differ from the GT's, or (for
    a results json) when image or category ids are unknown.
    """
    if _is_json(path):
        return load_coco_results(path, gt.records, gt.classes)
    dets = load_detections_table(read_table(path))
    if dets.classes is not None and dets.kind != "proposals" and dets.classes != gt.classes:
        raise IdMismatchError(
            f"detections classes {list(dets.classes.names)} differ from the ground truth's "
            f"{list(gt.classes.names)}"
        )
    return dets
