"""Tiny hand-made inputs of the PGT tests: a manifest of 4 images and WSOD-like detections.

Classes ``a, b, c`` (source ids 11, 12, 13). Image ``i0`` is labelled ``{a, b}``, ``i1``
``{c}``, ``i2`` has an ingest error, ``i3`` (labelled ``{a}``) has no detections row. The
images are 32x32 PNGs on disk (for the SAM mask tests); the ground truth is evaluation only.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from weaksam.io.classes import ClassMap
from weaksam.io.rle import encode_mask
from weaksam.io.schemas import empty_row, error_row
from weaksam.io.tables import write_table

CLASSES = ClassMap.from_names(["a", "b", "c"], [11, 12, 13])


def _mask(box: list[float]) -> bytes:
    m = np.zeros((32, 32), bool)
    x1, y1, x2, y2 = (int(v) for v in box)
    m[y1:y2, x1:x2] = True
    return encode_mask(m)


def manifest_rows(root: str, gt_shift: float = 0.0) -> list[dict]:
    rows = []
    gts = {
        "i0": ([[2, 2, 12, 12], [16, 16, 30, 30]], [0, 1]),
        "i1": ([[4, 4, 20, 20]], [2]),
        "i3": ([[0, 0, 10, 10]], [0]),
    }
    for k, (image_id, labels) in enumerate((("i0", [0, 1]), ("i1", [2]), ("i2", [1]), ("i3", [0]))):
        path = os.path.join(root, f"{image_id}.png")
        rng = np.random.default_rng(k)
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(path)
        if image_id == "i2":
            rows.append(
                error_row("manifest", image_id, k + 1, "corrupt image", path=path, split="train")
            )
            continue
        boxes, classes = gts[image_id]
        shifted = [[v + gt_shift for v in b] for b in boxes]
        rows.append(
            empty_row(
                "manifest",
                image_id,
                k + 1,
                height=32,
                width=32,
                path=path,
                split="train",
                labels=labels,
                gt_boxes=[v for b in shifted for v in b],
                gt_classes=classes,
                gt_difficult=[False] * len(classes),
                gt_masks=[_mask(b) for b in boxes],
            )
        )
    return rows


def detection_rows() -> list[dict]:
    def det(image_id: str, index: int, dets: list[tuple[list[float], float, int]]) -> dict:
        return empty_row(
            "detections",
            image_id,
            index,
            height=32,
            width=32,
            boxes=[v for b, _, _ in dets for v in b],
            scores=[s for _, s, _ in dets],
            classes=[c for _, _, c in dets],
        )

    return [
        det(
            "i0",
            1,
            [
                ([2, 2, 12, 12], 0.9, 0),  # a: best
                ([3, 3, 11, 11], 0.8, 0),  # a: inside the best (containment) → dropped
                ([20, 0, 30, 10], 0.7, 0),  # a: second object, normalised score 1-0.2/0.8
                ([1, 1, 5, 5], 0.1, 0),  # a: lowest, normalised 0 → dropped
                ([16, 16, 30, 30], 0.6, 1),  # b: only one
                ([0, 0, 31, 31], 0.95, 2),  # c: not a label of i0 → dropped
            ],
        ),
        det("i1", 2, [([4, 4, 20, 20], 0.5, 2), ([0, 0, 8, 8], 0.4, 0)]),
        error_row("detections", "i2", 3, "corrupt image"),
    ]


@pytest.fixture
def pgt_inputs(tmp_path) -> dict[str, str]:
    """Paths: ``manifest`` (with GT), ``manifest_other_gt`` (same labels, different GT),
    ``detections`` (Parquet) and ``root`` (images)."""
    root = str(tmp_path)
    out = {
        "manifest": os.path.join(root, "manifest.parquet"),
        "manifest_other_gt": os.path.join(root, "manifest_other.parquet"),
        "detections": os.path.join(root, "detections.parquet"),
        "root": root,
    }
    write_table(manifest_rows(root), out["manifest"], "manifest", CLASSES)
    write_table(manifest_rows(root, 5.0), out["manifest_other_gt"], "manifest", CLASSES)
    write_table(detection_rows(), out["detections"], "detections", CLASSES)
    return out
