"""PGT → COCO training json, and PGT precision/recall against hand-made ground truth."""

from __future__ import annotations

import numpy as np
import pytest

from weaksam.eval.records import Detections, GroundTruth
from weaksam.io.classes import ClassMap
from weaksam.io.rle import encode_mask, from_json_rle
from weaksam.io.schemas import empty_row, error_row
from weaksam.pgt.coco import pgt_to_coco
from weaksam.pgt.quality import match_one_to_one, pgt_quality

CLASSES = ClassMap.from_names(["a", "b"], [7, 9])


def _mask(x1: int, y1: int, x2: int, y2: int) -> bytes:
    m = np.zeros((20, 30), bool)
    m[y1:y2, x1:x2] = True
    return encode_mask(m)


def _rows(with_masks: bool) -> list[dict]:
    masks = [_mask(2, 3, 8, 9), _mask(0, 0, 0, 0)] if with_masks else None
    return [
        empty_row(
            "pgt",
            "x",
            5,
            height=20,
            width=30,
            boxes=[1.0, 2.0, 11.0, 12.0, 20.0, 5.0, 25.0, 15.0],
            scores=[0.9, 0.4],
            classes=[1, 0],
            masks=masks,
        ),
        empty_row("pgt", "empty", 6, height=20, width=30),
        error_row("pgt", "bad", 7, "failed"),
    ]


@pytest.mark.parametrize("with_masks", [False, True])
def test_coco_export(with_masks: bool) -> None:
    coco = pgt_to_coco(_rows(with_masks), CLASSES, file_names={"x": "/data/x.png"})
    assert [i["id"] for i in coco["images"]] == [5]  # no PGT / error rows left out
    assert coco["images"][0]["file_name"] == "/data/x.png"
    assert [c["id"] for c in coco["categories"]] == [7, 9]
    a0, a1 = coco["annotations"]
    assert a0["image_id"] == 5 and a0["category_id"] == 9 and a1["category_id"] == 7
    assert a0["bbox"] == [1.0, 2.0, 10.0, 10.0] and a0["iscrowd"] == 0
    assert a0["score"] == pytest.approx(0.9)
    if with_masks:
        _, h, w = from_json_rle(a0["segmentation"])
        assert (h, w) == (20, 30) and a0["area"] == 36.0  # the mask's area
    else:
        assert "segmentation" not in a0 and a0["area"] == 100.0


def test_coco_bbox_from_mask_tight_box_keeps_pgt_box_for_empty_mask() -> None:
    coco = pgt_to_coco(_rows(True), CLASSES, bbox_source="mask")
    a0, a1 = coco["annotations"]
    assert a0["bbox"] == [2.0, 3.0, 6.0, 6.0]
    assert a1["bbox"] == [20.0, 5.0, 5.0, 10.0]  # empty mask: the PGT box
    with pytest.raises(ValueError, match="bbox source"):
        pgt_to_coco(_rows(True), CLASSES, bbox_source="tight")


def test_one_to_one_matching_in_score_order() -> None:
    ious = np.asarray([[0.6, 0.7], [0.9, 0.2], [0.55, 0.0]], np.float32)
    # row 1 first takes column 0; row 0 then takes column 1; row 2 finds nothing left
    assert match_one_to_one(ious, np.asarray([1, 0, 2]), 0.5).tolist() == [1, 0, -1]


def test_precision_recall() -> None:
    gt = GroundTruth(
        "x",
        5,
        20,
        30,
        np.asarray([[1, 2, 11, 12], [1, 2, 11, 12], [20, 5, 25, 15]], np.float32),
        np.asarray([1, 1, 0]),
        np.asarray([False, True, False]),
    )
    pgt = Detections(
        "x",
        np.asarray([[1, 2, 11, 12], [1, 2, 11, 12], [0, 0, 3, 3]], np.float32),
        np.asarray([0.9, 0.8, 0.7], np.float32),
        np.asarray([1, 1, 0]),
    )
    other = GroundTruth("y", 6, 20, 30, np.asarray([[0, 0, 5, 5]]), [0], [False])
    q = pgt_quality([pgt], [gt, other], CLASSES)
    # 2 of 3 PGT boxes hit (one on the difficult duplicate); 1 of 3 non-difficult GT found
    assert q["precision"] == pytest.approx(2 / 3) and q["recall"] == pytest.approx(1 / 3)
    assert q["pgt_boxes"] == 3 and q["gt_boxes"] == 3
    assert q["per_class"]["a"] == {"precision": 0.0, "recall": 0.0}
    assert "mask_precision" not in q


def test_mask_precision_recall_and_empty_pgt_images() -> None:
    gt = GroundTruth(
        "x",
        5,
        20,
        30,
        np.asarray([[2, 3, 8, 9], [10, 10, 20, 20]], np.float32),
        np.asarray([0, 0]),
        np.asarray([False, False]),
        masks=[_mask(2, 3, 8, 9), _mask(10, 10, 20, 20)],
    )
    pgt = Detections(
        "x",
        np.asarray([[2, 3, 8, 9], [10, 10, 20, 20]], np.float32),
        np.asarray([0.9, 0.8], np.float32),
        np.asarray([0, 0]),
        masks=[_mask(2, 3, 8, 9), _mask(10, 10, 13, 13)],  # the second mask is too small
    )
    missed = GroundTruth("y", 6, 20, 30, [[0, 0, 5, 5]], [0], [False], masks=[_mask(0, 0, 5, 5)])
    q = pgt_quality([pgt], [gt, missed], CLASSES)  # "y" has no PGT (e.g. an error row)
    assert q["precision"] == 1.0 and q["recall"] == pytest.approx(2 / 3)
    assert q["mask_precision"] == 0.5 and q["mask_recall"] == pytest.approx(1 / 3)
