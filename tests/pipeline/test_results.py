"""The results table names the split of every figure: the run's own split names."""

from __future__ import annotations

from weaksam.pipeline.results import LABELS, RESULT_KEYS, collect_results, label, results_table
from weaksam.stage import StageReport


def test_every_label_names_its_split() -> None:
    for key in RESULT_KEYS:
        text = LABELS[key]
        assert "{test}" in text or "{train}" in text or "all splits" in text, key


def test_labels_use_the_runs_split_names() -> None:
    reports = [
        StageReport("classify", "ran", 1.0, 0.0, {"cls_map": 0.5}),
        StageReport(
            "wsod", "ran", 1.0, 0.0, {"method": "mist", "methods": {"mist": {"corloc": 0.25}}}
        ),
    ]
    res = collect_results(reports, 2.0, test_split="val", train_split="trainval")
    assert res["splits"] == {"train": "trainval", "test": "val"}
    table = results_table(res)
    assert "classification mAP (val)" in table and "WSOD CorLoc (trainval)" in table
    assert label("point_precision", res) == "peak-point precision (trainval + val, pooled)"
    assert label("cls_map", {}) == "classification mAP (test)"  # results of older runs
