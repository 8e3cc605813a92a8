"""The weak-vs-full table from the stages' metrics.json files."""

from __future__ import annotations

import pytest

from weaksam.detection.summary import quality_summary, quality_table
from weaksam.runs import write_metrics


def test_summary_reads_stage_metrics_and_computes_ratios(tmp_path) -> None:
    run = str(tmp_path)
    write_metrics(f"{run}/wsod", {"method": "mist", "methods": {"mist": {"ap50_voc07": 0.3}}})
    write_metrics(f"{run}/pgt", {"mode": "adaptive", "quality": {"precision": 0.6, "recall": 0.5}})
    write_metrics(
        f"{run}/retrain", {"ap50_voc07": 0.4, "ap50_no_drop": 0.38, "upper_bound_ap50": 0.5}
    )
    wsis = {
        "mask_ap25": 0.5,
        "mask_ap50": 0.3,
        "variants": {"upper_bound": {"mask_ap50": 0.6, "segm_ap": 0.2}},
    }
    s = quality_summary(run, {"wsis": wsis})  # wsis: the stage running now, not on disk
    assert s["wsod_ap50"] == 0.3 and s["pgt_recall"] == 0.5
    assert s["weak_full_ratio"] == pytest.approx(0.8)
    assert s["weak_full_mask_ratio"] == pytest.approx(0.5)
    assert s["wsis_ap70"] is None and s["upper_bound_segm_ap"] == 0.2
    text = quality_table(s, "t")
    assert "Faster R-CNN on PGT + RoI drop" in text and "0.8000" in text
    assert "AP50 VOC07 (test)" in text and "PGT precision / recall (train)" in text
    named = quality_table(s, "t", "trainval", "val")  # the run's own split names
    assert "AP50 VOC07 (val)" in named and "PGT precision / recall (trainval)" in named
    from weaksam.wsod.summary import comparison_table

    methods = {"mist": {"ap50_voc07": 0.5, "corloc": 0.6}}
    assert "CorLoc (trainval)" in comparison_table(methods, "t", "trainval", "val")
    assert quality_summary(str(tmp_path / "empty"))["retrain_ap50"] is None


def test_rows_name_the_stages_architectures(tmp_path) -> None:
    run = str(tmp_path)
    write_metrics(
        f"{run}/retrain", {"family": "rt_detr", "ap50_voc07": 0.4, "upper_bound_ap50": 0.5}
    )
    s = quality_summary(run, {"wsis": {"family": "mask2former", "mask_ap50": 0.3}})
    assert (s["retrain_family"], s["wsis_family"]) == ("rt_detr", "mask2former")
    text = quality_table(s)
    assert "RT-DETR on PGT" in text and "RT-DETR on GT (upper bound)" in text
    assert "Mask2Former on PGT masks" in text and "Mask2Former on GT masks" in text
    assert "R-CNN" not in text and "RoI drop" not in text  # no R-CNN rule for RT-DETR
