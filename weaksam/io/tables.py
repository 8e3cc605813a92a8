"""Reading and writing the contract's tables as Parquet (local paths, ``file://`` or ``s3://``
locations, all through :mod:`weaksam.storage`)."""

from __future__ import annotations

import os
import posixpath
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from weaksam import storage
from weaksam.io.classes import ClassMap
from weaksam.io.schemas import META_PATH_BASE, META_TABLE, rows_to_table, validate_table
from weaksam.runs import relative_to_run, resolve_in_run


def relative_paths(rows: Sequence[Mapping[str, Any]], root: str) -> list[dict[str, Any]]:
    """``rows`` with every ``path`` inside ``root`` made relative to it (others unchanged)."""
    out = []
    for row in rows:
        r = dict(row)
        if isinstance(r.get("path"), str):
            r["path"] = relative_to_run(r["path"], root)
        out.append(r)
    return out


def write_table(
    rows: Sequence[Mapping[str, Any]] | pa.Table,
    path: str,
    table: str,
    classes: ClassMap | None = None,
    *,
    path_root: str | None = None,
) -> pa.Table:
    """Write ``rows`` (or a ready table) of ``table`` to one Parquet file at ``path``.

    The class map goes into the schema metadata. With ``path_root`` (a run folder), values of a
    ``path`` column inside it are stored relative to it and the metadata records where it is
    relative to the file's folder, so :func:`read_table` gives absolute paths again wherever
    the folder has moved. Returns the written table.
    """
    meta = dict(classes.to_metadata()) if classes is not None else {}
    if path_root is not None and not isinstance(rows, pa.Table):
        rows = relative_paths(rows, path_root)
        meta[META_PATH_BASE] = _path_base(path_root, path).encode()
    if isinstance(rows, pa.Table):
        tbl = validate_table(rows, table)
        if meta:
            tbl = tbl.replace_schema_metadata({**(tbl.schema.metadata or {}), **meta})
    else:
        tbl = rows_to_table(rows, table, meta or None)
    fs, p = storage.resolve(path)
    storage.makedirs(storage.parent(storage.absolute(path)))
    pq.write_table(tbl, p, filesystem=fs)
    return tbl


def _path_base(root: str, path: str) -> str:
    """Where ``root`` lies relative to the folder of the table ``path`` (both on one store;
    ``file://`` counts as local)."""

    def split(loc: str) -> tuple[str, str]:
        if storage.is_remote(loc):
            return storage.scheme(loc), storage.normalize(loc).split("://", 1)[1]
        return "", storage.resolve(loc)[1]

    (root_store, base), (path_store, file) = split(root), split(path)
    if root_store != path_store:
        raise ValueError(f"path_root {root!r} and the table {path!r} are on different stores")
    if not root_store:
        return os.path.relpath(base, os.path.dirname(file))
    return posixpath.relpath(base, posixpath.dirname(file))


def _locate(path: str) -> tuple[pafs.FileSystem, str, bool]:
    """``(filesystem, path in it, is a folder)`` of a table location; raises
    ``FileNotFoundError`` when nothing is there."""
    fs, p = storage.resolve(path)
    info = fs.get_file_info(p)
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"no table at {path}")
    return fs, p, info.type == pafs.FileType.Directory


def read_table(
    path: str, table: str | None = None, columns: Sequence[str] | None = None
) -> pa.Table:
    """Read a Parquet file or a folder of Parquet shards; validate against ``table`` if given.

    Files whose names start with ``_`` or ``.`` (markers, metrics) are skipped.
    """
    fs, p, is_dir = _locate(path)
    if is_dir:
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
    folder = path if is_dir else storage.parent(path)
    return _resolve_paths(tbl, folder)


def iter_batches(
    path: str, columns: Sequence[str], batch_rows: int = 256
) -> Iterator[pa.RecordBatch]:
    """The rows of a Parquet file or folder of shards (as :func:`read_table` reads them) in
    record batches of at most ``batch_rows`` rows, one file at a time: memory is bounded by a
    batch, not by the table. ``columns`` must name the columns to read (no ``path`` column:
    batches are not rebased like :func:`read_table`'s tables)."""
    if "path" in columns:
        raise ValueError("iter_batches does not resolve relative paths: use read_table")
    fs, p, is_dir = _locate(path)
    if is_dir:
        ds = pads.dataset(p, filesystem=fs, format="parquet", exclude_invalid_files=True)
        files = sorted(ds.files)
    else:
        files = [p]
    for f in files:
        with fs.open_input_file(f) as fh:
            pf = pq.ParquetFile(fh)
            yield from pf.iter_batches(batch_size=batch_rows, columns=list(columns))


def list_values(col: pa.Array | pa.ChunkedArray, dtype: npt.DTypeLike) -> list[np.ndarray | None]:
    """The rows of a list column as numpy arrays of ``dtype`` (None for a null row), without
    a Python object per element (``to_pylist`` makes one per number)."""
    out: list[np.ndarray | None] = []
    chunks = col.chunks if isinstance(col, pa.ChunkedArray) else [col]
    for chunk in chunks:
        offsets = chunk.offsets.to_numpy()
        values = chunk.values.to_numpy(zero_copy_only=False).astype(dtype, copy=False)
        nulls = chunk.is_null().to_numpy(zero_copy_only=False)
        for i in range(len(chunk)):
            out.append(None if nulls[i] else values[offsets[i] : offsets[i + 1]])
    return out


def _resolve_paths(tbl: pa.Table, folder: str) -> pa.Table:
    """Relative ``path`` values made absolute against the base the metadata names (see
    :func:`write_table`); tables without that metadata are returned unchanged."""
    base_rel = (tbl.schema.metadata or {}).get(META_PATH_BASE)
    if base_rel is None or "path" not in tbl.column_names:
        return tbl
    if storage.is_uri(folder):
        base = storage.normalize(storage.join(folder, base_rel.decode()))
    else:
        base = os.path.normpath(os.path.join(os.path.abspath(folder), base_rel.decode()))
    values = [resolve_in_run(p, base) if p else p for p in tbl.column("path").to_pylist()]
    idx = tbl.column_names.index("path")
    return tbl.set_column(idx, tbl.schema.field(idx), pa.array(values, pa.string()))


def table_name(tbl: pa.Table) -> str | None:
    """The contract table name stored in ``tbl``'s metadata, if any."""
    meta = tbl.schema.metadata or {}
    raw = meta.get(META_TABLE)
    return raw.decode() if raw else None


def read_classes(tbl_or_path: pa.Table | str) -> ClassMap:
    """The class map stored with a table (or the table at a path)."""
    if isinstance(tbl_or_path, str):
        fs, p = storage.resolve(tbl_or_path)
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
