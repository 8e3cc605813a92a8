"""An empty SAM mask is never a Mask R-CNN target: the box is left out and counted."""

from __future__ import annotations

import numpy as np

from weaksam.detection.data import make_sample, nonempty_masks
from weaksam.detection.stage import count_empty_masks
from weaksam.io.rle import encode_masks
from weaksam.io.schemas import empty_row, error_row
from weaksam.io.tables import write_table

ROW = {"image_id": "a", "image_index": 0, "path": "/x.png", "height": 20, "width": 30}


def _masks() -> list[bytes]:
    m = np.zeros((3, 20, 30), bool)
    m[0, 2:8, 3:9] = True  # box 0: a mask
    m[2, 10:12, 10:20] = True  # box 2: a mask; box 1: empty
    return encode_masks(m)


def test_nonempty_masks() -> None:
    assert nonempty_masks(_masks(), 20, 30).tolist() == [True, False, True]
    assert nonempty_masks([], 20, 30).shape == (0,)


def test_sample_drops_the_box_of_an_empty_mask_only_when_asked() -> None:
    boxes = np.array([[3, 2, 9, 8], [0, 0, 10, 10], [10, 10, 20, 12]], np.float32)
    masks = _masks()
    kept = make_sample(ROW, boxes, [1, 2, 3], masks, drop_empty_masks=True)
    assert kept is not None and kept.classes.tolist() == [1, 3]
    assert kept.masks == [masks[0], masks[2]]
    np.testing.assert_array_equal(kept.boxes, boxes[[0, 2]])
    plain = make_sample(ROW, boxes, [1, 2, 3], masks)  # Faster R-CNN: the box is fine
    assert plain is not None and plain.classes.tolist() == [1, 2, 3]
    only_empty = make_sample(ROW, boxes[[1]], [2], [masks[1]], drop_empty_masks=True)
    assert only_empty is None


def test_count_empty_masks(tmp_path) -> None:
    rows = [
        empty_row(
            "pgt",
            "a",
            0,
            height=20,
            width=30,
            boxes=[3, 2, 9, 8, 0, 0, 10, 10, 10, 10, 20, 12],
            scores=[0.9, 0.8, 0.7],
            classes=[1, 2, 3],
            masks=_masks(),
        ),
        empty_row("pgt", "b", 1, height=20, width=30),  # no box, no masks
        error_row("pgt", "c", 2, "sam failed"),
    ]
    path = str(tmp_path / "pgt.parquet")
    write_table(rows, path, "pgt")
    assert count_empty_masks(path) == (1, 1)
