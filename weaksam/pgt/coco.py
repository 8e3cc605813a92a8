"""The PGT as a COCO instances json for training (``pgt_coco.json``).

* ``images``: one per image that has at least one PGT box (an image without PGT is left out:
  with image-level labels it is not a background image); ``id`` = ``image_index``,
  ``file_name`` = the image's path when known (relative to the run folder for an image inside
  it, as the ``pgt`` stage writes it), else its ``image_id``.
* ``annotations``: ``category_id`` the class map's source id, ``bbox`` ``[x, y, w, h]``
  (continuous convention, ``w = x2 - x1``), ``area`` (the mask's when there are masks, else
  the box's), ``iscrowd`` 0, ``segmentation`` a compressed RLE when the PGT has masks, and the
  detection ``score``.
* Which box goes into ``bbox`` when there are masks is ``bbox_source``: ``pgt`` (the
  detector's PGT box, the default) or ``mask`` (the SAM mask's tight box; an empty mask keeps
  the PGT box). The reference leaves this unspecified (its SAM box-prompt script is not
  published).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from weaksam.eval.formats import gt_to_coco
from weaksam.eval.records import GroundTruth
from weaksam.geometry.boxes import as_boxes
from weaksam.io.classes import ClassMap
from weaksam.io.rle import rle_area, rle_to_boxes

BBOX_SOURCES = ("pgt", "mask")


def pgt_boxes(row: Mapping[str, Any], bbox_source: str = "pgt") -> np.ndarray:
    """``Gx4`` boxes of a ``pgt`` row: the PGT boxes, or the masks' tight boxes (``mask``)."""
    if bbox_source not in BBOX_SOURCES:
        raise ValueError(f"unknown bbox source {bbox_source!r}; known: {list(BBOX_SOURCES)}")
    boxes = as_boxes(row.get("boxes") or [])
    masks = row.get("masks")
    if bbox_source == "mask" and masks and len(masks) == len(boxes):
        tight = rle_to_boxes(list(masks), int(row["height"]), int(row["width"]))
        empty = (tight[:, 2] <= tight[:, 0]) | (tight[:, 3] <= tight[:, 1])
        boxes = np.where(empty[:, None], boxes, tight).astype(np.float32)
    return boxes


def pgt_to_coco(
    rows: Sequence[Mapping[str, Any]],
    classes: ClassMap,
    bbox_source: str = "pgt",
    file_names: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A COCO instances dict (JSON-serialisable) of ``pgt`` rows (see the module docstring)."""
    records: list[GroundTruth] = []
    scores: list[float] = []
    for r in rows:
        if r.get("error") or not r.get("boxes"):
            continue
        boxes = pgt_boxes(r, bbox_source)
        masks = list(r["masks"]) if r.get("masks") else None
        h, w = int(r["height"]), int(r["width"])
        records.append(
            GroundTruth(
                image_id=str(r["image_id"]),
                image_index=int(r["image_index"]),
                height=h,
                width=w,
                boxes=boxes,
                classes=np.asarray(r["classes"], np.int64),
                difficult=np.zeros(len(boxes), bool),
                masks=masks,
                areas=rle_area(masks, h, w) if masks is not None else None,
            )
        )
        scores += [float(s) for s in r.get("scores") or [0.0] * len(boxes)]
    coco = gt_to_coco(records, classes)
    for ann, score in zip(coco["annotations"], scores, strict=True):
        ann["score"] = score
    if file_names:
        for img in coco["images"]:
            img["file_name"] = file_names.get(img["file_name"], img["file_name"])
    return coco
