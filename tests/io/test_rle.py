import numpy as np
import pytest

from weaksam.io import rle


def _masks() -> np.ndarray:
    m = np.zeros((3, 20, 30), dtype=bool)
    m[0, 2:8, 3:9] = True
    m[1, 10:20, 0:30] = True
    return m  # m[2] empty


def test_round_trip_many_and_one() -> None:
    m = _masks()
    counts = rle.encode_masks(m)
    assert len(counts) == 3 and all(isinstance(c, bytes) for c in counts)
    np.testing.assert_array_equal(rle.decode_masks(counts, 20, 30), m)
    np.testing.assert_array_equal(rle.decode_mask(rle.encode_mask(m[0]), 20, 30), m[0])
    assert rle.decode_masks([], 20, 30).shape == (0, 20, 30)
    assert rle.encode_masks(np.zeros((0, 20, 30), bool)) == []


def test_area_boxes_iou() -> None:
    counts = rle.encode_masks(_masks())
    np.testing.assert_array_equal(rle.rle_area(counts, 20, 30), [36, 300, 0])
    boxes = rle.rle_to_boxes(counts, 20, 30)
    np.testing.assert_array_equal(boxes[:2], [[3, 2, 9, 8], [0, 10, 30, 20]])
    iou = rle.mask_iou(counts[:2], counts[:1], 20, 30)
    np.testing.assert_allclose(iou[:, 0], [1.0, 0.0])


def test_json_and_polygons() -> None:
    m = _masks()[0]
    counts = rle.encode_mask(m)
    js = rle.to_json_rle(counts, 20, 30)
    assert isinstance(js["counts"], str)
    back, h, w = rle.from_json_rle(js)
    assert (back, h, w) == (counts, 20, 30)
    # a polygon covering the square [3, 9) x [2, 8)
    poly = [[3, 2, 9, 2, 9, 8, 3, 8]]
    area = rle.rle_area([rle.polygons_to_rle(poly, 20, 30)], 20, 30)[0]
    assert area == pytest.approx(36, abs=8)  # rasterisation of the boundary is +-1 pixel row
    uncompressed = {"size": [20, 30], "counts": [0, 600]}
    c, _, _ = rle.from_json_rle(uncompressed)
    assert rle.rle_area([c], 20, 30)[0] == 600
    with pytest.raises(ValueError):
        rle.encode_mask(np.zeros((2, 2, 2)))
