"""Loaders and exporters: COCO json and the project's Parquet tables round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest

from weaksam.eval import (
    Detections,
    GroundTruth,
    IdMismatchError,
    align_detections,
    detections_to_coco_results,
    gt_to_coco,
    load_coco_gt,
    load_coco_results,
    load_detections_table,
    load_manifest_gt,
)
from weaksam.io.classes import ClassMap
from weaksam.io.rle import decode_mask, encode_mask
from weaksam.io.tables import write_table

CLASSES = ClassMap.from_names(["cat", "dog"], [3, 17])


def _mask(x1: int, y1: int, x2: int, y2: int, h: int = 30, w: int = 40) -> bytes:
    m = np.zeros((h, w), np.uint8)
    m[y1:y2, x1:x2] = 1
    return encode_mask(m)


def _gts() -> list[GroundTruth]:
    return [
        GroundTruth(
            image_id="7",
            image_index=7,
            height=30,
            width=40,
            boxes=np.array([[1, 2, 11, 12], [20, 5, 40, 30]], np.float32),
            classes=np.array([1, 0]),
            difficult=np.array([False, True]),
            masks=[_mask(1, 2, 11, 12), _mask(20, 5, 40, 30)],
        ),
        GroundTruth(
            image_id="9",
            image_index=9,
            height=30,
            width=40,
            boxes=np.zeros((0, 4), np.float32),
            classes=np.zeros(0),
            difficult=np.zeros(0, bool),
            masks=[],
        ),
    ]


def test_coco_gt_round_trip() -> None:
    gts = _gts()
    data = json.loads(json.dumps(gt_to_coco(gts, CLASSES)))
    assert [c["id"] for c in data["categories"]] == [3, 17]
    assert data["annotations"][0]["category_id"] == 17
    assert data["annotations"][1]["iscrowd"] == 1
    assert data["annotations"][0]["bbox"] == [1.0, 2.0, 10.0, 10.0]
    loaded = load_coco_gt(data)
    assert loaded.classes == CLASSES
    for a, b in zip(gts, loaded.records, strict=True):
        assert (a.image_id, a.image_index, a.height, a.width) == (
            b.image_id,
            b.image_index,
            b.height,
            b.width,
        )
        np.testing.assert_array_equal(a.boxes, b.boxes)
        np.testing.assert_array_equal(a.classes, b.classes)
        np.testing.assert_array_equal(a.difficult, b.difficult)
        assert a.masks == b.masks
    np.testing.assert_allclose(loaded.records[0].areas, [100, 500])


def test_coco_gt_polygons_and_flags(tmp_path) -> None:
    data = {
        "images": [{"id": 1, "file_name": "x.jpg", "height": 30, "width": 40}],
        "categories": [{"id": 5, "name": "cat"}],
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 5,
                "bbox": [0, 0, 10, 10],
                "segmentation": [[0, 0, 10, 0, 10, 10, 0, 10]],
                "difficult": 1,
            }
        ],
    }
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(data))
    g = load_coco_gt(str(path)).records[0]
    assert g.difficult.tolist() == [True]
    assert g.masks is not None
    assert decode_mask(g.masks[0], 30, 40)[:10, :10].all()
    data["annotations"][0]["category_id"] = 6
    with pytest.raises(IdMismatchError, match="category id 6"):
        load_coco_gt(data)


def test_results_round_trip_and_mismatch() -> None:
    gts = _gts()
    dets = [
        Detections(
            image_id="7",
            boxes=np.array([[1, 2, 11, 12], [0, 0, 5, 5]], np.float32),
            scores=np.array([0.9, 0.2]),
            classes=np.array([1, 0]),
            masks=[_mask(1, 2, 11, 12), _mask(0, 0, 5, 5)],
            image_index=7,
            height=30,
            width=40,
        )
    ]
    results = json.loads(json.dumps(detections_to_coco_results(dets, CLASSES)))
    assert [r["category_id"] for r in results] == [17, 3]
    assert results[0]["image_id"] == 7
    back = load_coco_results(results, gts, CLASSES).records
    assert len(back) == 1 and back[0].image_id == "7"
    np.testing.assert_array_equal(back[0].boxes, dets[0].boxes)
    np.testing.assert_allclose(back[0].scores, dets[0].scores)
    np.testing.assert_array_equal(back[0].classes, dets[0].classes)
    assert back[0].masks == dets[0].masks
    with pytest.raises(IdMismatchError, match="image ids"):
        load_coco_results([{**results[0], "image_id": 8}], gts, CLASSES)
    with pytest.raises(IdMismatchError):
        load_coco_results([{**results[0], "category_id": 4}], gts, CLASSES)
    aligned = align_detections(gts, back)
    assert [d.image_id for d in aligned] == ["7", "9"] and len(aligned[1]) == 0


def test_manifest_round_trip(tmp_path) -> None:
    rows = [
        {
            "image_id": "a",
            "image_index": 0,
            "height": 30,
            "width": 40,
            "split": "test",
            "labels": [0],
            "gt_boxes": [1, 2, 11, 12],
            "gt_classes": [0],
            "gt_difficult": [True],
            "gt_masks": [_mask(1, 2, 11, 12)],
        },
        {"image_id": "b", "image_index": 1, "split": "test", "error": "corrupt"},
        {"image_id": "c", "image_index": 2, "height": 30, "width": 40, "split": "train",
         "gt_boxes": [], "gt_classes": [], "gt_difficult": []},
    ]  # fmt: skip
    path = str(tmp_path / "manifest" / "part-0.parquet")
    write_table(rows, path, "manifest", CLASSES)
    gt = load_manifest_gt(str(tmp_path / "manifest"))
    assert gt.classes == CLASSES
    assert [g.image_id for g in gt.records] == ["a", "c"]
    assert gt.skipped == {"b": "error row: corrupt"}
    a = gt.records[0]
    np.testing.assert_array_equal(a.boxes, [[1, 2, 11, 12]])
    assert a.difficult.tolist() == [True] and a.masks == [_mask(1, 2, 11, 12)]
    assert gt.records[1].masks is None and len(gt.records[1]) == 0
    assert [g.image_id for g in load_manifest_gt(path, split="train").records] == ["c"]


def test_detections_and_proposals_tables(tmp_path) -> None:
    det_rows = [
        {"image_id": "a", "image_index": 0, "height": 30, "width": 40,
         "boxes": [0, 0, 5, 5, 1, 1, 9, 9], "scores": [0.2, 0.8], "classes": [1, 0]},
        {"image_id": "b", "image_index": 1, "error": "timeout"},
    ]  # fmt: skip
    write_table(det_rows, str(tmp_path / "d.parquet"), "detections", CLASSES)
    ds = load_detections_table(str(tmp_path / "d.parquet"))
    assert ds.kind == "detections" and ds.classes == CLASSES
    assert ds.errors == {"b": "timeout"}
    assert ds.records[0].classes.tolist() == [1, 0] and len(ds.records[1]) == 0
    prop_rows = [
        {"image_id": "a", "image_index": 0, "height": 30, "width": 40,
         "boxes": [0, 0, 5, 5, 1, 1, 9, 9], "scores": [0.2, 0.8], "sources": ["grid", "grid"],
         "class_hints": [1, -1]},
    ]  # fmt: skip
    write_table(prop_rows, str(tmp_path / "p.parquet"), "proposals", CLASSES)
    ps = load_detections_table(str(tmp_path / "p.parquet"))
    assert ps.kind == "proposals"
    p = ps.records[0]
    assert p.classes.tolist() == [-1, -1]
    np.testing.assert_allclose(p.scores, [0.2, 0.8])  # stored order, not re-sorted
    np.testing.assert_array_equal(p.boxes[0], [0, 0, 5, 5])
    with pytest.raises(ValueError, match="class"):
        detections_to_coco_results(ps.records, CLASSES)


def test_record_validation() -> None:
    with pytest.raises(ValueError, match="classes"):
        Detections(image_id="a", boxes=np.zeros((2, 4)), scores=np.zeros(2), classes=[0])
    with pytest.raises(IdMismatchError, match="'zz'"):
        align_detections(_gts(), [Detections(image_id="zz", boxes=[], scores=[], classes=[])])
