"""Ray Data and Parquet for actor pools: the pool's inputs read from storage, its contract
rows written as a folder of Parquet parts.

:func:`read_pool_inputs` reads a table's columns with Ray Data's read tasks, cut into blocks
small enough that every actor of a pool gets work. The workers that made the rows write them
(``Dataset.write_parquet``): nothing passes through the driver. Each file holds
``rows_per_file`` rows (the last fewer; Ray Data gathers blocks until a file is full, instead
of one small file per batch), and its schema carries the contract's metadata and the class
map, as :func:`weaksam.io.tables.write_table`'s files do, so
:func:`weaksam.io.tables.read_table` reads the folder as one table.
"""

from __future__ import annotations

from collections.abc import Sequence
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


MAX_BLOCK_ROWS = 256


def rows_per_block(num_rows: int, batch_size: int, num_actors: int) -> int:
    """Rows of one input block of a pool of ``num_actors`` that takes ``batch_size`` rows a
    call: about one batch a block, at most four blocks an actor, at most
    :data:`MAX_BLOCK_ROWS` rows (never less than a batch)."""
    n_blocks = max(1, min(num_rows // max(1, batch_size), 4 * num_actors))
    return max(batch_size, min(-(-num_rows // n_blocks), MAX_BLOCK_ROWS))


def read_pool_inputs(
    source: str, columns: Sequence[str], num_rows: int, batch_size: int, num_actors: int
) -> Any:
    """A ``ray.data.Dataset`` of ``columns`` of the Parquet table at ``source`` (a file or a
    folder of parts, a :mod:`weaksam.storage` location), read by Ray Data's tasks and cut
    into blocks of :func:`rows_per_block` rows (files give the blocks at scale; a small table
    of one file is split so that every actor works). ``num_rows``: the rows the pool will
    use (they size the blocks)."""
    import ray

    fs, _ = storage.resolve(source)
    files = storage.list_files(source, ".parquet") if storage.is_dir(source) else [source]
    ds = ray.data.read_parquet([storage.resolve(f)[1] for f in files], filesystem=fs)
    per_block = rows_per_block(num_rows, batch_size, num_actors)
    return ds.select_columns(list(columns)).repartition(target_num_rows_per_block=per_block)


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


__all__ = [
    "MAX_BLOCK_ROWS",
    "ROWS_PER_FILE",
    "read_pool_inputs",
    "rows_per_block",
    "write_and_read_parts",
    "write_parts",
]
