"""Classification AP and point precision/recall with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from weaksam.cam.metrics import (
    average_precision,
    mean_ap,
    multilabel_ap,
    point_hits,
    points_in_masks,
    ratio,
)


def test_average_precision_known_values() -> None:
    assert average_precision([0.9, 0.8, 0.1], [1, 1, 0]) == pytest.approx(1.0)
    # ranking: pos, neg, pos -> precision 1 at recall .5, 2/3 at recall 1
    assert average_precision([0.9, 0.8, 0.7], [1, 0, 1]) == pytest.approx(0.5 + 0.5 * 2 / 3)
    assert average_precision([0.1, 0.9], [1, 0]) == pytest.approx(0.5)
    assert math.isnan(average_precision([0.3, 0.2], [0, 0]))


def test_multilabel_ap_and_mean_skip_empty_classes() -> None:
    scores = np.array([[0.9, 0.1, 0.5], [0.2, 0.8, 0.5]])
    targets = np.array([[1, 0, 0], [0, 1, 0]])
    ap = multilabel_ap(scores, targets)
    assert ap[:2].tolist() == [1.0, 1.0] and math.isnan(ap[2])
    assert mean_ap(ap) == 1.0
    assert math.isnan(mean_ap([float("nan")]))
    with pytest.raises(ValueError):
        multilabel_ap(scores, targets[:1])


def test_points_in_masks_respects_class_and_pixel_convention() -> None:
    masks = np.zeros((2, 4, 4), dtype=bool)
    masks[0, 0:2, 0:2] = True  # class 3, top-left
    masks[1, 2:4, 2:4] = True  # class 5, bottom-right
    pts = np.array([[0.5, 0.5], [1.99, 1.0], [2.0, 2.0], [3.5, 3.5], [0.5, 0.5]])
    cls = np.array([3, 3, 3, 5, 5])
    m = points_in_masks(pts, cls, masks, [3, 5])
    # (2.0, 2.0) is pixel (row 2, col 2): inside the class-5 mask, but the point is class 3
    assert m.tolist() == [
        [True, False],
        [True, False],
        [False, False],
        [False, True],
        [False, False],
    ]
    prec, rec = point_hits(pts, cls, masks, [3, 5])
    assert prec.tolist() == [True, True, False, True, False] and rec.tolist() == [True, True]
    assert ratio([prec]) == pytest.approx(0.6)
    assert math.isnan(ratio([np.zeros(0, bool)]))
    empty = point_hits(np.zeros((0, 2)), [], masks, [3, 5])
    assert empty[0].shape == (0,) and empty[1].tolist() == [False, False]
