"""Writing a Ray Data dataset of contract rows as a folder of Parquet parts.

The workers that made the rows write them (``Dataset.write_parquet``): nothing passes through
the driver. Each file holds ``rows_per_file`` rows (the last fewer; Ray Data gathers blocks
until a file is full, instead of one small file per batch), and its schema carries the
contract's metadata and the class map, as :func:`weaksam.io.tables.write_table`'s files do, so
:func:`weaksam.io.tables.read_table` reads the folder as one table.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from weaksam import storage
from weaksam.io.classes import ClassMap
from weaksam.io.schemas import get_schema, rows_to_table, with_metadata
from weaksam.io.tables import read_table

ROWS_PER_FILE = 1000


def write_parts(
    ds: Any,
    folder: str,
    table: str,
    classes: ClassMap | None = None,
    rows_per_file: int = ROWS_PER_FILE,
) -> None:
    """Write the ``ray.data.Dataset`` ``ds`` (batches of ``table`` rows) into ``folder`` (a
    :mod:`weaksam.storage` location) as Parquet parts of ``rows_per_file`` rows."""
    fs, path = storage.resolve(folder)
    meta = classes.to_metadata() if classes is not None else None
    ds.write_parquet(
        path,
        filesystem=fs,
        min_rows_per_file=rows_per_file,
        max_rows_per_file=rows_per_file,
        schema=with_metadata(get_schema(table), table, meta),  # to pyarrow: the files' schema
    )


def write_and_read_parts(
    ds: Any, folder: str, table: str, classes: ClassMap | None = None
) -> pa.Table:
    """Empty ``folder``, :func:`write_parts` ``ds`` into it and read it back as one ``table``
    (from storage: the rows never pass through the driver's object store)."""
    storage.remove_tree(folder)
    write_parts(ds, folder, table, classes)
    if not storage.list_files(folder, ".parquet"):  # no rows: Ray Data writes no file
        return rows_to_table([], table)
    return read_table(folder, table)


__all__ = ["ROWS_PER_FILE", "write_and_read_parts", "write_parts"]
