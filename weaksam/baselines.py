"""A trivial reference detector, so every metric has a floor to compare against.

``window_prior``: a fixed multi-scale grid of square windows (sides 15 %, 25 % and 40 % of the
shorter image side, stride half a side), the same for every image. Each window is predicted for
each class with score ``prior[c] * centre_weight``: ``prior`` is the class's frequency among the
training images' labels and ``centre_weight`` a Gaussian of the window centre's distance to the
image centre (objects are often central), so CorLoc's single best box is a central window. On
test images every class with a non-zero prior is predicted (labels may not be used there); on
training images (CorLoc's setting, where image labels are the supervision) only the labelled
classes. Nothing here reads ground-truth boxes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from weaksam.io.schemas import empty_row, error_row

WINDOW_SCALES = (0.15, 0.25, 0.4)
CENTRE_SIGMA = 0.35  # in units of the image side


def class_prior(
    manifest_rows: Sequence[Mapping[str, Any]], num_classes: int
) -> npt.NDArray[np.float32]:
    """Share of the given (training) images whose labels contain each class. Shape ``C``."""
    counts = np.zeros(num_classes, dtype=np.float64)
    n = 0
    for row in manifest_rows:
        if row.get("error"):
            continue
        n += 1
        for c in set(row["labels"] or []):
            counts[c] += 1
    return (counts / max(n, 1)).astype(np.float32)


def window_grid(
    height: int, width: int, scales: Sequence[float] = WINDOW_SCALES
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """Square windows covering the image at each scale, and their centre weights.

    Returns ``(boxes Nx4 XYXY, weights N in (0, 1])``.
    """
    side0 = min(height, width)
    boxes = []
    for s in scales:
        side = s * side0
        step = side / 2
        xs = np.arange(0, max(width - side, 0) + 1e-6, step)
        ys = np.arange(0, max(height - side, 0) + 1e-6, step)
        for y in ys:
            for x in xs:
                boxes.append((x, y, x + side, y + side))
    b = np.asarray(boxes, dtype=np.float32)
    cx = (b[:, 0] + b[:, 2]) / 2 / width - 0.5
    cy = (b[:, 1] + b[:, 3]) / 2 / height - 0.5
    weights = np.exp(-(cx**2 + cy**2) / (2 * CENTRE_SIGMA**2)).astype(np.float32)
    return b, weights


def window_prior_detections(
    manifest_rows: Sequence[Mapping[str, Any]],
    prior: npt.NDArray[np.float32],
    use_labels: bool,
    max_detections: int = 100,
) -> list[dict[str, Any]]:
    """Detections-table rows of the window-prior baseline (see the module docstring).

    Args:
        manifest_rows: manifest rows of one split.
        prior: ``C`` class frequencies (see :func:`class_prior`).
        use_labels: predict only each image's labelled classes (training split / CorLoc).
        max_detections: per image, highest scores first.
    """
    rows = []
    for r in manifest_rows:
        if r.get("error"):
            rows.append(error_row("detections", r["image_id"], r["image_index"], r["error"]))
            continue
        h, w = int(r["height"]), int(r["width"])
        boxes, weights = window_grid(h, w)
        classes = sorted(set(r["labels"])) if use_labels else np.flatnonzero(prior > 0).tolist()
        cls = np.repeat(np.asarray(classes, dtype=np.int64), len(boxes))
        scores = (prior[cls] if len(cls) else np.zeros(0)) * np.tile(weights, len(classes))
        order = np.argsort(-scores, kind="stable")[:max_detections]
        rows.append(
            empty_row(
                "detections",
                r["image_id"],
                r["image_index"],
                height=h,
                width=w,
                boxes=np.tile(boxes, (len(classes), 1))[order].reshape(-1).tolist(),
                scores=scores[order].tolist(),
                classes=cls[order].tolist(),
            )
        )
    return rows
