"""CorLoc on hand cases."""

from __future__ import annotations

import numpy as np
import pytest

from weaksam.eval import Detections, GroundTruth, eval_corloc

BOX = [0, 0, 10, 10]


def _gt(image_id: str, boxes, classes, difficult=None) -> GroundTruth:
    return GroundTruth(
        image_id=image_id,
        image_index=len(image_id),
        height=100,
        width=100,
        boxes=np.asarray(boxes, np.float32).reshape(-1, 4),
        classes=np.asarray(classes),
        difficult=np.zeros(len(classes), bool) if difficult is None else np.asarray(difficult),
    )


def _det(image_id: str, boxes, scores, classes) -> Detections:
    return Detections(
        image_id=image_id,
        boxes=np.asarray(boxes, np.float32).reshape(-1, 4),
        scores=np.asarray(scores),
        classes=np.asarray(classes),
    )


def test_corloc_hand_case() -> None:
    # classes: 0 cat, 1 dog, 2 bird (absent)
    gts = [
        _gt("a", [BOX, [20, 20, 40, 40]], [0, 1]),
        _gt("b", [BOX], [0], [True]),  # only a difficult cat: not counted
        _gt("c", [BOX], [0]),  # no detections: a miss
        _gt("d", [BOX, [30, 30, 40, 40]], [0, 0], [False, True]),
    ]
    dets = [
        # cat: top box hits; dog: top box misses although a lower one would hit
        _det(
            "a",
            [BOX, [50, 50, 60, 60], BOX, [20, 20, 40, 40]],
            [0.9, 0.3, 0.8, 0.5],
            [0, 0, 1, 1],
        ),
        _det("b", [[50, 50, 60, 60]], [0.9], [0]),
        _det("d", [[30, 30, 40, 40], BOX], [0.9, 0.1], [0, 0]),  # hits the difficult cat
    ]
    r = eval_corloc(gts, dets, num_classes=3)
    assert r.num_images.tolist() == [3, 1, 0]
    assert r.hits.tolist() == [2, 0, 0]
    assert r.per_class[0] == pytest.approx(2 / 3)
    assert r.per_class[1] == 0.0
    assert np.isnan(r.per_class[2])
    assert r.corloc == pytest.approx(1 / 3)


def test_corloc_strict_half() -> None:
    gts = [_gt("a", [BOX], [0])]
    assert eval_corloc(gts, [_det("a", [[0, 0, 10, 5]], [1.0], [0])], 1).corloc == 0.0
    assert eval_corloc(gts, [_det("a", [[0, 0, 10, 6]], [1.0], [0])], 1).corloc == 1.0


def test_corloc_empty() -> None:
    r = eval_corloc([_gt("a", [BOX], [0])], [], 1)
    assert r.corloc == 0.0
    assert np.isnan(eval_corloc([_gt("a", [], [])], [], 1).corloc)
