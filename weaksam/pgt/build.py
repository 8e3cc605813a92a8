"""Pseudo ground truth for a whole split: detections + image-level labels → ``pgt`` rows.

Detections come from a ``detections`` table (file or folder) or a COCO results json; labels
from :mod:`weaksam.pgt.labels`. Each image of the label set gets one ``pgt`` row:

* the rule's boxes (:func:`weaksam.pgt.rules.make_pgt`), scores and classes; ``masks`` null
  (the SAM job of :mod:`weaksam.pgt.job` fills them);
* an error row when the image's labels or detections carry an error;
* an empty row (no error) when the image has no detections or none of a labelled class.

With ``only_detected`` the images without any detections row are left out instead (the CLI's
default when no split is named, so a detections file of one split can be used with a
manifest of all splits).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from weaksam import storage
from weaksam.geometry.boxes import as_boxes, xywh_to_xyxy
from weaksam.io.classes import ClassMap
from weaksam.io.schemas import empty_row, error_row
from weaksam.io.tables import read_classes, read_table
from weaksam.pgt.labels import LabelSet
from weaksam.pgt.rules import PGTConfig, make_pgt


@dataclass(frozen=True)
class ImageDetections:
    """One image's detections: ``boxes`` ``Nx4`` XYXY, ``scores`` ``N``, ``classes`` ``N``
    (project ids); ``error`` ``""`` or the reason."""

    boxes: npt.NDArray[np.float32]
    scores: npt.NDArray[np.float32]
    classes: npt.NDArray[np.int64]
    error: str = ""


def read_detections_table(path: str, classes: ClassMap) -> dict[str, ImageDetections]:
    """``image_id → detections`` of a detections table; its class map must equal ``classes``."""
    tbl = read_table(path, "detections", columns=None)
    try:
        own = read_classes(tbl)
    except ValueError:
        own = classes
    if own.names != classes.names:
        raise ValueError(
            f"detections classes {list(own.names)} differ from the labels' {list(classes.names)}"
        )
    out: dict[str, ImageDetections] = {}
    for r in tbl.to_pylist():
        out[str(r["image_id"])] = ImageDetections(
            as_boxes(r["boxes"] or []),
            np.asarray(r["scores"] or [], np.float32),
            np.asarray(r["classes"] or [], np.int64),
            str(r["error"] or ""),
        )
    return out


def read_coco_detections(obj_or_path: Any, labels: LabelSet) -> dict[str, ImageDetections]:
    """``image_id → detections`` of a COCO results json (``image_id`` = the labels'
    ``image_index``, ``category_id`` a source id of the labels' class map, ``bbox`` XYWH);
    a path is a location (local, ``file://`` or ``s3://``)."""
    data = storage.read_json(obj_or_path) if isinstance(obj_or_path, str) else obj_or_path
    if not isinstance(data, list):
        raise ValueError("a COCO results json is a list of detections")
    by_index = labels.by_index()
    per: dict[str, list[Mapping[str, Any]]] = {}
    unknown = set()
    for res in data:
        im = by_index.get(int(res["image_id"]))
        if im is None:
            unknown.add(int(res["image_id"]))
            continue
        per.setdefault(im.image_id, []).append(res)
    if unknown:
        raise ValueError(f"{len(unknown)} result image ids are unknown, e.g. {sorted(unknown)[:5]}")
    out: dict[str, ImageDetections] = {}
    for image_id, results in per.items():
        out[image_id] = ImageDetections(
            xywh_to_xyxy([r["bbox"] for r in results]),
            np.asarray([float(r["score"]) for r in results], np.float32),
            np.asarray(
                [labels.classes.from_source_id(int(r["category_id"])) for r in results], np.int64
            ),
        )
    return out


def read_detections(path: str, labels: LabelSet) -> dict[str, ImageDetections]:
    """A COCO results json (``*.json``) or a detections Parquet file/folder."""
    if path.lower().endswith(".json"):
        return read_coco_detections(path, labels)
    return read_detections_table(path, labels.classes)


def build_pgt_rows(
    detections: Mapping[str, ImageDetections],
    labels: LabelSet,
    cfg: PGTConfig,
    only_detected: bool = False,
) -> list[dict[str, Any]]:
    """One ``pgt`` row per image of ``labels`` (see the module docstring), in label order."""
    rows: list[dict[str, Any]] = []
    for image_id, im in labels.images.items():
        det = detections.get(image_id)
        if det is None and only_detected:
            continue
        size = {"height": im.height, "width": im.width}
        error = im.error or (det.error if det is not None else "")
        if error:
            rows.append(error_row("pgt", image_id, im.image_index, error, **size))
            continue
        if det is None or not im.labels:
            rows.append(empty_row("pgt", image_id, im.image_index, **size))
            continue
        pgt = make_pgt(det.boxes, det.scores, det.classes, im.labels, cfg)
        rows.append(
            empty_row(
                "pgt",
                image_id,
                im.image_index,
                **size,
                boxes=pgt.boxes.reshape(-1).tolist(),
                scores=pgt.scores.tolist(),
                classes=pgt.classes.tolist(),
            )
        )
    return rows
