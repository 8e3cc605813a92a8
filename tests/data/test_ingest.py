"""weaksam.data.ingest: COCO, VOC and folder sources to MANIFEST rows; the ingest entry point."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from ray_jobs import ingest as ingest_job
from weaksam.config import DataConfig
from weaksam.data.ingest import (
    NO_LABELS,
    format_summary,
    ingest_coco,
    ingest_folder,
    ingest_splits,
    ingest_voc,
    summarize_rows,
)
from weaksam.data.ingest_core import error_kind, parse_index
from weaksam.geometry.boxes import as_boxes
from weaksam.io.classes import ClassMap
from weaksam.io.rle import decode_mask
from weaksam.io.tables import read_classes, read_table
from weaksam.runs import is_complete, read_metrics


def _image(path: Path, h: int = 20, w: int = 30, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    Image.fromarray(arr).save(path)
    return path


def _corrupt(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(np.random.default_rng(9).bytes(500))
    return path


def _by_id(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["image_id"]: r for r in rows}


# --------------------------------------------------------------------------- COCO


def _coco_fixture(root: Path, split: str = "train", first_id: int = 11) -> Path:
    """2 images (20x30): polygon + uncompressed RLE on one, crowd RLE + difficult on the other."""
    _image(root / "images" / f"{split}_a.png", seed=1)
    _image(root / "images" / f"{split}_b.png", seed=2)
    crowd = np.zeros((20, 30), dtype=np.uint8)
    crowd[2:6, 3:9] = 1
    crowd_rle = mask_utils.encode(np.asfortranarray(crowd))
    crowd_rle["counts"] = crowd_rle["counts"].decode("ascii")
    # Uncompressed RLE (column-major run lengths): 20 zeros, 40 ones = columns 1-2 fully set.
    raw_rle = {"size": [20, 30], "counts": [20, 40, 540]}
    a, b = first_id, first_id + 1
    data = {
        "images": [
            {"id": a, "file_name": f"{split}_a.png", "height": 20, "width": 30},
            {"id": b, "file_name": f"{split}_b.png", "height": 20, "width": 30},
        ],
        "categories": [{"id": 7, "name": "dog"}, {"id": 3, "name": "cat"}],
        "annotations": [
            {"id": 1, "image_id": a, "category_id": 3, "bbox": [10, 5, 10, 10], "iscrowd": 0,
             "segmentation": [[10, 5, 20, 5, 20, 15, 10, 15]]},
            {"id": 2, "image_id": a, "category_id": 7, "bbox": [1, 0, 2, 20], "iscrowd": 0,
             "segmentation": raw_rle},
            {"id": 3, "image_id": b, "category_id": 3, "bbox": [3, 2, 6, 4], "iscrowd": 1,
             "segmentation": crowd_rle},
            {"id": 4, "image_id": b, "category_id": 7, "bbox": [0, 0, 5, 5], "difficult": 1,
             "segmentation": [[0, 0, 5, 0, 5, 5, 0, 5]]},
        ],
    }  # fmt: skip
    path = root / "annotations" / f"instances_{split}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def test_coco_rows(tmp_path: Path) -> None:
    ann = _coco_fixture(tmp_path)
    rows, classes = ingest_coco(str(tmp_path / "images"), str(ann), "train", num_workers=2)
    assert classes == ClassMap(("cat", "dog"), (3, 7))  # project ids follow sorted COCO ids
    assert [r["image_index"] for r in rows] == [11, 12]
    a, b = rows
    assert a["error"] is None and b["error"] is None
    assert a["image_id"] == "11" and a["split"] == "train"
    assert a["path"] == str((tmp_path / "images" / "train_a.png").resolve())
    assert (a["height"], a["width"]) == (20, 30)
    assert a["labels"] == [0, 1] and b["labels"] == [0, 1]
    np.testing.assert_array_equal(as_boxes(a["gt_boxes"]), [[10, 5, 20, 15], [1, 0, 3, 20]])
    assert a["gt_classes"] == [0, 1] and a["gt_difficult"] == [False, False]
    assert b["gt_difficult"] == [True, True]  # iscrowd, then "difficult"
    poly, raw = (decode_mask(m, 20, 30) for m in a["gt_masks"])
    assert poly[5:15, 10:20].all() and poly.sum() < 11 * 11 + 1
    assert raw[:, 1:3].all() and raw.sum() == 40
    crowd = decode_mask(b["gt_masks"][0], 20, 30)
    assert crowd.sum() == 24 and crowd[2:6, 3:9].all()


@pytest.mark.ray
def test_ray_tasks_give_the_same_rows_as_threads(tmp_path: Path, ray_local: None) -> None:
    """Ingest in Ray tasks (2 images per task): masks from polygons and RLE, a corrupt image's
    error row, order and every field the same as the driver's threads."""
    ann = _coco_fixture(tmp_path)
    data = json.loads(ann.read_text())
    for k, name in enumerate(("train_c.png", "train_d.png", "train_e.png")):
        _image(tmp_path / "images" / name, seed=3 + k)
        data["images"].append({"id": 20 + k, "file_name": name, "height": 20, "width": 30})
        data["annotations"].append(
            {"id": 10 + k, "image_id": 20 + k, "category_id": 3, "bbox": [1, 1, 5, 5],
             "iscrowd": 0, "segmentation": [[1, 1, 6, 1, 6, 6, 1, 6]]}
        )  # fmt: skip
    _corrupt(tmp_path / "images" / "train_d.png")
    ann.write_text(json.dumps(data))
    images = str(tmp_path / "images")
    want, want_classes = ingest_coco(images, str(ann), "train", num_workers=1)
    got, classes = ingest_coco(images, str(ann), "train", ray_chunk=2)
    assert classes == want_classes and len(got) == 5
    assert [r["error"] is not None for r in got] == [False, False, False, True, False]
    for g, w in zip(got, want, strict=True):
        assert {k: _plain(v) for k, v in g.items()} == {k: _plain(v) for k, v in w.items()}


