"""The PGT step between object-store locations (moto S3): inputs read and outputs written
through weaksam.storage, the same bytes as a local run."""

from __future__ import annotations

import json
import os
from pathlib import Path

from weaksam import storage
from weaksam.config import load_config
from weaksam.io.tables import read_table
from weaksam.pgt.build import read_detections
from weaksam.pgt.labels import read_labels
from weaksam.pgt.stage import evaluate_pgt, make_pgt_outputs


def test_make_pgt_outputs_at_s3_match_local(
    pgt_inputs: dict[str, str], s3_bucket: str, tmp_path: Path
) -> None:
    cfg = load_config(None, ["pgt.masks=false"]).pgt
    remote = {}
    for key in ("manifest", "detections"):
        remote[key] = storage.join(s3_bucket, "in", os.path.basename(pgt_inputs[key]))
        storage.upload_file(pgt_inputs[key], remote[key])
    local_out, s3_out = str(tmp_path / "pgt"), storage.join(s3_bucket, "run", "pgt")
    labels = read_labels(pgt_inputs["manifest"], split="train")
    local = make_pgt_outputs(pgt_inputs["detections"], labels, cfg, local_out)
    labels_s3 = read_labels(remote["manifest"], split="train")
    assert labels_s3 == labels
    metrics = make_pgt_outputs(remote["detections"], labels_s3, cfg, s3_out)
    drop = ("rule_seconds",)
    assert {k: v for k, v in metrics.items() if k not in drop} == {
        k: v for k, v in local.items() if k not in drop
    }
    with open(os.path.join(local_out, "pgt_coco.json"), "rb") as fh:
        assert storage.read_bytes(storage.join(s3_out, "pgt_coco.json")) == fh.read()
    assert (
        read_table(storage.join(s3_out, "pgt.parquet"), "pgt").to_pylist()
        == read_table(os.path.join(local_out, "pgt.parquet"), "pgt").to_pylist()
    )
    assert evaluate_pgt(s3_out, remote["manifest"], split="train") == evaluate_pgt(
        local_out, pgt_inputs["manifest"], split="train"
    )


def test_coco_labels_and_results_json_at_s3(pgt_inputs: dict[str, str], s3_bucket: str) -> None:
    coco = {
        "images": [{"id": 1, "file_name": "i0.png", "height": 32, "width": 32}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 12, "bbox": [0, 0, 4, 4]}],
        "categories": [{"id": 11, "name": "a"}, {"id": 12, "name": "b"}],
    }
    loc = storage.join(s3_bucket, "coco", "labels.json")
    storage.write_text(loc, json.dumps(coco))
    labels = read_labels(loc, image_root=storage.join(s3_bucket, "images"))
    im = labels.images["1"]
    assert im.path == storage.join(s3_bucket, "images", "i0.png") and im.labels == (1,)
    results = storage.join(s3_bucket, "coco", "results.json")
    storage.write_text(results, json.dumps([{"image_id": 1, "category_id": 12,
                                            "bbox": [0, 0, 4, 4], "score": 0.5}]))  # fmt: skip
    dets = read_detections(results, labels)
    assert dets["1"].classes.tolist() == [1] and dets["1"].boxes.tolist() == [[0, 0, 4, 4]]
