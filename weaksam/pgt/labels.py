"""Image-level labels for pseudo ground truth: from a manifest or a COCO json, never the GT.

The PGT step is weakly supervised: it may know each image's class tags, size and path, and
nothing else. :func:`read_labels` therefore reads only :data:`LABEL_COLUMNS` of a manifest
(never ``gt_*``), and from a COCO instances json only each annotation's ``image_id`` and
``category_id`` (the set of categories present = the image's tags; boxes, masks and areas are
not looked at).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from weaksam import storage
from weaksam.io.classes import ClassMap
from weaksam.io.tables import read_classes, read_table

LABEL_COLUMNS = ("image_id", "image_index", "height", "width", "path", "split", "labels", "error")


@dataclass(frozen=True)
class ImageLabels:
    """One image's tags: ``labels`` are sorted project class ids; ``error`` is ``""`` when
    the image is usable, else the reason (from ingest)."""

    image_id: str
    image_index: int
    height: int
    width: int
    path: str
    labels: tuple[int, ...]
    error: str = ""


@dataclass(frozen=True)
class LabelSet:
    """Images (by ``image_id``, in source order) and the class map."""

    images: dict[str, ImageLabels]
    classes: ClassMap

    def by_index(self) -> dict[int, ImageLabels]:
        """``image_index → labels`` (the COCO ``image_id`` of results files)."""
        return {im.image_index: im for im in self.images.values()}


def read_manifest_labels(path: str, split: str | None = None) -> LabelSet:
    """Labels of a manifest table (file or folder), only the rows of ``split`` if given."""
    tbl = read_table(path, "manifest", columns=LABEL_COLUMNS)
    images: dict[str, ImageLabels] = {}
    for r in tbl.to_pylist():
        if split is not None and r["split"] != split:
            continue
        images[str(r["image_id"])] = ImageLabels(
            str(r["image_id"]),
            int(r["image_index"]),
            int(r["height"] or 0),
            int(r["width"] or 0),
            str(r["path"] or ""),
            tuple(sorted({int(c) for c in r["labels"] or []})),
            str(r["error"] or ""),
        )
    return LabelSet(images, read_classes(path))


def read_coco_labels(obj_or_path: Mapping[str, Any] | str, image_root: str = "") -> LabelSet:
    """Labels of a COCO instances json: an image's tags are the categories of its annotations.

    ``image_id`` is ``str(id)`` and ``image_index`` the COCO id; ``path`` is ``file_name``
    joined to ``image_root`` (when given and the name is relative). The json and the root are
    locations (local, ``file://`` or ``s3://``).
    """
    data = storage.read_json(obj_or_path) if isinstance(obj_or_path, str) else obj_or_path
    classes = ClassMap.from_coco_categories(data.get("categories", []))
    tags: dict[int, set[int]] = {int(img["id"]): set() for img in data.get("images", [])}
    for ann in data.get("annotations", []):
        img = int(ann["image_id"])
        if img not in tags:
            raise ValueError(f"annotation {ann.get('id')} names unknown image {img}")
        tags[img].add(classes.from_source_id(int(ann["category_id"])))
    images: dict[str, ImageLabels] = {}
    for img in data.get("images", []):
        idx = int(img["id"])
        name = str(img.get("file_name", ""))
        relative = not (os.path.isabs(name) or storage.is_uri(name))
        path = storage.join(image_root, name) if image_root and relative else name
        images[str(idx)] = ImageLabels(
            str(idx),
            idx,
            int(img["height"]),
            int(img["width"]),
            path,
            tuple(sorted(tags[idx])),
            "" if tags[idx] else "no image-level label",
        )
    return LabelSet(images, classes)


def read_labels(path: str, split: str | None = None, image_root: str = "") -> LabelSet:
    """A COCO instances json (``*.json``) or a manifest Parquet file/folder."""
    if path.lower().endswith(".json"):
        return read_coco_labels(path, image_root)
    return read_manifest_labels(path, split)
