"""The data stage, ingest and image decoding with the run folder (or the dataset) on S3.

A moto S3 server stands in for the object store (``s3_bucket`` in ``tests/conftest.py``). Each
test makes the same thing locally and on the bucket and compares: the bytes written, the rows
ingested (paths aside) and the decoded pixels must be the same.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from weaksam import storage
from weaksam.config import DataConfig, SynthConfig, load_config
from weaksam.data.imageio import ImageDecodeError, load_image, probe_image
from weaksam.data.ingest import check_data_config, ingest_splits
from weaksam.data.stage import run_data, run_ingest
from weaksam.data.synth import generate_blobs_dataset, generate_shapes_dataset, load_blobs
from weaksam.io.classes import read_class_file
from weaksam.io.tables import read_table
from weaksam.runs import manifest_path
from weaksam.stage import StageContext

TINY = SynthConfig(image_size=64, num_train=3, num_test=2, seed=5)


def _upload_tree(local: Path, loc: str) -> str:
    """Copy every file under ``local`` to ``loc`` (same relative names); returns ``loc``."""
    for folder, _, files in os.walk(local):
        for name in files:
            rel = os.path.relpath(os.path.join(folder, name), local).replace(os.sep, "/")
            storage.upload_file(os.path.join(folder, name), storage.join(loc, rel))
    return loc


def _local_files(root: Path) -> dict[str, bytes]:
    return {
        os.path.relpath(os.path.join(d, f), root).replace(os.sep, "/"): Path(d, f).read_bytes()
        for d, _, files in os.walk(root)
        for f in files
    }


def _without_paths(rows: list[dict[str, Any]], root: str) -> list[dict[str, Any]]:
    out = []
    for row in rows:
        r = dict(row)
        assert r["path"].startswith(root), (r["path"], root)
        r["path"] = r["path"][len(root) :].lstrip("/")
        out.append(r)
    return out


def _image(path: Path, h: int = 20, w: int = 30, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    Image.fromarray(arr).save(path)
    return path


# --------------------------------------------------------------------------- synthetic export


def test_shapes_and_blobs_on_s3_are_the_local_bytes(s3_bucket: str, tmp_path: Path) -> None:
    cfg = dataclasses.replace(TINY, export_voc=True)
    local = generate_shapes_dataset(cfg, str(tmp_path / "shapes"), progress=False)
    remote_dir = storage.join(s3_bucket, "runs", "tiny", "data")
    remote = generate_shapes_dataset(cfg, remote_dir, progress=False)
    want = _local_files(tmp_path / "shapes")
    got = {
        f[len(remote_dir) + 1 :]: storage.read_bytes(f)
        for f in storage.list_files(remote_dir, recursive=True)
    }
    assert sorted(got) == sorted(want)
    assert got == want  # PNGs (the VOC copies too), json, csv, xml, classes.txt
    assert remote["images"] == local["images"] and remote["instances"] == local["instances"]
    assert remote["contact_sheet"] == storage.join(remote_dir, "contact_sheet.png")
    assert remote["bytes"] == sum(len(b) for b in got.values())

    generate_blobs_dataset(str(tmp_path / "blobs"), 3, 48, 2, progress=False)
    blobs_dir = storage.join(s3_bucket, "blobs")
    generate_blobs_dataset(blobs_dir, 3, 48, 2, progress=False)
    want = _local_files(tmp_path / "blobs")
    assert {k: storage.read_bytes(storage.join(blobs_dir, k)) for k in want} == want
    for (li, lm), (ri, rm) in zip(
        load_blobs(str(tmp_path / "blobs")), load_blobs(blobs_dir), strict=True
    ):
        np.testing.assert_array_equal(li, ri)
        np.testing.assert_array_equal(lm, rm)


def test_data_and_ingest_stages_with_the_run_on_s3(s3_bucket: str, tmp_path: Path) -> None:
    """``data`` writes the set into ``s3://.../runs/tiny/data``; ``ingest`` reads it from there
    and writes the manifest next to it; its paths read back as s3 URIs whose pixels are the
    ones of the same set generated on a local disk."""
    overrides = ["name=tiny", f"run_root={s3_bucket}/runs", "synth.image_size=64"]
    overrides += ["synth.num_train=3", "synth.num_test=2", "synth.export_voc=false"]
    cfg = load_config(None, overrides)
    run_dir = cfg.run_dir
    assert run_dir == f"{s3_bucket}/runs/tiny"

    def ctx(stage: str) -> StageContext:
        return StageContext(run_dir, storage.join(run_dir, stage), lambda: None)

    run_data(cfg, ctx("data"))
    assert storage.is_file(storage.join(run_dir, "data", "annotations", "instances_train.json"))
    metrics = run_ingest(cfg, ctx("ingest"))
    assert metrics["splits"]["train"] == {"images": 3, "ok": 3, "errors": 0}
    assert metrics["splits"]["test"] == {"images": 2, "ok": 2, "errors": 0}
    # in-run paths are stored relative to the run folder ...
    with storage.open_input(manifest_path(run_dir)) as fh:
        stored = pq.read_table(fh, columns=["path"]).column("path").to_pylist()
    assert stored[:2] == ["data/images/train/train_00000.png", "data/images/train/train_00001.png"]
    # ... and come back as s3 URIs
    rows = read_table(manifest_path(run_dir), "manifest").to_pylist()
    assert [r["path"] for r in rows[:2]] == [
        f"{run_dir}/data/images/train/train_00000.png",
        f"{run_dir}/data/images/train/train_00001.png",
    ]

    local_cfg = load_config(None, [*overrides[:1], f"run_root={tmp_path}", *overrides[2:]])
    local_run = local_cfg.run_dir
    run_data(local_cfg, StageContext(local_run, os.path.join(local_run, "data"), lambda: None))
    local_rows, _ = ingest_splits(local_cfg.data, os.path.join(local_run, "data"))
    assert _without_paths(rows, run_dir) == _without_paths(local_rows, local_run)
    for row, local_row in zip(rows, local_rows, strict=True):
        np.testing.assert_array_equal(load_image(row["path"]), load_image(local_row["path"]))


# --------------------------------------------------------------------------- image decoding


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_load_image_from_s3_equals_the_local_file(
    s3_bucket: str, tmp_path: Path, suffix: str
) -> None:
    path = _image(tmp_path / f"x{suffix}", 37, 53, seed=3)
    loc = storage.join(s3_bucket, "img", f"x{suffix}")
    storage.upload_file(str(path), loc)
    np.testing.assert_array_equal(load_image(loc), load_image(str(path)))
    assert probe_image(loc) == probe_image(str(path)) == (37, 53)
    assert probe_image(loc, verify=False) == (37, 53)
    file_uri = f"file://{path}"
    np.testing.assert_array_equal(load_image(file_uri), load_image(str(path)))


def test_load_image_errors_on_s3(s3_bucket: str, tmp_path: Path) -> None:
    with pytest.raises(ImageDecodeError, match=r"^file not found$"):
        load_image(storage.join(s3_bucket, "nope.png"))
    storage.write_bytes(storage.join(s3_bucket, "empty.png"), b"")
    with pytest.raises(ImageDecodeError, match=r"^empty file$"):
        load_image(storage.join(s3_bucket, "empty.png"))
    storage.write_bytes(storage.join(s3_bucket, "folder", "a.png"), b"x")
    with pytest.raises(ImageDecodeError, match="is a directory"):
        load_image(storage.join(s3_bucket, "folder"))
    (tmp_path / "a.png").write_bytes(b"not an image at all")
    storage.upload_file(str(tmp_path / "a.png"), storage.join(s3_bucket, "folder", "a.png"))
    with pytest.raises(ImageDecodeError) as local_err:
        probe_image(str(tmp_path / "a.png"))
    with pytest.raises(ImageDecodeError) as remote_err:
        probe_image(storage.join(s3_bucket, "folder", "a.png"))
    assert remote_err.value.reason == local_err.value.reason == "not an image (cannot identify)"


# --------------------------------------------------------------------------- datasets on S3


def _coco_set(root: Path) -> None:
    _image(root / "images" / "a.png", seed=1)
    _image(root / "images" / "sub" / "b.png", 10, 12, seed=2)
    coco = {
        "images": [
            {"id": 1, "file_name": "a.png", "height": 20, "width": 30},
            {"id": 2, "file_name": "sub/b.png", "height": 10, "width": 12},
            {"id": 3, "file_name": "missing.png", "height": 10, "width": 12},
        ],
        "categories": [{"id": 4, "name": "cat"}, {"id": 9, "name": "dog"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 4, "bbox": [1, 1, 5, 5],
             "segmentation": [[1, 1, 6, 1, 6, 6, 1, 6]]},
            {"id": 2, "image_id": 2, "category_id": 9, "bbox": [0, 0, 3, 3],
             "segmentation": [[0, 0, 3, 0, 3, 3, 0, 3]]},
            {"id": 3, "image_id": 3, "category_id": 9, "bbox": [0, 0, 3, 3]},
        ],
    }  # fmt: skip
    import json

    (root / "annotations").mkdir(parents=True)
    (root / "annotations" / "instances_train.json").write_text(json.dumps(coco))
    (root / "labels_train.csv").write_text(
        "file,labels\na.png,cat\nsub/b.png,dog|owl\nmissing.png,cat\n"
    )
    (root / "classes.txt").write_text("# the classes\ncat\ndog\nowl\n")


def _voc_set(root: Path) -> None:
    (root / "ImageSets" / "Main").mkdir(parents=True)
    (root / "Annotations").mkdir(parents=True)
    (root / "ImageSets" / "Main" / "trainval.txt").write_text("000001\n000002\n000003\n")
    for k, (image_id, filename) in enumerate([("000001", "000001.jpg"), ("000002", "b.jpg")]):
        _image(root / "JPEGImages" / filename, seed=k)
        (root / "Annotations" / f"{image_id}.xml").write_text(
            f"<annotation><filename>{filename}</filename>"
            "<size><width>30</width><height>20</height><depth>3</depth></size>"
            "<object><name>dog</name><difficult>0</difficult>"
            "<bndbox><xmin>1</xmin><ymin>2</ymin><xmax>10</xmax><ymax>12</ymax></bndbox>"
            "</object></annotation>"
        )


@pytest.mark.parametrize(
    "fmt",
    [
        DataConfig(
            format="coco", root="images", annotations="annotations/instances_{split}.json",
            splits=("train",),
        ),
        DataConfig(
            format="folder", root="images", annotations="labels_{split}.csv",
            classes_file="classes.txt", splits=("train",),
        ),
        DataConfig(format="voc", root=".", splits=("trainval",)),
    ],
    ids=["coco", "folder", "voc"],
)  # fmt: skip
def test_ingest_a_dataset_stored_on_s3(s3_bucket: str, tmp_path: Path, fmt: DataConfig) -> None:
    """The same dataset ingested from a local folder and from a bucket: the same rows, with
    image paths under the bucket; check_data_config asks the bucket."""
    local = tmp_path / "set"
    (_voc_set if fmt.format == "voc" else _coco_set)(local)
    remote = _upload_tree(local, storage.join(s3_bucket, "datasets", "set"))

    want, want_classes = ingest_splits(fmt, str(local), num_workers=1)
    got, classes = ingest_splits(fmt, remote, num_workers=2)
    assert classes == want_classes
    assert _without_paths(got, remote) == _without_paths(want, str(local))
    assert [r["error"] for r in got].count(None) == 2  # one missing image/xml per set
    assert all(r["path"].startswith(f"{remote}/") for r in got)

    def absolute(c: DataConfig, root: str) -> DataConfig:
        return dataclasses.replace(
            c,
            root=storage.normalize(storage.join(root, c.root)),
            annotations=storage.join(root, c.annotations) if c.annotations else "",
            classes_file=storage.join(root, c.classes_file) if c.classes_file else "",
        )

    check_data_config(absolute(fmt, remote))
    missing = dataclasses.replace(absolute(fmt, remote), root=storage.join(remote, "nope"))
    with pytest.raises(FileNotFoundError, match=r"data\.root: no such folder"):
        check_data_config(missing)
    if fmt.annotations:
        bad = dataclasses.replace(absolute(fmt, remote), annotations=f"{remote}/x_{{split}}.json")
        with pytest.raises(FileNotFoundError, match=r"data.annotations: no such file: .*x_train"):
            check_data_config(bad)
    with pytest.raises(ValueError, match="gs"):
        check_data_config(dataclasses.replace(fmt, root="gs://bucket/set"))


def test_read_class_file_from_s3(s3_bucket: str) -> None:
    loc = storage.join(s3_bucket, "classes.txt")
    storage.write_text(loc, "# comment\r\ncat\r\n\r\ndog\n")
    assert read_class_file(loc).names == ("cat", "dog")
