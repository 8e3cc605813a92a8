"""PGT rows for a split: both rules, error and empty rows, COCO inputs equal Parquet inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from weaksam.eval.formats import (
    detections_to_coco_results,
    gt_to_coco,
    load_detections_table,
    load_manifest_gt,
)
from weaksam.pgt.build import build_pgt_rows, read_detections
from weaksam.pgt.labels import read_coco_labels, read_labels
from weaksam.pgt.rules import PGTConfig


def _by_id(rows: list[dict]) -> dict[str, dict]:
    return {r["image_id"]: r for r in rows}


def test_adaptive_and_top1_rows(pgt_inputs: dict[str, str]) -> None:
    labels = read_labels(pgt_inputs["manifest"], split="train")
    dets = read_detections(pgt_inputs["detections"], labels)
    ada = _by_id(build_pgt_rows(dets, labels, PGTConfig("adaptive")))
    np.testing.assert_allclose(
        ada["i0"]["boxes"], [2, 2, 12, 12, 20, 0, 30, 10, 16, 16, 30, 30]
    )  # contained duplicate and low-normalised box dropped; class c (not a label) dropped
    assert ada["i0"]["classes"] == [0, 0, 1]
    np.testing.assert_allclose(ada["i0"]["scores"], [0.9, 0.7, 0.6], rtol=1e-6)
    assert ada["i1"]["classes"] == [2] and ada["i1"]["masks"] is None
    assert ada["i2"]["error"] == "corrupt image" and ada["i2"]["boxes"] == []
    assert ada["i3"]["error"] is None and ada["i3"]["boxes"] == []  # no detections row
    top = _by_id(build_pgt_rows(dets, labels, PGTConfig("top1")))
    np.testing.assert_allclose(top["i0"]["boxes"], [2, 2, 12, 12, 16, 16, 30, 30])
    only = build_pgt_rows(dets, labels, PGTConfig("top1"), only_detected=True)
    assert [r["image_id"] for r in only] == ["i0", "i1", "i2"]


def test_coco_inputs_give_the_same_pgt(pgt_inputs: dict[str, str], tmp_path) -> None:
    gt = load_manifest_gt(pgt_inputs["manifest"])
    coco_gt = gt_to_coco(gt.records, gt.classes)
    # an image-level-labels json: boxes are present but must not matter (poisoned here)
    for ann in coco_gt["annotations"]:
        ann["bbox"] = [0.0, 0.0, -1.0, -1.0]
        ann.pop("segmentation", None)
    labels_json = tmp_path / "labels.json"
    labels_json.write_text(json.dumps(coco_gt))
    results = detections_to_coco_results(
        load_detections_table(pgt_inputs["detections"]).records, gt.classes
    )
    results_json = tmp_path / "results.json"
    results_json.write_text(json.dumps(results))

    from_coco = read_coco_labels(str(labels_json))
    assert from_coco.classes.source_ids == (11, 12, 13)
    a = build_pgt_rows(read_detections(str(results_json), from_coco), from_coco, PGTConfig())
    manifest_labels = read_labels(pgt_inputs["manifest"])
    b = build_pgt_rows(
        read_detections(pgt_inputs["detections"], manifest_labels),
        manifest_labels,
        PGTConfig(),
        only_detected=True,
    )
    # COCO ids are the image indices; the error row (no GT) is not in the COCO json
    good_b = {r["image_index"]: r for r in b if not r["error"]}
    compared = [r for r in a if r["image_index"] in good_b]
    assert good_b and {r["image_index"] for r in compared} == set(good_b)  # each one compared
    for r in compared:
        np.testing.assert_allclose(r["boxes"], good_b[r["image_index"]]["boxes"], atol=1e-5)
        assert r["classes"] == good_b[r["image_index"]]["classes"]


def test_unknown_result_images_and_classes_raise(pgt_inputs: dict[str, str], tmp_path) -> None:
    labels = read_labels(pgt_inputs["manifest"])
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"image_id": 99, "category_id": 11, "bbox": [0, 0, 1, 1]}]))
    with pytest.raises(ValueError, match="unknown"):
        read_detections(str(bad), labels)
    bad.write_text(
        json.dumps([{"image_id": 1, "category_id": 99, "bbox": [0, 0, 1, 1], "score": 1}])
    )
    with pytest.raises(KeyError):
        read_detections(str(bad), labels)
