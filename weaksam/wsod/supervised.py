"""Ground truth for the fully supervised *upper bound* only.

The ``supervised`` method trains the same backbone and RoI head as a Fast R-CNN on the same
proposals, with RoI labels from IoU ``>= fg_iou`` with the ground-truth boxes. It exists to put
the weakly-supervised numbers in context; this module is the only place in ``weaksam.wsod``
that reads ``gt_*`` columns, and nothing that feeds pseudo ground truth imports it.
"""

from __future__ import annotations

import numpy as np
import torch

from weaksam.geometry.boxes import as_boxes
from weaksam.io.tables import read_table

GT_COLUMNS = ("image_id", "split", "gt_boxes", "gt_classes", "gt_difficult", "error")


def load_gt_for_upper_bound(
    manifest: str, split: str
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``image_id → (boxes Gx4 float32, classes G int64)`` of ``split``'s annotated images
    (difficult objects left out, as they are ignored by the metrics)."""
    out: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for r in read_table(manifest, "manifest", columns=GT_COLUMNS).to_pylist():
        if r["split"] != split or r["error"] or r["gt_boxes"] is None:
            continue
        boxes = as_boxes(r["gt_boxes"])
        classes = np.asarray(r["gt_classes"] or [], dtype=np.int64)
        difficult = np.asarray(r["gt_difficult"] or [False] * len(boxes), dtype=bool)
        keep = ~difficult
        out[str(r["image_id"])] = (
            torch.from_numpy(boxes[keep].copy()),
            torch.from_numpy(classes[keep].copy()),
        )
    return out
