"""Run-folder paths: one helper per path, relocatable tables, markers."""

from __future__ import annotations

import os
import shutil

from weaksam.io import schemas
from weaksam.io.classes import ClassMap
from weaksam.io.tables import read_classes, read_table, write_table
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


# --- the same helpers on an object store (moto S3) ------------------------------------------


def test_helpers_join_uris() -> None:
    assert manifest_path("s3://b/runs/a") == "s3://b/runs/a/ingest/manifest.parquet"
    assert detections_path("s3://b/r/", "wsod", "test") == "s3://b/r/wsod/detections_test.parquet"
    assert relative_to_run("s3://b/runs/a/./data/x.png", "s3://b/runs/a/") == "data/x.png"
    assert relative_to_run("s3://b/runs/ab/x.png", "s3://b/runs/a") == "s3://b/runs/ab/x.png"
    assert relative_to_run("/local/x.png", "s3://b/runs/a") == "/local/x.png"
    assert resolve_in_run("data/../x.png", "s3://b/runs/a") == "s3://b/runs/a/x.png"
    assert resolve_in_run("s3://c/x.png", "/runs/a") == "s3://c/x.png"


def test_markers_and_metrics_round_trip_on_s3(s3_bucket: str) -> None:
    import numpy as np

    from weaksam import storage
    from weaksam.runs import (
        clear_success,
        is_complete,
        read_metrics,
        reset_stage_dir,
        write_metrics,
    )

    out = f"{s3_bucket}/runs/a/peaks"
    assert read_success(out) is None and started_key(out) is None
    mark_started(out, "k1")
    assert started_key(out) == "k1"
    path = write_metrics(out, {"b": np.float32(0.5), "a": np.arange(2)})
    assert path == f"{out}/metrics.json"
    assert read_metrics(out) == {"a": [0, 1], "b": 0.5}
    assert storage.read_text(path) == '{\n  "a": [\n    0,\n    1\n  ],\n  "b": 0.5\n}'
    mark_success(out, "h", key="k1", seconds=np.float64(1.5))
    marker = read_success(out)
    assert marker and marker["key"] == "k1" and marker["seconds"] == 1.5
    assert is_complete(out, "h") and not is_complete(out, "other")
    clear_success(out)
    assert read_success(out) is None and storage.exists(path)
    clear_success(out)  # a missing marker is fine
    storage.write_text(f"{out}/_SUCCESS", "{not json")
    assert read_success(out) is None
    storage.write_text(f"{out}/sub/part-0.parquet", "x")
    reset_stage_dir(out)
    assert storage.list_files(out, recursive=True) == [] and started_key(out) is None
    reset_stage_dir(f"{s3_bucket}/runs/never")  # a missing folder is fine


def test_a_table_with_run_paths_on_s3(s3_bucket: str) -> None:
    """A manifest written into an S3 run folder stores run paths relative to it and reads them
    back as ``s3://`` locations, also after the folder was copied elsewhere in the store."""
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    from weaksam import storage

    run = f"{s3_bucket}/runs/a"
    inside = f"{run}/data/images/x.png"
    rows = [
        schemas.empty_row("manifest", "x", 0, height=1, width=1, path=inside, split="train"),
        schemas.empty_row("manifest", "y", 1, height=1, width=1, path="/data/y.png", split="t"),
    ]
    classes = ClassMap.from_names(["c"])
    write_table(rows, manifest_path(run), "manifest", classes, path_root=run)
    fs, p = storage.resolve(manifest_path(run))
    stored = pq.read_table(p, filesystem=fs)
    assert stored.column("path").to_pylist() == ["data/images/x.png", "/data/y.png"]
    assert stored.schema.metadata[schemas.META_PATH_BASE] == b".."
    got = read_table(manifest_path(run), "manifest")
    assert got.column("path").to_pylist() == [inside, "/data/y.png"]
    assert read_classes(manifest_path(run)) == classes

    moved = f"{s3_bucket}/elsewhere/b"
    pafs.copy_files(
        storage.resolve(run)[1],
        storage.resolve(moved)[1],
        source_filesystem=fs,
        destination_filesystem=fs,
    )
    got = read_table(manifest_path(moved), columns=["image_id", "path"])
    assert got.column("path").to_pylist() == [f"{moved}/data/images/x.png", "/data/y.png"]
