"""The data contract: every table's pyarrow schema, in one place.

Every table has one row per image and list columns per object. Conventions:

* ``image_id`` (string) is the dataset's own id (VOC ``"000005"``, COCO ``"391895"``, a file stem).
  ``image_index`` (int64) is a unique integer used as the COCO ``image_id`` on export.
* Boxes are flattened ``list<float32>`` of length ``4N``: ``[x1, y1, x2, y2, x1, ...]`` in pixels
  of the original image, continuous convention (see :mod:`weaksam.geometry.boxes`). Use
  :func:`weaksam.geometry.boxes.as_boxes` to get the ``Nx4`` array back.
* Points are flattened ``list<float32>`` of length ``2N``: ``[x, y, x, y, ...]`` (x = column).
* Masks are ``list<binary>`` of COCO compressed-RLE ``counts`` whose size is the row's
  ``(height, width)``; see :mod:`weaksam.io.rle`. Dense masks never cross Ray or Parquet.
* Class ids are 0-based contiguous; the names and the source dataset's ids travel in the schema
  metadata as a :class:`weaksam.io.classes.ClassMap`.
* ``error`` is null for a good row, else the reason; an error row has empty lists.
* A ``path`` column may hold paths relative to a base folder named, relative to the table's
  own folder, by the :data:`META_PATH_BASE` metadata (the run folder for a run's manifest, so
  the run folder can be moved); :func:`weaksam.io.tables.read_table` resolves them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa

SCHEMA_VERSION = "1"
META_TABLE = b"weaksam.table"
META_VERSION = b"weaksam.schema_version"
META_PATH_BASE = b"weaksam.path_base"

_f32s = pa.list_(pa.float32())
_i32s = pa.list_(pa.int32())
_strs = pa.list_(pa.string())
_rles = pa.list_(pa.binary())

_IMAGE_KEY = [
    pa.field("image_id", pa.string(), nullable=False),
    pa.field("image_index", pa.int64(), nullable=False),
    pa.field("height", pa.int32()),
    pa.field("width", pa.int32()),
]
_ERROR = pa.field("error", pa.string())

MANIFEST = pa.schema(
    [
        *_IMAGE_KEY,
        pa.field("path", pa.string()),
        pa.field("split", pa.string()),
        pa.field("labels", _i32s),  # image-level classes, sorted, unique
        # Ground truth for evaluation only; never read by a weakly-supervised stage.
        pa.field("gt_boxes", _f32s),
        pa.field("gt_classes", _i32s),
        pa.field("gt_difficult", pa.list_(pa.bool_())),
        pa.field("gt_masks", _rles),
        _ERROR,
    ]
)

POINTS = pa.schema(
    [
        *_IMAGE_KEY,
        pa.field("points", _f32s),  # 2N: x, y
        pa.field("point_classes", _i32s),  # class id, -1 = class-agnostic (e.g. clustered)
        pa.field("point_scores", pa.list_(pa.float32())),
        pa.field("point_kinds", _strs),  # map kind: "cam", "refined", "cross", ...
        _ERROR,
    ]
)

PROPOSALS = pa.schema(
    [
        *_IMAGE_KEY,
        pa.field("boxes", _f32s),  # 4N
        pa.field("scores", pa.list_(pa.float32())),  # SAM predicted IoU
        pa.field("sources", _strs),  # "grid", "point:<kind>", "class:<kind>", "box"
        pa.field("class_hints", _i32s),  # class of the prompting point, -1 = none
        pa.field("masks", _rles),  # optional: null when masks were not kept
        _ERROR,
    ]
)

DETECTIONS = pa.schema(
    [
        *_IMAGE_KEY,
        pa.field("boxes", _f32s),
        pa.field("scores", pa.list_(pa.float32())),
        pa.field("classes", _i32s),
        pa.field("masks", _rles),
        _ERROR,
    ]
)

PGT = pa.schema(
    [
        *_IMAGE_KEY,
        pa.field("boxes", _f32s),
        pa.field("scores", pa.list_(pa.float32())),
        pa.field("classes", _i32s),
        pa.field("masks", _rles),
        _ERROR,
    ]
)

TABLES: dict[str, pa.Schema] = {
    "manifest": MANIFEST,
    "points": POINTS,
    "proposals": PROPOSALS,
    "detections": DETECTIONS,
    "pgt": PGT,
}


def get_schema(table: str) -> pa.Schema:
    """The schema of ``table``; raises ``ValueError`` naming the known tables."""
    try:
        return TABLES[table]
    except KeyError:
        raise ValueError(f"unknown table {table!r}; known: {sorted(TABLES)}") from None


def with_metadata(
    schema: pa.Schema, table: str, extra: Mapping[bytes, bytes] | None = None
) -> pa.Schema:
    """``schema`` with the table name, contract version and ``extra`` in its metadata."""
    meta = dict(schema.metadata or {})
    meta[META_TABLE] = table.encode()
    meta[META_VERSION] = SCHEMA_VERSION.encode()
    if extra:
        meta.update(extra)
    return schema.with_metadata(meta)


def empty_row(table: str, image_id: str, image_index: int, **fields: Any) -> dict[str, Any]:
    """A row of ``table`` with empty lists (masks null) and the given fields set."""
    row: dict[str, Any] = {}
    for field in get_schema(table):
        if field.name in ("image_id", "image_index"):
            continue
        if pa.types.is_list(field.type):
            row[field.name] = None if field.name in ("masks", "gt_masks") else []
        else:
            row[field.name] = None
    row["image_id"] = image_id
    row["image_index"] = int(image_index)
    unknown = set(fields) - set(row)
    if unknown:
        raise ValueError(f"fields {sorted(unknown)} are not in table {table!r}")
    row.update(fields)
    return row


def error_row(
    table: str, image_id: str, image_index: int, error: str, **fields: Any
) -> dict[str, Any]:
    """A row that records why ``image_id`` could not be processed; lists empty."""
    return empty_row(table, image_id, image_index, error=error, **fields)


def rows_to_table(
    rows: Sequence[Mapping[str, Any]], table: str, metadata: Mapping[bytes, bytes] | None = None
) -> pa.Table:
    """Build a validated ``pa.Table`` of ``table`` from row dicts (missing keys are null)."""
    schema = with_metadata(get_schema(table), table, metadata)
    names = set(schema.names)
    for row in rows:
        extra = set(row) - names
        if extra:
            raise ValueError(f"row has columns {sorted(extra)} not in table {table!r}")
    return pa.Table.from_pylist([dict(r) for r in rows], schema=schema)


def validate_table(tbl: pa.Table, table: str) -> pa.Table:
    """Check that ``tbl`` has every column of ``table`` with the right type; return it cast.

    Extra columns are kept (later stages may add diagnostics). Raises ``ValueError``.
    """
    schema = get_schema(table)
    missing = [f.name for f in schema if f.name not in tbl.column_names]
    if missing:
        raise ValueError(f"table {table!r} is missing columns {missing}")
    for f in schema:
        col_type = tbl.schema.field(f.name).type
        if col_type != f.type and not (pa.types.is_null(col_type)):
            try:
                tbl = tbl.set_column(
                    tbl.schema.get_field_index(f.name), f.name, tbl.column(f.name).cast(f.type)
                )
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise ValueError(
                    f"column {f.name!r} of {table!r} has type {col_type}, expected {f.type}"
                ) from exc
    return tbl
