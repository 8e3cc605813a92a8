"""evaluate() by name, JSON conversion and the text tables."""

from __future__ import annotations

import math

import numpy as np
import pytest

from weaksam.eval import (
    METRICS,
    Detections,
    GroundTruth,
    evaluate,
    format_report,
    format_table,
    metrics_table,
    to_jsonable,
)
from weaksam.io.classes import ClassMap
from weaksam.io.rle import encode_mask

CLASSES = ClassMap.from_names(["cat", "dog"])


def _pair() -> tuple[list[GroundTruth], list[Detections]]:
    m = np.zeros((40, 40), np.uint8)
    m[0:20, 0:20] = 1
    gt = GroundTruth(
        image_id="a",
        image_index=1,
        height=40,
        width=40,
        boxes=np.array([[0, 0, 20, 20]], np.float32),
        classes=np.array([0]),
        difficult=np.array([False]),
        masks=[encode_mask(m)],
    )
    det = Detections(
        image_id="a",
        boxes=np.array([[0, 0, 20, 20]], np.float32),
        scores=np.array([0.9]),
        classes=np.array([0]),
        masks=[encode_mask(m)],
    )
    return [gt], [det]


def test_evaluate_all_metrics() -> None:
    gts, dets = _pair()
    out = evaluate(gts, dets, list(METRICS), CLASSES)
    assert list(out) == list(METRICS)
    assert out["voc07"]["overall"]["mAP"] == pytest.approx(1.0)
    assert out["voc"]["per_class"]["cat"]["AP"] == pytest.approx(1.0)
    assert math.isnan(out["voc"]["per_class"]["dog"]["AP"])
    assert out["coco"]["overall"]["AP"] == pytest.approx(1.0)
    assert out["segm"]["overall"]["AP"] == pytest.approx(1.0)
    assert out["corloc"]["overall"]["CorLoc"] == 1.0
    assert out["mask_ap"]["overall"] == {"AP25": 1.0, "AP50": 1.0, "AP70": 1.0, "AP75": 1.0}
    assert out["recall"]["overall"]["recall@0.5"] == 1.0
    assert out["recall"]["ar_curve"][-1] == ["all", 1.0]
    text = format_report(out)
    assert "== voc07 ==" in text and "cat" in text
    js = to_jsonable(out)
    assert js["voc"]["per_class"]["dog"]["AP"] is None


def test_unknown_metric_lists_known() -> None:
    gts, dets = _pair()
    with pytest.raises(ValueError, match="voc07"):
        evaluate(gts, dets, ["voc07", "map"], CLASSES)


def test_format_table() -> None:
    text = format_table(
        [["cat", 0.5, 3], ["dog", float("nan"), None]], ["class", "AP", "n"], title="T"
    )
    lines = text.splitlines()
    assert lines[0] == "T"
    assert lines[1].split() == ["class", "AP", "n"]
    assert lines[3] == "cat    0.5000  3"
    assert lines[4] == "dog         -  -"
    assert len({len(line) for line in lines[1:4]}) == 1
    with pytest.raises(ValueError):
        format_table([[1]], ["a", "b"])
    assert metrics_table({"mAP": 0.12345}).splitlines()[-1] == "mAP     0.1235"
    assert format_table([], ["a"]) == "a\n-"


def test_to_jsonable() -> None:
    assert to_jsonable({1: (np.float32(0.5), float("inf"), np.arange(2))}) == {
        "1": [0.5, None, [0, 1]]
    }
