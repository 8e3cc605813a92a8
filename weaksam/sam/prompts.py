"""Prompt construction: the point grid, per-class point groups and batching plans.

Pure numpy helpers; coordinates are ``(x, y)`` in pixels of the original image.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from segment_anything.utils.amg import build_all_layer_point_grids

FloatArray = npt.NDArray[np.float32]
Float64Array = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def grid_points(points_per_side: int, height: int, width: int) -> npt.NDArray[np.float64]:
    """The automatic mask generator's point grid in pixels. Shape ``(points_per_side**2)x2``.

    Same points as ``SamAutomaticMaskGenerator`` without crops: cell centres of a
    ``points_per_side`` square grid (``build_all_layer_point_grids``), scaled by ``(W, H)``;
    row-major (x varies fastest). float64, as AMG feeds them to the model.
    """
    if points_per_side <= 0:
        return np.zeros((0, 2), dtype=np.float64)
    grid = build_all_layer_point_grids(points_per_side, 0, 1)[0]
    return grid * np.array([[width, height]], dtype=np.float64)


def check_points(points: npt.ArrayLike, name: str = "points") -> Float64Array:
    """``points`` as a float64 ``Px2`` array (``P`` may be 0); raises ``ValueError`` otherwise.

    float64 because ``ResizeLongestSide.apply_coords`` computes in float64 (as ``SamPredictor``
    does with the caller's array) before the cast to float32.
    """
    arr = np.asarray(points, dtype=np.float64)
    if arr.size == 0:
        return np.zeros((0, 2), dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"{name} must be Px2 (x, y), got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} must be finite")
    return np.ascontiguousarray(arr)


def check_labels(labels: npt.ArrayLike | None, n: int, name: str = "labels") -> IntArray:
    """Point labels as int64 ``P`` (default all 1 = foreground); values must be 0 or 1."""
    if labels is None:
        return np.ones(n, dtype=np.int64)
    arr = np.asarray(labels).reshape(-1)
    if arr.shape[0] != n:
        raise ValueError(f"{name} must have {n} entries, got {arr.shape[0]}")
    if arr.size and not np.isin(arr, (0, 1)).all():
        raise ValueError(f"{name} must be 0 (background) or 1 (foreground)")
    return arr.astype(np.int64)


@dataclass(frozen=True)
class PointGroup:
    """One multi-point prompt: ``K`` points (``Kx2`` float64) and their labels (``K`` int64)."""

    points: Float64Array
    labels: IntArray


def make_groups(
    groups: Sequence[tuple[npt.ArrayLike, npt.ArrayLike | None]],
) -> list[PointGroup]:
    """Validate ``[(points Kx2, labels K | None), ...]``; each group needs ``K >= 1``."""
    out = []
    for i, (pts, labels) in enumerate(groups):
        p = check_points(pts, f"groups[{i}] points")
        if p.shape[0] == 0:
            raise ValueError(f"groups[{i}] has no points")
        out.append(PointGroup(p, check_labels(labels, p.shape[0], f"groups[{i}] labels")))
    return out


def bucket_by_size(sizes: Sequence[int], batch: int) -> Iterator[IntArray]:
    """Batches of prompt indices with equal size ``K``, at most ``batch`` per batch.

    SAM's decoder attends over every sparse token, padding (label -1) ones included, so
    padding a ``K``-point prompt to ``K' > K`` points changes its masks; prompts are therefore
    batched only with prompts of the same ``K``. Buckets come in increasing ``K``, indices in
    increasing order within a bucket.
    """
    arr = np.asarray(sizes, dtype=np.int64)
    for k in np.unique(arr):
        idx = np.flatnonzero(arr == k)
        for start in range(0, idx.size, batch):
            yield idx[start : start + batch]


def group_points_by_class(
    points: Float64Array, classes: npt.NDArray[np.int64]
) -> tuple[list[int], list[Float64Array]]:
    """Per-class point sets for class-wise prompts: ``(class ids ascending, [Kx2 points])``.

    Points keep their input order within a class.
    """
    ids = sorted({int(c) for c in classes.tolist()})
    return ids, [points[classes == c] for c in ids]


def order_kinds(kinds: Sequence[str], preferred: Sequence[str]) -> list[str]:
    """The distinct ``kinds`` in output order: ``preferred`` first (in its order), then the
    others in order of first appearance."""
    present = list(dict.fromkeys(kinds))
    head = [k for k in preferred if k in present]
    return head + [k for k in present if k not in head]
