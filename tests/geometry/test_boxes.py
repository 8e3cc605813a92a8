import numpy as np
import pytest

from weaksam.geometry import boxes as B


def test_as_boxes_flat_and_empty() -> None:
    assert B.as_boxes([]).shape == (0, 4)
    np.testing.assert_array_equal(
        B.as_boxes([0, 1, 2, 3, 4, 5, 6, 7]), [[0, 1, 2, 3], [4, 5, 6, 7]]
    )
    with pytest.raises(ValueError, match="multiple of 4"):
        B.as_boxes([1, 2, 3])
    with pytest.raises(ValueError, match="Nx4"):
        B.as_boxes(np.zeros((2, 3)))


def test_iou_golden() -> None:
    a = [[0, 0, 10, 10]]
    b = [[5, 0, 15, 10], [0, 0, 10, 10], [20, 20, 30, 30], [0, 0, 0, 0]]
    iou = B.box_iou(a, b)
    np.testing.assert_allclose(iou, [[50 / 150, 1.0, 0.0, 0.0]], rtol=1e-6)
    assert B.box_iou([[0, 0, 0, 0]], [[0, 0, 0, 0]])[0, 0] == 0.0
    assert B.box_iou([], a).shape == (0, 1)


def test_voc_conversion_matches_devkit_iou() -> None:
    # VOC devkit: +1 inclusive areas. Box (1,1,10,10) is 10x10 pixels.
    voc_a = np.array([[1, 1, 10, 10]], dtype=np.float32)
    voc_b = np.array([[6, 1, 15, 10]], dtype=np.float32)
    ix = min(10, 15) - max(1, 6) + 1
    devkit = ix * 10 / (100 + 100 - ix * 10)
    ours = B.box_iou(B.voc_to_xyxy(voc_a), B.voc_to_xyxy(voc_b))[0, 0]
    assert ours == pytest.approx(devkit)
    np.testing.assert_array_equal(B.voc_to_xyxy(voc_a), [[0, 0, 10, 10]])
    np.testing.assert_array_equal(B.xyxy_to_voc(B.voc_to_xyxy(voc_a)), voc_a)


def test_xywh_round_trip_and_clip() -> None:
    xyxy = np.array([[2, 3, 12, 8]], dtype=np.float32)
    np.testing.assert_array_equal(B.xyxy_to_xywh(xyxy), [[2, 3, 10, 5]])
    np.testing.assert_array_equal(B.xywh_to_xyxy(B.xyxy_to_xywh(xyxy)), xyxy)
    np.testing.assert_array_equal(B.clip_boxes([[-5, -1, 300, 50]], 40, 256), [[0, 0, 256, 40]])


def test_mask_to_box_continuous() -> None:
    m = np.zeros((8, 8), dtype=bool)
    m[2:5, 3:7] = True
    np.testing.assert_array_equal(B.mask_to_box(m), [3, 2, 7, 5])
    assert B.box_area(B.mask_to_box(m)[None])[0] == m.sum()
    np.testing.assert_array_equal(B.mask_to_box(np.zeros((4, 4), bool)), [0, 0, 0, 0])
