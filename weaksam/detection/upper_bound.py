"""Ground-truth training samples for the fully supervised *upper bound* only.

The retrain and wsis stages can train the same detector on the manifest's ground truth to put
the weakly-supervised numbers in context (``upper_bound_ap50``, ``upper_bound_mask_ap50``).
This module is the only place in :mod:`weaksam.detection` that reads ``gt_*`` columns, and
nothing on the PGT path imports it. Difficult objects are left out (the metrics ignore them).
"""

from __future__ import annotations

import numpy as np

from weaksam.detection.data import DetectionSample, image_rows, make_sample
from weaksam.io.tables import read_table

GT_COLUMNS = ("image_id", "split", "gt_boxes", "gt_classes", "gt_difficult", "gt_masks", "error")


def read_gt_samples(
    manifest: str, split: str, with_masks: bool = False
) -> tuple[list[DetectionSample], int]:
    """Samples of ``split`` with ground-truth targets; returns them and how many annotated
    images were left out (no box left, or no masks when ``with_masks``)."""
    images = image_rows(manifest, split)
    samples: list[DetectionSample] = []
    left_out = 0
    for r in read_table(manifest, "manifest", columns=GT_COLUMNS).to_pylist():
        row = images.get(str(r["image_id"]))
        if row is None or r["gt_boxes"] is None:
            continue
        n = len(r["gt_boxes"]) // 4
        keep = ~np.asarray(r["gt_difficult"] or [False] * n, dtype=bool)
        masks = r["gt_masks"]
        if with_masks and masks is None:
            left_out += 1
            continue
        boxes = np.asarray(r["gt_boxes"], np.float32).reshape(-1, 4)[keep]
        classes = np.asarray(r["gt_classes"] or [], np.int64)[keep]
        kept_masks = [m for m, k in zip(masks, keep, strict=True) if k] if with_masks else None
        s = make_sample(row, boxes, classes, kept_masks)
        if s is None:
            left_out += 1
            continue
        samples.append(s)
    return samples, left_out
