"""results.json: split names in every label, family-suffixed keys, the upstream comparison."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from weaksam.pipeline.results import (
    LABELS,
    RESULT_KEYS,
    add_upstream,
    collect_results,
    comparison_rows,
    comparison_table,
    family_keys,
    label,
    results_table,
)
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


def _detector_reports() -> list[StageReport]:
    retrain = {"ap50_voc07": 0.6, "ap50_no_drop": 0.55, "upper_bound_ap50": 0.8}
    wsis = {"mask_ap25": 0.7, "mask_ap50": 0.5, "mask_ap70": 0.2, "mask_ap75": 0.1}
    wsis["upper_bound_mask_ap50"] = 0.625
    return [
        StageReport("retrain", "ran", 1.0, 0.0, retrain),
        StageReport("wsis", "ran", 1, 0, wsis),
    ]


def test_rcnn_keys_are_unchanged_and_get_the_mask_ratio() -> None:
    res = collect_results(_detector_reports(), 1.0)
    assert res["families"] == {"retrain": "rcnn", "wsis": "rcnn"}
    assert res["retrain_ap50"] == 0.6 and res["retrain_ap50_no_drop"] == 0.55
    assert res["weak_full_ratio"] == pytest.approx(0.75)
    assert res["wsis_ap50"] == 0.5 and res["weak_full_mask_ratio"] == pytest.approx(0.8)
    assert all(res[k] is None for k in RESULT_KEYS if k.endswith(("_detr", "_m2f")))
    table = results_table(res)
    assert "retrained Faster R-CNN AP50 (test)" in table
    assert "Mask R-CNN mask AP50 / fully supervised (test)" in table


def test_transformer_families_get_suffixed_keys_and_labels() -> None:
    res = collect_results(
        _detector_reports(),
        1.0,
        test_split="val",
        retrain_family="rt_detr",
        wsis_family="mask2former",
    )
    assert res["retrain_ap50_detr"] == 0.6 and res["upper_bound_ap50_detr"] == 0.8
    assert res["weak_full_ratio_detr"] == pytest.approx(0.75)
    assert [res[f"wsis_ap{t}_m2f"] for t in (25, 50, 70, 75)] == [0.7, 0.5, 0.2, 0.1]
    assert res["upper_bound_mask_ap50_m2f"] == 0.625
    assert res["weak_full_mask_ratio_m2f"] == pytest.approx(0.8)
    rcnn = ("retrain_ap50", "retrain_ap50_no_drop", "wsis_ap50", "weak_full_mask_ratio")
    assert all(res[k] is None for k in rcnn)  # never an RT-DETR figure under an R-CNN key
    table = results_table(res)
    assert "retrained RT-DETR AP50 (val)" in table and "Faster R-CNN" not in table
    assert "Mask2Former mask AP75 (val)" in table
    assert "fully supervised Mask2Former mask AP50 (val)" in table
    keys = family_keys(res)  # what the report lists as "not measured" when null
    assert "retrain_ap50_detr" in keys and "wsis_ap50_m2f" in keys
    assert "retrain_ap50" not in keys and "retrain_ap50_no_drop" not in keys
    assert "wsis_ap50" not in keys and "weak_full_mask_ratio" not in keys


def test_display_names() -> None:
    from weaksam.detection.family_names import display_name, result_suffix

    assert [display_name("rcnn"), display_name("rcnn", masks=True)] == [
        "Faster R-CNN",
        "Mask R-CNN",
    ]
    assert (
        display_name("rt_detr") == "RT-DETR" and display_name("mask2former", True) == "Mask2Former"
    )
    assert result_suffix("rt_detr") == "_detr" and result_suffix("mask2former") == "_m2f"
    with pytest.raises(ValueError, match="families"):
        display_name("yolo")


def _upstream_run(tmp_path: Path) -> tuple[Path, Path]:
    """An upstream run with R-CNN results and a ``pgt`` folder, and a run linking its pgt."""
    up, run = tmp_path / "up", tmp_path / "run"
    (up / "pgt").mkdir(parents=True)
    run.mkdir()
    os.symlink(up / "pgt", run / "pgt")
    theirs = collect_results(_detector_reports(), 9.0)
    (up / "results.json").write_text(json.dumps(theirs))
    return up, run


def test_upstream_figures_are_stored_and_tabled(tmp_path: Path) -> None:
    up, run = _upstream_run(tmp_path)
    mine = _detector_reports()
    mine[0].metrics.update(ap50_voc07=0.64)  # RT-DETR
    mine[1].metrics.update(mask_ap50=0.45)  # Mask2Former
    res = collect_results(mine, 1.0, retrain_family="rt_detr", wsis_family="mask2former")
    res = add_upstream(res, str(run), str(up))
    stored = res["upstream"]
    assert stored["run"] == str(up) and stored["same_pgt"] is True
    assert stored["families"] == {"retrain": "rcnn", "wsis": "rcnn"}
    assert stored["results"]["retrain_ap50"] == 0.6
    assert stored["results"]["weak_full_mask_ratio"] == pytest.approx(0.8)
    assert "retrain_ap50_detr" not in stored["results"]  # only the values it has
    json.dumps(res)  # one file the closing note can quote

    rows = comparison_rows(res)
    assert [(r.architecture, r.run, r.target) for r in rows] == [
        ("Faster R-CNN", "upstream", "boxes"),
        ("RT-DETR", "this run", "boxes"),
        ("Mask R-CNN", "upstream", "masks"),
        ("Mask2Former", "this run", "masks"),
    ]
    assert rows[0].ap == (None, 0.6, None, None) and rows[0].full_ap50 == 0.8
    assert rows[1].ap[1] == 0.64 and rows[1].ratio == pytest.approx(0.8)
    assert rows[2].ap == (0.7, 0.5, 0.2, 0.1) and rows[2].ratio == pytest.approx(0.8)
    assert rows[3].ap[1] == 0.45 and rows[3].ratio == pytest.approx(0.72)
    table = comparison_table(res)
    assert "weak / full beside the upstream run's detectors, from the same PGT (test)" in table
    assert "Mask2Former" in table and "0.7200" in table

    from weaksam.pipeline.report import build_report, render_markdown

    md = render_markdown(build_report(str(run), results=res))
    assert "## Beside the upstream run" in md
    assert "| RT-DETR | this run | boxes | - | 0.6400 | - | - | 0.8000 | 0.8000 |" in md


def test_no_upstream_table_without_upstream_results(tmp_path: Path) -> None:
    res = collect_results(_detector_reports(), 1.0)
    assert comparison_rows(res) == [] and comparison_table(res) == ""
    assert add_upstream(res, str(tmp_path), str(tmp_path / "none")) == res
    up, run = _upstream_run(tmp_path)
    os.unlink(run / "pgt")  # this run made its own PGT
    res = add_upstream(res, str(run), str(up))
    assert "NOT from the same PGT" in comparison_table(res)
    del res["upstream"]["results"]["weak_full_mask_ratio"]  # an older run's results.json
    assert comparison_rows(res)[2].ratio == pytest.approx(0.8)
