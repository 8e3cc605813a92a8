"""Point precision / recall of the peaks stage against hand-made GT masks."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from weaksam.cam.stage import evaluate_points, peaks_table
from weaksam.io.classes import ClassMap
from weaksam.io.rle import encode_masks
from weaksam.io.schemas import empty_row, error_row
from weaksam.io.tables import write_table


def test_precision_and_recall_per_split_and_kind(tmp_path: Any) -> None:
    masks = np.zeros((2, 10, 10), dtype=bool)
    masks[0, :5, :5] = True  # class 0
    masks[1, 5:, 5:] = True  # class 1
    rows = [
        {"image_id": im, "image_index": i, "height": 10, "width": 10, "path": "", "split": split,
         "labels": [0, 1], "gt_boxes": [0, 0, 5, 5, 5, 5, 10, 10], "gt_classes": [0, 1],
         "gt_difficult": [False, False], "gt_masks": encode_masks(masks)}
        for i, (im, split) in enumerate([("a", "train"), ("b", "test"), ("c", "test")])
    ]  # fmt: skip
    manifest = str(tmp_path / "manifest.parquet")
    write_table(rows, manifest, "manifest", ClassMap.from_names(["x", "y"]))

    def pts(image_id: str, index: int, *p: tuple[float, float, int, str]) -> dict[str, Any]:
        return empty_row(
            "points", image_id, index, height=10, width=10,
            points=[v for x, y, _, _ in p for v in (x, y)], point_classes=[c for *_, c, _ in p],
            point_scores=[1.0] * len(p), point_kinds=[k for *_, k in p],
        )  # fmt: skip

    points = [
        # train: cam hits object 0; refined hits object 1 with the wrong class (miss)
        pts("a", 0, (1.5, 1.5, 0, "cam"), (7.5, 7.5, 0, "refined")),
        # test: both kinds hit object 1; one cam point on the background
        pts("b", 1, (8.5, 8.5, 1, "cam"), (6.5, 6.5, 1, "refined"), (8.5, 1.5, 0, "cam")),
        error_row("points", "c", 2, "file not found"),
    ]
    m = evaluate_points(points, manifest, ("cam", "refined"))
    t = m["by_split_kind"]
    assert t["train/cam"] == {"precision": 1.0, "recall": 0.5}
    assert t["train/refined"] == {"precision": 0.0, "recall": 0.0}
    assert t["test/cam"]["precision"] == pytest.approx(0.5) and t["test/cam"]["recall"] == 0.5
    assert t["all/all"]["precision"] == pytest.approx(3 / 5)
    assert m["point_precision"] == pytest.approx(3 / 5)
    assert m["point_recall"] == pytest.approx(2 / 4)  # any kind: a:{0}, b:{1}
    assert m["point_precision_by_split"] == {"test": pytest.approx(2 / 3), "train": 0.5}
    assert m["error_rows"] == 1 and m["points_per_image"] == {"train": 2.0, "test": 3.0}
    # per class: x (0) has 3 points, 1 inside an x object; y (1) has 2 points, both inside
    assert m["point_precision_by_class"] == {"x": pytest.approx(1 / 3), "y": 1.0}
    table = peaks_table(m)
    assert "train/cam" in table and "class x" in table
