"""COCO bbox / segm AP through pycocotools, built in memory."""

from __future__ import annotations

import numpy as np
import pytest

from weaksam.eval import STAT_NAMES, Detections, GroundTruth, coco_stats, eval_coco
from weaksam.io.classes import ClassMap
from weaksam.io.rle import encode_mask

CLASSES = ClassMap.from_names(["cat", "dog"], [3, 17])
H = W = 100


def _rect_mask(x1: int, y1: int, x2: int, y2: int) -> bytes:
    m = np.zeros((H, W), np.uint8)
    m[y1:y2, x1:x2] = 1
    return encode_mask(m)


def _gts(difficult_extra: bool = False) -> list[GroundTruth]:
    boxes = [[10, 10, 60, 60], [60, 40, 100, 90]]
    a = GroundTruth(
        image_id="1",
        image_index=1,
        height=H,
        width=W,
        boxes=np.asarray(boxes, np.float32),
        classes=np.array([0, 1]),
        difficult=np.array([False, False]),
        masks=[_rect_mask(*map(int, b)) for b in boxes],
    )
    b_boxes = [[0, 0, 40, 40]] + ([[50, 50, 90, 90]] if difficult_extra else [])
    b = GroundTruth(
        image_id="2",
        image_index=2,
        height=H,
        width=W,
        boxes=np.asarray(b_boxes, np.float32),
        classes=np.array([0] * len(b_boxes)),
        difficult=np.array([False] + [True] * (len(b_boxes) - 1)),
        masks=[_rect_mask(*map(int, bb)) for bb in b_boxes],
    )
    return [a, b]


def _perfect(gts: list[GroundTruth]) -> list[Detections]:
    out = []
    for g in gts:
        keep = ~g.difficult
        out.append(
            Detections(
                image_id=g.image_id,
                boxes=g.boxes[keep],
                scores=np.ones(int(keep.sum())),
                classes=g.classes[keep],
                masks=[m for m, k in zip(g.masks or [], keep, strict=True) if k],
            )
        )
    return out


def test_perfect_bbox_is_one_and_difficult_ignored() -> None:
    gts = _gts(difficult_extra=True)
    r = eval_coco(gts, _perfect(gts), CLASSES, "bbox")
    assert list(r.stats) == list(STAT_NAMES)
    assert r.stats["AP"] == pytest.approx(1.0)
    assert r.stats["AP50"] == pytest.approx(1.0)
    assert r.stats["APs"] == -1.0  # no small GT
    np.testing.assert_allclose(r.per_class_ap, [1.0, 1.0])


def test_empty_detections() -> None:
    stats = coco_stats(_gts(), [], CLASSES)
    assert stats["AP"] == 0.0 and stats["AR100"] == 0.0
    assert stats["APs"] == -1.0


def test_segm_perfect_and_partial() -> None:
    gts = _gts()
    assert coco_stats(gts, _perfect(gts), CLASSES, "segm")["AP"] == pytest.approx(1.0)
    # one image, one 10x10 GT mask; the detection's 8x8 mask inside it has IoU 0.64
    g = GroundTruth(
        image_id="1",
        image_index=1,
        height=H,
        width=W,
        boxes=np.array([[0, 0, 10, 10]], np.float32),
        classes=np.array([0]),
        difficult=np.array([False]),
        masks=[_rect_mask(0, 0, 10, 10)],
    )
    d = Detections(
        image_id="1",
        boxes=np.array([[0, 0, 10, 10]], np.float32),  # perfect box: segm must not use it
        scores=np.array([0.9]),
        classes=np.array([0]),
        masks=[_rect_mask(0, 0, 8, 8)],
    )
    segm = coco_stats([g], [d], CLASSES, "segm")
    assert segm["AP50"] == pytest.approx(1.0)
    assert segm["AP75"] == pytest.approx(0.0)
    assert segm["AP"] == pytest.approx(0.3)  # hits at IoU 0.50, 0.55, 0.60
    assert coco_stats([g], [d], CLASSES, "bbox")["AP"] == pytest.approx(1.0)


def test_segm_needs_masks() -> None:
    gts = _gts()
    gts[0].masks = None
    with pytest.raises(ValueError, match="masks"):
        eval_coco(gts, [], CLASSES, "segm")
    with pytest.raises(ValueError, match="iou_type"):
        eval_coco(gts, [], CLASSES, "keypoints")
