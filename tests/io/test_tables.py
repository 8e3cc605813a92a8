"""Tables in folders of shards and on every store: a local path, ``file://`` and ``s3://``."""

from __future__ import annotations

from pathlib import Path

import pytest

from weaksam import storage
from weaksam.io import schemas
from weaksam.io.classes import ClassMap
from weaksam.io.tables import read_classes, read_table, write_table

CLASSES = ClassMap.from_names(["c", "d"])


@pytest.fixture
def root(storage_root: str) -> str:
    return storage_root


def test_a_folder_of_shards(root: str) -> None:
    """Every shard is read, markers and temporaries skipped; classes from the first shard."""
    folder = storage.join(root, "a", "points.parquet")
    for k in range(3):
        rows = [schemas.empty_row("points", f"i{k}", k, height=4, width=4)]
        write_table(rows, storage.join(folder, f"part-{k}.parquet"), "points", CLASSES)
    storage.write_text(storage.join(folder, "_SUCCESS"), "{}")
    storage.write_text(storage.join(folder, ".part-9.parquet.tmp"), "partial")
    tbl = read_table(folder, "points")
    assert sorted(tbl.column("image_id").to_pylist()) == ["i0", "i1", "i2"]
    assert read_classes(folder) == CLASSES == read_classes(tbl)
    with pytest.raises(FileNotFoundError):
        read_table(storage.join(root, "a", "missing.parquet"))


def test_paths_relative_to_the_run_resolve_on_every_store(root: str) -> None:
    """A run path is stored relative to ``path_root`` and read back in the form of the
    folder the reader names (``s3://...`` on S3, ``file://...`` for ``file://``)."""
    run = storage.join(root, "a")
    inside = storage.join(run, "data", "x.png")
    rows = [
        schemas.empty_row("manifest", "x", 0, height=1, width=1, path=inside, split="train"),
        schemas.empty_row("manifest", "y", 1, height=1, width=1, path="/ds/y.png", split="t"),
    ]
    loc = storage.join(run, "ingest", "manifest.parquet")
    write_table(rows, loc, "manifest", CLASSES, path_root=run)
    assert read_table(loc, "manifest").column("path").to_pylist() == [inside, "/ds/y.png"]


def test_a_table_and_its_root_on_different_stores_is_refused(tmp_path: Path) -> None:
    rows = [schemas.empty_row("manifest", "x", 0, height=1, width=1, path="/x", split="t")]
    with pytest.raises(ValueError, match="different stores"):
        write_table(rows, str(tmp_path / "m.parquet"), "manifest", CLASSES, path_root="s3://b/r")
