"""Stage helpers without Ray: run naming, split outputs (error rows, COCO json), evaluation."""

from __future__ import annotations

import json
import os

import pytest

from weaksam.config import load_config
from weaksam.eval import evaluate, load_manifest_gt, to_jsonable
from weaksam.eval.formats import load_detections_table
from weaksam.io.tables import read_classes, read_table
from weaksam.runs import manifest_path
from weaksam.wsod.data import read_weak_manifest
from weaksam.wsod.stage import evaluate_method, proposals_path, run_name, write_split_outputs

from .conftest import one_detection


def test_run_name_ignores_test_settings_only(wsod_run: str) -> None:
    manifest = manifest_path(wsod_run)
    base = load_config(None, [])
    name = run_name(base, "mist", [manifest])
    assert name.startswith("mist-")
    for same in (["wsod.test.scales=[128]"], ["wsod.compare=[wsddn]"], ["wsod.test.num_actors=4"]):
        assert run_name(load_config(None, same), "mist", [manifest]) == name
    for other in (["wsod.train.steps=7"], ["wsod.data.max_proposals=5"], ["seed=3"]):
        assert run_name(load_config(None, other), "mist", [manifest]) != name
    assert run_name(base, "oicr", [manifest]) != name


def test_proposals_path_grid_and_missing(tmp_path) -> None:
    cfg = load_config(None, ["wsod.proposals=grid"]).wsod
    assert proposals_path(str(tmp_path), cfg) == ""
    with pytest.raises(FileNotFoundError, match="proposals stage"):
        proposals_path(str(tmp_path), load_config(None, []).wsod)


def test_split_outputs_keep_every_image_and_evaluate(wsod_run: str, tmp_path) -> None:
    manifest = manifest_path(wsod_run)
    classes = read_classes(manifest)
    rows = read_weak_manifest(manifest)
    test_rows = [r for r in rows if r["split"] == "test"]
    first = test_rows[0]
    dets = one_detection(first)
    skipped = {test_rows[-1]["image_id"]: "proposals error row"}
    out = str(tmp_path)
    path = write_split_outputs(dets, skipped, rows, "test", out, classes)
    tbl = read_table(path, "detections").to_pylist()
    assert [r["image_id"] for r in tbl] == [r["image_id"] for r in test_rows]
    by_id = {r["image_id"]: r for r in tbl}
    assert by_id[test_rows[-1]["image_id"]]["error"] == "proposals error row"
    assert by_id[test_rows[1]["image_id"]]["error"] == "not processed"
    with open(os.path.join(out, "coco_results_test.json")) as fh:
        coco = json.load(fh)
    assert coco == [
        {
            "image_id": first["image_index"],
            "category_id": classes.source_ids[1],
            "bbox": [0.0, 0.0, 10.0, 10.0],
            "score": 0.5,
        }
    ]
    res = evaluate_method(manifest, out, train_split="train", test_split="test")
    # the test split's table against the test split's GT; no training table, so no CorLoc
    gt = load_manifest_gt(manifest, split="test")
    direct = evaluate(gt.records, load_detections_table(path).records, ("voc07",), gt.classes)
    assert res["voc07"] == to_jsonable(direct)["voc07"] and "corloc" not in res


def test_results_take_the_wsod_metrics() -> None:
    from weaksam.pipeline.results import collect_results
    from weaksam.stage import StageReport

    metrics = {
        "method": "mist",
        "methods": {
            "mist": {"ap50_voc07": 0.4, "corloc": 0.6},
            "wsddn": {"ap50_voc07": 0.2, "corloc": 0.3},
            "supervised": {"ap50_voc07": 0.5, "corloc": 0.8},
        },
    }
    res = collect_results([StageReport("wsod", "ran", 1.0, 0.0, metrics)], 1.0)
    assert res["wsod_ap50_mist"] == 0.4 and res["wsod_ap50_wsddn"] == 0.2
    assert res["wsod_ap50_oicr"] is None and res["wsod_corloc"] == 0.6
