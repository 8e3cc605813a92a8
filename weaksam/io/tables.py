"""Reading and writing the contract's tables as Parquet (local paths or pyarrow URIs)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from weaksam.io.classes import ClassMap
from weaksam.io.schemas import META_TABLE, rows_to_table, validate_table


def _fs_and_path(uri: str) -> tuple[pafs.FileSystem, str]:
    if "://" in uri:
        fs, path = pafs.FileSystem.from_uri(uri)
        return fs, path
    return pafs.LocalFileSystem(), os.path.abspath(uri)


def write_table(
    rows: Sequence[Mapping[str, Any]] | pa.Table,
    path: str,
    table: str,
    classes: ClassMap | None = None,
) -> pa.Table:
    """Write ``rows`` (or a ready table) of ``table`` to one Parquet file at ``path``.

    The class map goes into the schema metadata. Returns the written table.
    """
    meta = classes.to_metadata() if classes is not None else None
    if isinstance(rows, pa.Table):
        tbl = validate_table(rows, table)
        if meta:
            tbl = tbl.replace_schema_metadata({**(tbl.schema.metadata or {}), **meta})
    else:
        tbl = rows_to_table(rows, table, meta)
    fs, p = _fs_and_path(path)
    parent = os.path.dirname(p)
    if parent:
        fs.create_dir(parent, recursive=True)
    pq.write_table(tbl, p, filesystem=fs)
    return tbl


def read_table(
    path: str, table: str | None = None, columns: Sequence[str] | None = None
) -> pa.Table:
    """Read a Parquet file or a folder of Parquet shards; validate against ``table`` if given.

    Files whose names start with ``_`` or ``.`` (markers, metrics) are skipped.
    """
    fs, p = _fs_and_path(path)
    info = fs.get_file_info(p)
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"no table at {path}")
    if info.type == pafs.FileType.Directory:
        ds = pads.dataset(p, filesystem=fs, format="parquet", exclude_invalid_files=True)
        tbl = ds.to_table(columns=list(columns) if columns else None)
        files = ds.files
        if files:  # dataset() drops the per-file metadata; take it from the first shard
            first_meta = pq.read_schema(files[0], filesystem=fs).metadata
            tbl = tbl.replace_schema_metadata(first_meta)
    else:
        tbl = pq.read_table(p, filesystem=fs, columns=list(columns) if columns else None)
    if table is not None and columns is None:
        tbl = validate_table(tbl, table)
    return tbl


def table_name(tbl: pa.Table) -> str | None:
    """The contract table name stored in ``tbl``'s metadata, if any."""
    meta = tbl.schema.metadata or {}
    raw = meta.get(META_TABLE)
    return raw.decode() if raw else None


def read_classes(tbl_or_path: pa.Table | str) -> ClassMap:
    """The class map stored with a table (or the table at a path)."""
    if isinstance(tbl_or_path, str):
        fs, p = _fs_and_path(tbl_or_path)
        if fs.get_file_info(p).type == pafs.FileType.Directory:
            shards = sorted(
                f.path
                for f in fs.get_file_info(pafs.FileSelector(p, recursive=True))
                if f.path.endswith(".parquet")
                and not os.path.basename(f.path).startswith(("_", "."))
            )
            if not shards:
                raise FileNotFoundError(f"no Parquet shards under {tbl_or_path}")
            p = shards[0]
        return ClassMap.from_metadata(pq.read_schema(p, filesystem=fs).metadata)
    return ClassMap.from_metadata(tbl_or_path.schema.metadata)
