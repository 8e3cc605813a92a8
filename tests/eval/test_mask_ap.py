"""VOC-style instance-segmentation AP at mask IoU 0.25/0.5/0.7/0.75."""

from __future__ import annotations

import numpy as np
import pytest

from weaksam.eval import Detections, GroundTruth, eval_mask_ap
from weaksam.io.rle import encode_mask


def _mask(x2: int, y2: int) -> bytes:
    m = np.zeros((20, 20), np.uint8)
    m[0:y2, 0:x2] = 1
    return encode_mask(m)


def _case(det_rows: int) -> tuple[list[GroundTruth], list[Detections]]:
    gt = GroundTruth(
        image_id="a",
        image_index=0,
        height=20,
        width=20,
        boxes=np.array([[0, 0, 10, 10]], np.float32),
        classes=np.array([0]),
        difficult=np.array([False]),
        masks=[_mask(10, 10)],
    )
    det = Detections(
        image_id="a",
        boxes=np.array([[0, 0, 10, 10]], np.float32),  # perfect box; only masks count
        scores=np.array([0.9]),
        classes=np.array([0]),
        masks=[_mask(10, det_rows)],
    )
    return [gt], [det]


def test_mask_iou_point_six() -> None:
    r = eval_mask_ap(*_case(6), num_classes=2)  # mask IoU 60/100
    assert r.ap == {0.25: 1.0, 0.5: 1.0, 0.7: 0.0, 0.75: 0.0}
    assert r.per_class.shape == (4, 2)
    assert np.isnan(r.per_class[:, 1]).all()
    assert r.npos.tolist() == [1, 0]


def test_mask_iou_exactly_half_hits_as_chainercv() -> None:
    r = eval_mask_ap(*_case(5), num_classes=1, thresholds=(0.5,))
    assert r.ap[0.5] == pytest.approx(1.0)


def test_mask_ap_needs_masks() -> None:
    gts, dets = _case(6)
    dets[0].masks = None
    with pytest.raises(ValueError, match="mask"):
        eval_mask_ap(gts, dets, 1)
    r = eval_mask_ap(gts, [], 1)
    assert r.ap[0.5] == 0.0