def _plain(value: Any) -> Any:
    return value.tolist() if isinstance(value, np.ndarray) else value


def test_coco_image_labels_json_and_errors(tmp_path: Path) -> None:
    ann = _coco_fixture(tmp_path)
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps({"train_a.png": ["dog"], "train_b.png": ["cat", "unicorn"]}))
    rows, _ = ingest_coco(str(tmp_path / "images"), str(ann), "train", str(labels))
    a, b = rows
    assert a["error"] is None and a["labels"] == [1]  # explicit labels win over instances
    assert b["error"] == "unknown class 'unicorn'" and b["labels"] == [0]  # labels kept


def test_coco_size_mismatch_missing_image_and_empty_labels(tmp_path: Path) -> None:
    ann = _coco_fixture(tmp_path)
    data = json.loads(ann.read_text())
    data["images"][0]["width"] = 31
    data["images"].append({"id": 99, "file_name": "gone.png", "height": 5, "width": 5})
    _image(tmp_path / "images" / "empty.png", 4, 4)
    data["images"].append({"id": 100, "file_name": "empty.png", "height": 4, "width": 4})
    ann.write_text(json.dumps(data))
    rows, _ = ingest_coco(str(tmp_path / "images"), str(ann), "train")
    by = _by_id(rows)
    assert by["11"]["error"] == "image is 30x20 (WxH) but its annotations are for 31x20"
    assert by["11"]["gt_boxes"] == [] and by["11"]["labels"] == [0, 1]
    assert by["12"]["error"] is None
    assert by["99"]["error"] == "file not found" and by["99"]["path"].endswith("gone.png")
    assert by["100"]["error"] == NO_LABELS and by["100"]["height"] == 4
    rows, _ = ingest_coco(str(tmp_path / "images"), str(ann), "train", allow_empty_labels=True)
    assert _by_id(rows)["100"]["error"] is None
    rows, _ = ingest_coco(str(tmp_path / "images"), str(ann), "val")  # not a training split
    assert _by_id(rows)["100"]["error"] is None


def test_coco_missing_annotation_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="COCO annotation file not found"):
        ingest_coco(str(tmp_path), str(tmp_path / "nope.json"), "train")


# --------------------------------------------------------------------------- VOC

_VOC_XML = """<annotation><filename>{filename}</filename>
<size><width>30</width><height>20</height><depth>3</depth></size>{objects}</annotation>"""
_VOC_OBJ = """<object><name>{name}</name><difficult>{difficult}</difficult>
<bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox>
</object>"""


