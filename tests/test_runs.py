"""Run-folder paths: one helper per path, relocatable tables, markers."""

from __future__ import annotations

import os
import shutil

from weaksam.io import schemas
from weaksam.io.classes import ClassMap
from weaksam.io.tables import read_table, write_table
from weaksam.runs import (
    detections_path,
    manifest_path,
    mark_started,
    mark_success,
    proposals_path,
    read_success,
    relative_to_run,
    resolve_in_run,
    started_key,
)


def test_helpers_name_the_layout() -> None:
    assert manifest_path("") == os.path.join("ingest", "manifest.parquet")
    assert proposals_path("/r") == "/r/proposals/shards"
    assert detections_path("/r", "wsod", "test") == "/r/wsod/detections_test.parquet"


def test_relative_to_run_round_trips_inside_and_keeps_outside() -> None:
    assert relative_to_run("/runs/a/data/x.png", "/runs/a") == os.path.join("data", "x.png")
    assert relative_to_run("/datasets/voc/x.jpg", "/runs/a") == "/datasets/voc/x.jpg"
    assert relative_to_run("/runs/ab/x.png", "/runs/a") == "/runs/ab/x.png"  # not a prefix dir
    assert relative_to_run("s3://b/runs/a/data/x.png", "s3://b/runs/a") == "data/x.png"
    assert resolve_in_run("data/x.png", "s3://b/runs/a") == "s3://b/runs/a/data/x.png"
    assert resolve_in_run("/abs/x.png", "/runs/b") == "/abs/x.png"
    assert resolve_in_run("data/x.png", "/runs/b") == "/runs/b/data/x.png"


def test_a_moved_run_folder_reads_its_own_images(tmp_path) -> None:
    run = tmp_path / "runs" / "a"
    image = run / "data" / "images" / "x.png"
    image.parent.mkdir(parents=True)
    image.write_bytes(b"png")
    outside = tmp_path / "dataset" / "y.png"
    rows = [
        schemas.empty_row("manifest", "x", 0, height=1, width=1, path=str(image), split="train"),
        schemas.empty_row("manifest", "y", 1, height=1, width=1, path=str(outside), split="t"),
    ]
    classes = ClassMap.from_names(["c"])
    write_table(rows, manifest_path(str(run)), "manifest", classes, path_root=str(run))
    import pyarrow.parquet as pq

    stored = pq.read_table(manifest_path(str(run))).column("path").to_pylist()
    assert stored == [os.path.join("data", "images", "x.png"), str(outside)]

    moved = tmp_path / "elsewhere" / "a"
    shutil.move(str(run), str(moved))
    got = read_table(manifest_path(str(moved)), "manifest").column("path").to_pylist()
    assert got == [str(moved / "data" / "images" / "x.png"), str(outside)]
    assert os.path.exists(got[0])
    # a column subset with the path keeps the resolution; one without it is untouched
    sub = read_table(manifest_path(str(moved)), columns=["image_id", "path"])
    assert sub.column("path").to_pylist()[0] == got[0]


def test_markers_carry_key_and_a_fresh_run_id(tmp_path) -> None:
    mark_started(str(tmp_path), "k1")
    assert started_key(str(tmp_path)) == "k1"
    assert read_success(str(tmp_path)) is None
    mark_success(str(tmp_path), "h", key="k1", seconds=1.5)
    first = read_success(str(tmp_path))
    mark_success(str(tmp_path), "h", key="k1", seconds=1.5)
    second = read_success(str(tmp_path))
    assert first and second and first["key"] == "k1" and first["config_hash"] == "h"
    assert first["run_id"] != second["run_id"]
    (tmp_path / "_SUCCESS").write_text("{not json")
    assert read_success(str(tmp_path)) is None
