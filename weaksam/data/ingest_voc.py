"""Ingest a Pascal VOC tree (``VOCdevkit/VOC2007``) into MANIFEST rows.

* ``ImageSets/Main/<split>.txt`` lists the ids; ``Annotations/<id>.xml`` gives the objects.
* Boxes: VOC's 1-based inclusive ``bndbox`` through :func:`weaksam.geometry.boxes.voc_to_xyxy`
  (``x1 = xmin - 1, x2 = xmax``); ``gt_difficult`` from ``<difficult>``; no masks.
* Image-level labels: the classes of all objects, difficult ones included (as the reference's
  ``cls_labels`` are built).
* The image is ``JPEGImages/<filename from the xml>``, falling back to ``<id>.jpg`` when the
  xml names none or a file that does not exist.
* ``image_index``: ``int(id)`` for numeric ids (VOC2012's ``2008_000002`` reads as
  ``2008000002``), else ``index_base`` + the id's position in the split file.
* An object of an unknown class, or a missing or unparsable xml, makes an error row.
* ``voc_root`` may be a local folder or a URI (``s3://``, through :mod:`weaksam.storage`);
  on an object store the xml files are fetched by a few threads and the image folder is listed
  once instead of asking for each file.
"""

from __future__ import annotations

import io
import os
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from weaksam import storage
from weaksam.data.imageio import DEFAULT_MAX_PIXELS
from weaksam.data.ingest_core import (
    ImageRecord,
    build_rows,
    check_unique_index,
    default_num_workers,
    image_location,
    is_training_split,
    parse_index,
)
from weaksam.geometry.boxes import voc_to_xyxy
from weaksam.io.classes import VOC_CLASSES, ClassMap


def read_split_ids(voc_root: str, split: str) -> list[str]:
    """Ids listed in ``ImageSets/Main/<split>.txt`` (first token per non-empty line)."""
    path = storage.join(voc_root, "ImageSets", "Main", f"{split}.txt")
    try:
        text = storage.read_text(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"VOC split file not found: {path}") from None
    return [ln.split()[0] for ln in io.StringIO(text) if ln.strip()]


def ingest_voc(
    voc_root: str,
    split: str,
    classes: Sequence[str] | ClassMap = VOC_CLASSES,
    *,
    index_base: int = 0,
    training: bool | None = None,
    allow_empty_labels: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    verify: bool = True,
    num_workers: int | None = None,
    ray_chunk: int = 0,
    progress: bool = False,
) -> tuple[list[dict[str, Any]], ClassMap]:
    """MANIFEST rows of one split of a VOC-style dataset, and the class map.

    Args:
        voc_root: the ``VOCxxxx`` folder (holding ``Annotations``, ``ImageSets``, ``JPEGImages``).
        split: split file name without ``.txt`` (``trainval``, ``test``, ...).
        classes: class names (project id order) or a ready :class:`ClassMap`.
        index_base: first running index for non-numeric ids.
        training, allow_empty_labels, max_pixels, verify, num_workers, progress, ray_chunk: see
            :func:`weaksam.data.ingest_coco.ingest_coco`.

    Raises:
        FileNotFoundError: the split file is missing. ``ValueError``: duplicate image indices.
    """
    cmap = classes if isinstance(classes, ClassMap) else ClassMap.from_names(list(classes))
    ids = read_split_ids(voc_root, split)
    exists = _exists_fn(voc_root)

    def one(pos: int) -> ImageRecord:
        return _read_record(voc_root, ids[pos], split, cmap, index_base + pos, exists)

    if storage.is_remote(voc_root) and len(ids) > 1:  # one request per xml: overlap them
        workers = default_num_workers() if num_workers is None else max(1, num_workers)
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="voc-xml") as pool:
            records = list(pool.map(one, range(len(ids))))
    else:
        records = [one(pos) for pos in range(len(ids))]
    rows = build_rows(
        records,
        training=is_training_split(split) if training is None else training,
        allow_empty_labels=allow_empty_labels,
        max_pixels=max_pixels,
        verify=verify,
        num_workers=num_workers,
        ray_chunk=ray_chunk,
        progress=progress,
        desc=f"ingest {split}",
    )
    check_unique_index(rows)
    return rows, cmap


def _exists_fn(voc_root: str) -> Callable[[str], bool]:
    """Whether an image location exists: ``os.path.exists`` locally; on an object store,
    membership in one listing of ``JPEGImages``."""
    if not storage.is_remote(voc_root):
        return lambda loc: os.path.exists(storage.resolve(loc)[1] if storage.is_uri(loc) else loc)
    images = storage.join(voc_root, "JPEGImages")
    listed = {storage.normalize(f) for f in storage.list_files(images, recursive=True)}
    return lambda loc: (
        loc in listed or (storage.basename(loc).startswith(("_", ".")) and storage.exists(loc))
    )


def _parse_xml(xml_path: str) -> ET.Element:
    if not storage.is_uri(xml_path):
        return ET.parse(xml_path).getroot()
    return ET.fromstring(storage.read_bytes(xml_path))


def _read_record(
    voc_root: str,
    image_id: str,
    split: str,
    classes: ClassMap,
    fallback_index: int,
    exists: Callable[[str], bool] = os.path.exists,
) -> ImageRecord:
    images = storage.join(voc_root, "JPEGImages")
    rec = ImageRecord(
        image_id=image_id,
        image_index=parse_index(image_id, fallback_index),
        path=image_location(images, f"{image_id}.jpg"),
        split=split,
    )
    xml_path = storage.join(voc_root, "Annotations", f"{image_id}.xml")
    try:
        root = _parse_xml(xml_path)
    except FileNotFoundError:
        rec.error = f"annotation file not found: Annotations/{image_id}.xml"
        return rec
    except (ET.ParseError, OSError) as exc:
        rec.error = f"invalid annotation xml: {exc}"
        return rec

    filename = (root.findtext("filename") or "").strip()
    named = image_location(images, filename) if filename else ""
    if named and (exists(named) or not exists(rec.path)):
        rec.path = named
    width = _number(root.findtext("size/width"))
    height = _number(root.findtext("size/height"))
    if width > 0 and height > 0:  # some VOC xmls say 0x0; then the image alone decides
        rec.annot_size = (int(height), int(width))

    boxes: list[list[float]] = []
    for k, obj in enumerate(root.iter("object")):
        name = (obj.findtext("name") or "").strip()
        try:
            cls = classes.index(name)
        except KeyError:
            rec.error = rec.error or f"unknown class {name!r}"
            continue
        rec.labels.append(cls)
        try:
            box = [
                float(obj.findtext(f"bndbox/{t}") or "") for t in ("xmin", "ymin", "xmax", "ymax")
            ]
        except ValueError:
            rec.error = rec.error or f"object {k} ({name}) has no valid bndbox"
            continue
        boxes.append(box)
        rec.gt_classes.append(cls)
        rec.gt_difficult.append(_number(obj.findtext("difficult")) > 0)
    rec.gt_boxes = voc_to_xyxy(np.asarray(boxes, dtype=np.float32).reshape(-1, 4))
    return rec


def _number(text: str | None) -> float:
    """A number from xml text (``"1"``, ``"1.0"``); missing or unparsable -> 0."""
    try:
        return float((text or "0").strip())
    except ValueError:
        return 0.0
