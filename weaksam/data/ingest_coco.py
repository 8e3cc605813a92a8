"""Ingest a COCO-format dataset (``instances_*.json``) into MANIFEST rows.

* ``image_id`` = ``str(id)``, ``image_index`` = the COCO image id, ``path`` = absolute path (or
  URI) of ``<images_root>/<file_name>``. The json and the images may be local or on an object
  store (``s3://``, through :mod:`weaksam.storage`).
* Classes: :meth:`ClassMap.from_coco_categories` (project ids follow sorted COCO ids; the COCO
  ids travel in the class map).
* Image-level labels: the categories of the image's instances (crowd regions included), or,
  when ``image_labels_json`` (``{file_name: [class names]}``) is given, those names instead.
* Ground truth (evaluation only): ``bbox`` XYWH -> XYXY; ``gt_difficult`` = ``iscrowd`` or a
  ``difficult`` or ``ignore`` key; ``gt_masks`` from polygons or RLE (compressed or not),
  one per object, or null for the image when some object has no ``segmentation``.
* The json's ``width``/``height`` must match the decoded image (after EXIF orientation), else
  the image is an error row: its boxes would be in another frame.
"""

from __future__ import annotations

import json
import logging
import os
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from weaksam import storage
from weaksam.data.imageio import DEFAULT_MAX_PIXELS
from weaksam.data.ingest_core import ImageRecord, build_rows, check_unique_index, image_location
from weaksam.data.ingest_core import is_training_split as _is_training_split
from weaksam.geometry.boxes import xywh_to_xyxy
from weaksam.io.classes import ClassMap
from weaksam.io.rle import from_json_rle, polygons_to_rle

log = logging.getLogger(__name__)


def read_json(path: str, what: str) -> Any:
    """Load a json file (a local path or a URI); ``FileNotFoundError``/``ValueError`` naming
    ``what`` and the path."""
    try:
        return json.loads(storage.read_bytes(path).decode("utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{what} {path} is not valid json: {exc}") from exc


def ingest_coco(
    images_root: str,
    annotations_json: str,
    split: str,
    image_labels_json: str | None = None,
    *,
    training: bool | None = None,
    allow_empty_labels: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    verify: bool = True,
    num_workers: int | None = None,
    ray_chunk: int = 0,
    progress: bool = False,
) -> tuple[list[dict[str, Any]], ClassMap]:
    """MANIFEST rows of one split of a COCO dataset, and its class map.

    Args:
        images_root: folder that ``file_name`` entries are relative to.
        annotations_json: COCO instances json (``images``, ``categories``, ``annotations``).
        split: split name stored in every row.
        image_labels_json: optional ``{file_name: [class names]}`` overriding the labels.
        training: whether an image without labels is an error; default: ``split`` starts
            with ``"train"``.
        allow_empty_labels, max_pixels, verify, num_workers, progress, ray_chunk: see
            :func:`weaksam.data.ingest_core.build_rows`.

    Raises:
        FileNotFoundError: a json file is missing. ``ValueError``: malformed json, no
        categories, or duplicate image ids.
    """
    data = read_json(annotations_json, "COCO annotation file")
    if not isinstance(data, dict) or not data.get("categories"):
        raise ValueError(f"{annotations_json} has no 'categories' list; is it a COCO json?")
    classes = ClassMap.from_coco_categories(data["categories"])
    explicit = _read_image_labels(image_labels_json) if image_labels_json else None

    anns_by_image: dict[int, list[Mapping[str, Any]]] = defaultdict(list)
    for ann in data.get("annotations") or []:
        anns_by_image[int(ann["image_id"])].append(ann)
    orphans = set(anns_by_image) - {int(img["id"]) for img in data.get("images") or []}
    if orphans:
        n = sum(len(anns_by_image[i]) for i in orphans)
        log.warning("%s: %d annotations refer to %d image ids not in 'images'; ignored",
                    annotations_json, n, len(orphans))  # fmt: skip

    records = []
    for img in data.get("images") or []:
        file_name = str(img["file_name"])
        rec = ImageRecord(
            image_id=str(img["id"]),
            image_index=int(img["id"]),
            path=image_location(images_root, file_name),
            split=split,
        )
        h, w = int(img.get("height") or 0), int(img.get("width") or 0)
        if h > 0 and w > 0:
            rec.annot_size = (h, w)
        _fill_ground_truth(rec, anns_by_image.get(rec.image_index, []), classes)
        if explicit is not None and rec.error is None:
            names = explicit.get(file_name, explicit.get(os.path.basename(file_name), []))
            _set_named_labels(rec, names, classes)
        records.append(rec)

    rows = build_rows(
        records,
        training=_is_training_split(split) if training is None else training,
        allow_empty_labels=allow_empty_labels,
        max_pixels=max_pixels,
        verify=verify,
        num_workers=num_workers,
        ray_chunk=ray_chunk,
        progress=progress,
        desc=f"ingest {split}",
    )
    check_unique_index(rows)
    return rows, classes


def _read_image_labels(path: str) -> dict[str, list[str]]:
    obj = read_json(path, "image-labels file")
    if not isinstance(obj, dict):
        raise ValueError(f"{path} must map file names to lists of class names")
    out: dict[str, list[str]] = {}
    for key, names in obj.items():
        if isinstance(names, str):
            names = [names]
        if not isinstance(names, list):
            raise ValueError(f"{path}: labels of {key!r} must be a list of class names")
        out[str(key)] = [str(n) for n in names]
    return out


def _set_named_labels(rec: ImageRecord, names: Sequence[str], classes: ClassMap) -> None:
    rec.labels = []
    for name in names:
        try:
            rec.labels.append(classes.index(name))
        except KeyError:
            rec.error = rec.error or f"unknown class {name!r}"


def _fill_ground_truth(
    rec: ImageRecord, anns: Sequence[Mapping[str, Any]], classes: ClassMap
) -> None:
    """Boxes, classes, difficult flags, labels and the deferred mask builder of one image."""
    boxes: list[list[float]] = []
    for ann in anns:
        try:
            cls = classes.from_source_id(int(ann["category_id"]))
        except KeyError:
            rec.error = f"unknown category id {ann['category_id']}"
            return
        bbox = ann.get("bbox")
        if not isinstance(bbox, list | tuple) or len(bbox) != 4:
            rec.error = f"annotation {ann.get('id')} has no valid bbox"
            return
        boxes.append([float(v) for v in bbox])
        rec.gt_classes.append(cls)
        flags = (ann.get("iscrowd"), ann.get("difficult"), ann.get("ignore"))
        rec.gt_difficult.append(any(bool(f) for f in flags))
    rec.labels = list(rec.gt_classes)
    rec.gt_boxes = xywh_to_xyxy(np.asarray(boxes, dtype=np.float32).reshape(-1, 4))
    segs = [ann.get("segmentation") for ann in anns]
    if all(s is not None for s in segs):
        rec.gt_masks = lambda h, w: _segs_to_rles(segs, h, w)


def _segs_to_rles(segs: Sequence[Any], height: int, width: int) -> list[bytes]:
    out = []
    for seg in segs:
        if isinstance(seg, dict):
            counts, h, w = from_json_rle(seg)
            if (h, w) != (height, width):
                raise ValueError(f"RLE of size {w}x{h} (WxH) on an image of {width}x{height}")
            out.append(counts)
        else:
            out.append(polygons_to_rle(seg, height, width))
    return out
