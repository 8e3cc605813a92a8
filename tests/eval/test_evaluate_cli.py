"""python -m ray_jobs.evaluate on tiny files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ray_jobs.evaluate import main
from weaksam.eval import Detections, GroundTruth, detections_to_coco_results, gt_to_coco
from weaksam.io.classes import ClassMap
from weaksam.io.tables import write_table

CLASSES = ClassMap.from_names(["cat", "dog"], [1, 2])


def _gt(image_index: int, boxes: list[list[float]]) -> GroundTruth:
    """One 50x50 ground-truth image with ``boxes``, all of class 0."""
    return GroundTruth(
        image_id=str(image_index),
        image_index=image_index,
        height=50,
        width=50,
        boxes=np.array(boxes, np.float32),
        classes=np.zeros(len(boxes), dtype=np.int64),
        difficult=np.zeros(len(boxes), dtype=bool),
    )


def _det(image_index: int) -> Detections:
    """One class-0 detection at (0, 0, 20, 20), score 0.9."""
    return Detections(
        image_id=str(image_index),
        boxes=np.array([[0, 0, 20, 20]], np.float32),
        scores=np.array([0.9]),
        classes=np.array([0]),
        image_index=image_index,
    )


def _write_coco(tmp_path, gts: list[GroundTruth], dets: list[Detections]) -> tuple[str, str]:
    gt_path, det_path = tmp_path / "gt.json", tmp_path / "res.json"
    gt_path.write_text(json.dumps(gt_to_coco(gts, CLASSES)))
    det_path.write_text(json.dumps(detections_to_coco_results(dets, CLASSES)))
    return str(gt_path), str(det_path)


def _write_coco_pair(tmp_path) -> tuple[str, str]:
    return _write_coco(tmp_path, [_gt(5, [[0, 0, 20, 20], [25, 25, 50, 50]])], [_det(5)])


def test_cli_coco_json_pair(tmp_path, capsys) -> None:
    gt, res = _write_coco_pair(tmp_path)
    out = tmp_path / "m" / "metrics.json"
    argv = ["--gt", gt, "--detections", res, "--metric", "voc07", "--metric", "corloc"]
    assert main([*argv, "--metric", "coco", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    m = data["metrics"]
    assert m["voc07"]["per_class"]["cat"]["AP"] == pytest.approx(6 / 11)  # recall 0.5
    assert m["voc07"]["per_class"]["dog"]["AP"] is None  # NaN -> null
    assert m["corloc"]["overall"]["CorLoc"] == 1.0
    assert "AP" in m["coco"]["overall"]
    printed = capsys.readouterr().out
    assert "== voc07 ==" in printed and "cat" in printed


def test_cli_parquet_pair_and_proposals(tmp_path) -> None:
    manifest = [
        {"image_id": "a", "image_index": 0, "height": 50, "width": 50,
         "gt_boxes": [0, 0, 20, 20], "gt_classes": [1], "gt_difficult": [False]},
        {"image_id": "b", "image_index": 1, "error": "bad file"},
    ]  # fmt: skip
    write_table(manifest, str(tmp_path / "manifest" / "part-0.parquet"), "manifest", CLASSES)
    dets = [{"image_id": "a", "image_index": 0, "height": 50, "width": 50,
             "boxes": [0, 0, 20, 20], "scores": [0.5], "classes": [1]}]  # fmt: skip
    write_table(dets, str(tmp_path / "dets" / "part-0.parquet"), "detections", CLASSES)
    out = tmp_path / "m.json"
    argv = ["--gt", str(tmp_path / "manifest"), "--detections", str(tmp_path / "dets")]
    assert main([*argv, "--metric", "voc", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["metrics"]["voc"]["overall"]["mAP"] == pytest.approx(1.0)
    assert data["skipped_gt"] == {"b": "error row: bad file"}
    props = [{"image_id": "a", "image_index": 0, "boxes": [0, 0, 20, 20], "scores": [0.5],
              "sources": ["grid"], "class_hints": [-1]}]  # fmt: skip
    write_table(props, str(tmp_path / "props.parquet"), "proposals", CLASSES)
    argv = ["--gt", str(tmp_path / "manifest"), "--detections", str(tmp_path / "props.parquet")]
    assert main([*argv, "--metric", "recall", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["metrics"]["recall"]["overall"]["recall@0.9"] == 1.0
    assert main([*argv, "--metric", "voc"]) == 2
    other = ClassMap.from_names(["bird", "dog"])
    write_table(dets, str(tmp_path / "other.parquet"), "detections", other)
    argv = ["--gt", str(tmp_path / "manifest"), "--detections", str(tmp_path / "other.parquet")]
    assert main([*argv, "--metric", "voc"]) == 2


def test_cli_errors(tmp_path, capsys) -> None:
    gt, res = _write_coco_pair(tmp_path)
    assert main(["--gt", str(tmp_path / "nope.json"), "--detections", res, "--metric", "voc"]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["--gt", gt, "--detections", res, "--metric", "bleu"]) == 2
    assert "known" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"image_id": 99, "category_id": 1, "bbox": [0, 0, 1, 1],
                                "score": 1.0}]))  # fmt: skip
    assert main(["--gt", gt, "--detections", str(bad), "--metric", "voc"]) == 2
    assert "ids do not match" in capsys.readouterr().err


def test_cli_notes_when_most_images_have_no_detections(tmp_path, capsys) -> None:
    gts = [_gt(i, [[0, 0, 20, 20]]) for i in range(3)]
    gt_path, det_path = _write_coco(tmp_path, gts, [_det(0)])
    argv = ["--gt", gt_path, "--detections", det_path, "--metric", "voc"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "2 without detections" in out and "pass --split" in out
    _write_coco(tmp_path, gts[:1], [_det(0)])
    assert main(argv) == 0
    assert "pass --split" not in capsys.readouterr().out


def test_cli_on_s3(s3_bucket: str, tmp_path) -> None:
    """COCO json and Parquet inputs in a bucket, the metrics written there (same bytes as a
    local ``--out``); a missing object and an unknown scheme are one-line refusals."""
    from weaksam import storage

    gt, res = _write_coco_pair(tmp_path)
    s3_gt, s3_res = f"{s3_bucket}/in/gt.json", f"{s3_bucket}/in/res.json"
    storage.upload_file(gt, s3_gt)
    storage.upload_file(res, s3_res)
    local_out, s3_out = tmp_path / "m.json", f"{s3_bucket}/out/metrics.json"
    argv = ["--detections", s3_res, "--metric", "voc07", "--metric", "corloc"]
    assert main(["--gt", s3_gt, *argv, "--out", s3_out]) == 0
    assert main(["--gt", gt, "--detections", res, *argv[2:], "--out", str(local_out)]) == 0
    remote = storage.read_json(s3_out)
    assert remote["metrics"] == json.loads(local_out.read_text())["metrics"]
    assert remote["gt"] == s3_gt and remote["metrics"]["corloc"]["overall"]["CorLoc"] == 1.0

    dets = [{"image_id": "5", "image_index": 5, "height": 50, "width": 50,
             "boxes": [0, 0, 20, 20], "scores": [0.9], "classes": [0]}]  # fmt: skip
    write_table(dets, f"{s3_bucket}/dets/part-0.parquet", "detections", CLASSES)
    assert main(["--gt", s3_gt, "--detections", f"{s3_bucket}/dets", "--metric", "voc07"]) == 0

    assert main(["--gt", f"{s3_bucket}/in/nope.json", *argv]) == 2
    assert main(["--gt", "gs://b/gt.json", *argv]) == 2
