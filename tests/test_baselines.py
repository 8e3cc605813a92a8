import numpy as np

from weaksam.baselines import class_prior, window_grid, window_prior_detections
from weaksam.geometry.boxes import as_boxes


def _rows() -> list[dict]:
    return [
        {
            "image_id": "a",
            "image_index": 0,
            "height": 100,
            "width": 200,
            "labels": [0, 2],
            "error": None,
        },
        {
            "image_id": "b",
            "image_index": 1,
            "height": 100,
            "width": 100,
            "labels": [2],
            "error": None,
        },
        {
            "image_id": "c",
            "image_index": 2,
            "height": None,
            "width": None,
            "labels": [1],
            "error": "bad",
        },
    ]


def test_class_prior_skips_errors() -> None:
    np.testing.assert_allclose(class_prior(_rows(), 3), [0.5, 0.0, 1.0])


def test_window_grid_inside_and_centre_weighted() -> None:
    boxes, w = window_grid(100, 200)
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= 200 + 1e-3).all()
    assert (boxes[:, 3] <= 100 + 1e-3).all()
    sides = np.unique(np.round(boxes[:, 2] - boxes[:, 0], 3))
    np.testing.assert_allclose(sides, [15, 25, 40])
    centre = np.argmax(w)
    cx = (boxes[centre, 0] + boxes[centre, 2]) / 2
    assert abs(cx - 100) <= 15


def test_detections_use_labels_only_on_train_and_error_rows() -> None:
    rows = _rows()
    prior = class_prior(rows, 3)
    test = window_prior_detections(rows, prior, use_labels=False, max_detections=1000)
    assert set(test[0]["classes"]) == {0, 2}  # class 1 has prior 0
    assert test[0]["scores"] == sorted(test[0]["scores"], reverse=True)
    top = window_prior_detections(rows, prior, use_labels=False, max_detections=50)
    assert len(top[0]["scores"]) == 50 and set(top[0]["classes"]) == {2}  # the likelier class
    train = window_prior_detections(rows, prior, use_labels=True)
    assert set(train[1]["classes"]) == {2}
    assert train[2]["error"] == "bad" and train[2]["boxes"] == []
    assert as_boxes(train[0]["boxes"]).shape == (len(train[0]["scores"]), 4)
