"""Per-class precision-recall curves of mask detections (golden values)."""

from __future__ import annotations

import numpy as np
import pytest

from weaksam.eval import Detections, GroundTruth, eval_mask_ap, voc_ap
from weaksam.eval.mask_ap import mask_pr_curves
from weaksam.io.rle import encode_mask


def _mask(x1: int, y1: int, x2: int, y2: int) -> bytes:
    m = np.zeros((20, 20), np.uint8)
    m[y1:y2, x1:x2] = 1
    return encode_mask(m)


def _case() -> tuple[list[GroundTruth], list[Detections]]:
    # two GT masks of class 0 (10x10 each); class 1 has no GT
    gt = GroundTruth(
        image_id="a",
        image_index=0,
        height=20,
        width=20,
        boxes=np.array([[0, 0, 10, 10], [10, 10, 20, 20]], np.float32),
        classes=np.array([0, 0]),
        difficult=np.array([False, False]),
        masks=[_mask(0, 0, 10, 10), _mask(10, 10, 20, 20)],
    )
    # scores 0.9 hit GT0 (IoU 1); 0.8 duplicate on GT0 (FP); 0.7 misses (IoU 0.3);
    # 0.6 on GT1 with IoU exactly 0.5 (a hit: >=); 0.5 of class 1 (no GT)
    masks = [
        _mask(0, 0, 10, 10),
        _mask(0, 0, 10, 9),
        _mask(10, 10, 20, 13),
        _mask(10, 10, 20, 15),
        _mask(0, 0, 5, 5),
    ]
    det = Detections(
        image_id="a",
        boxes=np.zeros((5, 4), np.float32),  # boxes play no part in mask matching
        scores=np.array([0.9, 0.8, 0.7, 0.6, 0.5]),
        classes=np.array([0, 0, 0, 0, 1]),
        masks=masks,
    )
    return [gt], [det]


def test_mask_pr_curves_golden() -> None:
    prec, rec, npos = mask_pr_curves(*_case(), num_classes=2, iou_thresh=0.5)
    assert npos.tolist() == [2, 0]
    np.testing.assert_allclose(prec[0], [1.0, 0.5, 1 / 3, 0.5])
    np.testing.assert_allclose(rec[0], [0.5, 0.5, 0.5, 1.0])
    np.testing.assert_allclose(prec[1], [0.0])
    assert np.isnan(rec[1]).all()
    # all-point AP of this curve: 0.5 * 1.0 + 0.5 * 0.5
    assert voc_ap(rec[0], prec[0], use_07_metric=False) == pytest.approx(0.75)
    assert eval_mask_ap(*_case(), num_classes=2, thresholds=(0.5,)).ap[0.5] == pytest.approx(0.75)


def test_mask_pr_curves_threshold_and_empty() -> None:
    prec, rec, _ = mask_pr_curves(*_case(), num_classes=2, iou_thresh=0.9)
    np.testing.assert_allclose(rec[0], [0.5, 0.5, 0.5, 0.5])
    gts, _ = _case()
    prec, rec, npos = mask_pr_curves(gts, [], num_classes=2)
    assert [p.size for p in prec] == [0, 0] and npos.tolist() == [2, 0]


def test_mask_pr_curves_needs_masks() -> None:
    gts, dets = _case()
    dets[0].masks = None
    with pytest.raises(ValueError, match="mask"):
        mask_pr_curves(gts, dets, 2)