def _voc_fixture(root: Path, ids: list[str], objects: dict[str, list[tuple[str, int, tuple]]],
                 filenames: dict[str, str] | None = None) -> Path:  # fmt: skip
    (root / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
    (root / "Annotations").mkdir(parents=True, exist_ok=True)
    (root / "ImageSets" / "Main" / "trainval.txt").write_text("\n".join(ids) + "\n")
    for k, image_id in enumerate(ids):
        filename = (filenames or {}).get(image_id, f"{image_id}.jpg")
        _image(root / "JPEGImages" / filename, seed=k)
        if image_id not in objects:
            continue  # no xml
        objs = "".join(_VOC_OBJ.format(name=n, difficult=d, b=b) for n, d, b in objects[image_id])
        xml = _VOC_XML.format(filename=filename, objects=objs)
        (root / "Annotations" / f"{image_id}.xml").write_text(xml)
    return root


def test_voc_rows(tmp_path: Path) -> None:
    root = _voc_fixture(
        tmp_path / "VOC2007",
        ["000001", "000002", "000003", "000004"],
        {
            "000001": [("dog", 0, (1, 2, 10, 12)), ("person", 1, (5, 5, 30, 20))],
            "000002": [("cat", 0, (1, 1, 30, 20))],
            "000004": [("dog", 0, (1, 1, 5, 5)), ("dragon", 0, (1, 1, 5, 5))],
        },
        filenames={"000002": "other_name.jpg"},
    )
    rows, classes = ingest_voc(str(root), "trainval", num_workers=2)
    assert classes.names[11] == "dog" and classes.num_classes == 20
    by = _by_id(rows)
    assert [r["image_index"] for r in rows] == [1, 2, 3, 4]
    one = by["000001"]
    assert one["error"] is None and (one["height"], one["width"]) == (20, 30)
    # VOC's 1-based inclusive xmin=1, xmax=10 -> continuous x1=0, x2=10.
    np.testing.assert_array_equal(as_boxes(one["gt_boxes"]), [[0, 1, 10, 12], [4, 4, 30, 20]])
    assert one["gt_classes"] == [11, 14] and one["gt_difficult"] == [False, True]
    assert one["labels"] == [11, 14]  # the difficult person counts as an image label
    assert one["gt_masks"] is None
    assert by["000002"]["path"].endswith("JPEGImages/other_name.jpg")
    assert by["000002"]["error"] is None
    assert by["000003"]["error"] == "annotation file not found: Annotations/000003.xml"
    assert by["000004"]["error"] == "unknown class 'dragon'" and by["000004"]["labels"] == [11]


def test_voc_index_of_non_numeric_ids() -> None:
    assert parse_index("000005", 0) == 5
    assert parse_index("2008_000002", 7) == 2008000002
    assert parse_index("img_a", 7) == 7


# --------------------------------------------------------------------------- folder


def _folder_fixture(root: Path) -> Path:
    _image(root / "imgs" / "a.png", seed=1)
    _image(root / "imgs" / "sub" / "b.png", 10, 12, seed=2)
    _corrupt(root / "imgs" / "c.jpg")
    _image(root / "imgs" / "d.png", seed=4)
    _image(root / "imgs" / "e.png", seed=5)
    csv = root / "labels.csv"
    csv.write_text(
        "file,labels\n"
        "a.png,cat;dog\n"
        "sub/b.png, dog | zebra \n"
        "c.jpg,cat\n"
        "d.png,dog\n"
        "missing.png,cat\n"
        "e.png,\n"
    )
    return csv


def test_folder_rows_with_unknown_class_and_corrupt_image(tmp_path: Path) -> None:
    csv = _folder_fixture(tmp_path)
    classes = ClassMap.from_names(["cat", "dog"])
    rows, cmap = ingest_folder(str(tmp_path / "imgs"), str(csv), "train", classes, num_workers=2)
    assert cmap is classes
    assert [r["image_id"] for r in rows] == ["a", "sub/b", "c", "d", "missing", "e"]
    assert [r["image_index"] for r in rows] == list(range(6))
    by = _by_id(rows)
    assert by["a"]["error"] is None and by["a"]["labels"] == [0, 1]
    assert by["sub/b"]["error"] == "unknown class 'zebra'" and by["sub/b"]["labels"] == [1]
    assert by["c"]["error"] == "not an image (cannot identify)" and by["c"]["labels"] == [0]
    assert by["d"]["error"] is None and (by["d"]["height"], by["d"]["width"]) == (20, 30)
    assert by["missing"]["error"] == "file not found"
    assert by["e"]["error"] == NO_LABELS
    assert all(r["gt_boxes"] == [] for r in rows)

    rows, cmap = ingest_folder(str(tmp_path / "imgs"), str(csv), "test")
    assert cmap.names == ("cat", "dog", "zebra")  # sorted union of the CSV
    by = _by_id(rows)
    assert by["sub/b"]["error"] is None and by["sub/b"]["labels"] == [1, 2]
    assert (by["sub/b"]["height"], by["sub/b"]["width"]) == (10, 12)
    assert by["e"]["error"] is None and by["e"]["labels"] == []  # empty ok outside training


def test_folder_bad_csv(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("image,tags\na.png,cat\n")
    with pytest.raises(ValueError, match="file,labels"):
        ingest_folder(str(tmp_path), str(bad), "train")
    bad.write_text("file,labels\na.png,cat\na.png,dog\n")
    with pytest.raises(ValueError, match="listed twice"):
        ingest_folder(str(tmp_path), str(bad), "train")


# --------------------------------------------------------------------------- dispatch, tables


def test_ingest_splits_synthetic_and_manifest_roundtrip(tmp_path: Path) -> None:
    _coco_fixture(tmp_path, "train", first_id=1)
    _coco_fixture(tmp_path, "test", first_id=3)
    rows, classes = ingest_splits(DataConfig(format="synthetic"), str(tmp_path))
    assert [(r["split"], r["image_index"]) for r in rows] == [
        ("train", 1), ("train", 2), ("test", 3), ("test", 4)
    ]  # fmt: skip
    out = tmp_path / "manifest.parquet"
    from weaksam.io.tables import write_table

    write_table(rows, str(out), "manifest", classes)
    tbl = read_table(str(out), "manifest")
    assert tbl.num_rows == 4 and read_classes(str(out)) == classes
    back = tbl.to_pylist()
    assert back[0]["gt_masks"] == rows[0]["gt_masks"]
    np.testing.assert_allclose(back[0]["gt_boxes"], rows[0]["gt_boxes"])


def test_ingest_splits_duplicate_index_and_unknown_format(tmp_path: Path) -> None:
    _coco_fixture(tmp_path, "train")
    cfg = DataConfig(
        format="coco",
        root=str(tmp_path / "images"),
        annotations=str(tmp_path / "annotations" / "instances_train.json"),  # no {split}
        splits=("train", "val"),
    )
    with pytest.raises(ValueError, match="image_index 11 is used twice"):
        ingest_splits(cfg)
    with pytest.raises(ValueError, match=r"unknown data format 'tiff'; known: \['synthetic'"):
        ingest_splits(DataConfig(format="tiff"))


def test_ingest_splits_folder_and_voc(tmp_path: Path) -> None:
    csv = _folder_fixture(tmp_path)
    (tmp_path / "labels_test.csv").write_text("file,labels\nd.png,\na.png,owl\n")
    csv.rename(tmp_path / "labels_train.csv")
    cfg = DataConfig(format="folder", root="imgs", annotations="labels_{split}.csv")
    rows, classes = ingest_splits(cfg, str(tmp_path))
    assert classes.names == ("cat", "dog", "owl", "zebra")  # union over both splits
    assert [r["image_index"] for r in rows] == list(range(8))
    assert [r["split"] for r in rows[-2:]] == ["test", "test"]

    root = _voc_fixture(tmp_path / "VOC", ["img_x", "img_y"], {
        "img_x": [("cat", 0, (1, 1, 4, 4))], "img_y": [("dog", 0, (1, 1, 4, 4))],
    })  # fmt: skip
    (root / "classes.txt").write_text("cat\ndog\n")
    cfg = DataConfig(format="voc", root=str(root), splits=("trainval",), classes_file="classes.txt")
    with pytest.raises(FileNotFoundError):  # relative to data_root, which is not given
        ingest_splits(cfg)
    cfg = DataConfig(format="voc", root="VOC", splits=("trainval",), classes_file="VOC/classes.txt")
    rows, classes = ingest_splits(cfg, str(tmp_path))
    assert classes.names == ("cat", "dog")
    assert [(r["image_index"], r["labels"], r["error"]) for r in rows] == [
        (0, [0], None), (1, [1], None)
    ]  # fmt: skip


def test_summary_counts_errors_by_kind(tmp_path: Path) -> None:
    csv = _folder_fixture(tmp_path)
    rows, classes = ingest_folder(str(tmp_path / "imgs"), str(csv), "train")
    summary = summarize_rows(rows, classes)
    assert summary["splits"] == {"train": {"images": 6, "ok": 3, "errors": 3}}
    assert summary["errors_by_reason"] == {
        "not an image (cannot identify)": 1, "file not found": 1, NO_LABELS: 1
    }  # fmt: skip
    assert summary["images_per_class"] == {"cat": 1, "dog": 3, "zebra": 1}
    text = format_summary(summary)
    assert "train" in text and "file not found" in text and "classes (3)" in text
    assert error_kind("image is 300x200 = 60000 px, over the limit of 5") == (
        "image is #x# = # px, over the limit of #"
    )
    assert error_kind("unknown class 'class7'") == "unknown class 'class7'"


# --------------------------------------------------------------------------- entry point


def test_cli_without_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv = _folder_fixture(tmp_path)
    out = tmp_path / "out" / "manifest.parquet"
    argv = ["--format", "folder", "--root", str(tmp_path / "imgs"), "--annotations", str(csv)]
    code = ingest_job.main([*argv, "--split", "train", "--out", str(out), "--no-progress"])
    assert code == 0  # error rows are data
    tbl = read_table(str(out), "manifest")
    assert tbl.num_rows == 6
    assert sorted(e for e in tbl.column("error").to_pylist() if e) == [
        "file not found", NO_LABELS, "not an image (cannot identify)"
    ]  # fmt: skip
    assert read_classes(str(out)).names == ("cat", "dog", "zebra")
    printed = capsys.readouterr().out
    assert "errors by reason" in printed and "classes (3): cat, dog, zebra" in printed

    missing = ["--annotations", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "x.parquet")]
    assert ingest_job.main(["--format", "folder", "--root", str(tmp_path), *missing]) == 2
    assert "labels CSV not found" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        ingest_job.main(["--format", "folder", "--root", str(tmp_path)])  # no --out
    assert exc.value.code == 2


def test_cli_with_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`ray_jobs.ingest --config` is the pipeline's stage: same marker, so the pipeline skips
    it; a rerun skips it too; a bad config fails before anything is written."""
    from weaksam.config import load_run_config
    from weaksam.pipeline.core import run_stages
    from weaksam.pipeline.stages import STAGES

    data = tmp_path / "coco"
    ann = _coco_fixture(data, "train", first_id=1)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        f"name: t\nrun_root: {tmp_path / 'runs'}\ndata:\n  format: coco\n"
        f"  root: {data / 'images'}\n  annotations: {ann}\n  splits: [train]\n"
    )
    assert ingest_job.main(["--config", str(cfg)]) == 0
    run_dir = tmp_path / "runs" / "t"
    out_dir = run_dir / "ingest"
    assert read_table(str(out_dir / "manifest.parquet"), "manifest").num_rows == 2
    metrics = read_metrics(str(out_dir))
    assert metrics["splits"]["train"] == {"images": 2, "ok": 2, "errors": 0}
    assert metrics["classes"] == ["cat", "dog"]
    assert is_complete(str(out_dir))
    assert os.path.exists(run_dir / "config.resolved.yaml")
    assert "stage ingest: ran" in capsys.readouterr().out

    # the pipeline's runner recognises the single-stage run's marker
    ran: list[str] = []
    stages = [s for s in STAGES if s.name in ("data", "ingest")]
    reports = run_stages(load_run_config(str(cfg)), stages, only=None)
    ran = [r.name for r in reports if r.action == "ran"]
    assert ran == [] and [r.action for r in reports] == ["disabled", "skipped"]
    assert ingest_job.main(["--config", str(cfg)]) == 0
    assert "stage ingest: fresh, skipped" in capsys.readouterr().out

    before = (out_dir / "manifest.parquet").read_bytes()
    for override, message in (
        (f"data.root={tmp_path / 'missing'}", "data.root: no such folder"),
        ("data.annotations=", "format 'coco' needs data.annotations"),
    ):
        bad = ["--config", str(cfg), "--set", override, "--force"]
        assert ingest_job.main(bad) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1
    assert (out_dir / "manifest.parquet").read_bytes() == before
