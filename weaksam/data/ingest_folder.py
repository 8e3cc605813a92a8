"""Ingest a folder of images plus a labels CSV into MANIFEST rows.

The CSV has a header with the columns ``file`` and ``labels`` (others are ignored)::

    file,labels
    cats/001.jpg,cat;person
    002.png,dog|cat
    003.jpg,

``file`` is relative to the image root (or absolute); ``labels`` are class names separated by
``;`` or ``|``. An empty ``labels`` is allowed only outside training splits (else an error row).
The class list is the given :class:`ClassMap` or the sorted union of all names in the CSV; a
name outside the given list makes an error row naming it. There is no ground truth.
``image_id`` is the file's relative path without its extension; ``image_index`` is
``index_base`` + the row's position in the CSV. The CSV and the image root may be local or URIs
(``s3://``, through :mod:`weaksam.storage`); a ``file`` entry may itself be a URI.
"""

from __future__ import annotations

import csv
import io
import os
import re
from typing import Any

from weaksam import storage
from weaksam.data.imageio import DEFAULT_MAX_PIXELS
from weaksam.data.ingest_core import ImageRecord, build_rows, check_unique_index, image_location
from weaksam.data.ingest_core import is_training_split as _is_training_split
from weaksam.io.classes import ClassMap

_SEPARATORS = re.compile(r"[;|]")


def read_labels_csv(path: str) -> list[tuple[str, list[str]]]:
    """``(file, [class names])`` per CSV row, in file order.

    Raises ``FileNotFoundError`` when missing, ``ValueError`` for a bad header, an empty
    ``file`` cell or a file listed twice.
    """
    try:
        data = storage.read_bytes(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"labels CSV not found: {path}") from None
    with io.StringIO(data.decode("utf-8-sig"), newline="") as fh:
        reader = csv.DictReader(fh)
        header = [h.strip() for h in reader.fieldnames or []]
        if "file" not in header or "labels" not in header:
            raise ValueError(f"{path}: the header must have columns 'file,labels', got {header}")
        reader.fieldnames = header
        out: list[tuple[str, list[str]]] = []
        seen: dict[str, int] = {}
        for row in reader:
            line = reader.line_num
            file = (row.get("file") or "").strip()
            if not file:
                raise ValueError(f"{path}:{line}: empty 'file' cell")
            if file in seen:
                raise ValueError(f"{path}:{line}: {file!r} is listed twice (line {seen[file]})")
            seen[file] = line
            names = [n.strip() for n in _SEPARATORS.split(row.get("labels") or "")]
            out.append((file, [n for n in names if n]))
    return out


def classes_from_csv(entries: list[tuple[str, list[str]]]) -> ClassMap:
    """The sorted union of the class names in :func:`read_labels_csv` entries."""
    names = sorted({n for _, labels in entries for n in labels})
    if not names:
        raise ValueError("the labels CSV names no classes; give a class file")
    return ClassMap.from_names(names)


def ingest_folder(
    root: str,
    labels_csv: str,
    split: str,
    classes: ClassMap | None = None,
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
    """MANIFEST rows of the images listed in ``labels_csv``, and the class map.

    Args:
        root: folder the CSV's ``file`` entries are relative to.
        labels_csv: the CSV described in the module docstring.
        split: split name stored in every row.
        classes: the class list; default: the sorted union of names in this CSV.
        index_base: ``image_index`` of the first CSV row.
        training, allow_empty_labels, max_pixels, verify, num_workers, progress, ray_chunk: see
            :func:`weaksam.data.ingest_coco.ingest_coco`.
    """
    entries = read_labels_csv(labels_csv)
    cmap = classes if classes is not None else classes_from_csv(entries)
    records = []
    for pos, (file, names) in enumerate(entries):
        rel = file.replace("\\", "/")
        rec = ImageRecord(
            image_id=os.path.splitext(rel)[0],
            image_index=index_base + pos,
            path=image_location(root, file),
            split=split,
        )
        for name in names:
            try:
                rec.labels.append(cmap.index(name))
            except KeyError:
                rec.error = rec.error or f"unknown class {name!r}"
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
    return rows, cmap
