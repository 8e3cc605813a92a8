"""Pseudo ground truth from one image's detections (WeakSAM section 4, without its bugs).

Both rules first drop every detection whose class is not among the image's labels.

* ``top1``: the best-scoring detection of each labelled class (score > 0).
* ``adaptive``: per class, scores are normalised (``normalization``, :func:`normalize_scores`:
  ``reference`` divides by ``max - min + 1e-8`` as the reference code does, method §4.1;
  ``minmax`` is ``(s - min) / (max - min)``, which always drops a class's lowest detection);
  the best box of each labelled class is always kept, the others when their normalised score
  is ``>= t_keep``; then, walking each
  class's kept boxes by decreasing score, a box is dropped when ``>= t_con`` of its area lies
  inside a higher-scoring box already kept — asymmetric, so two duplicates keep one.

Ties in score keep the input order (stable sort). Boxes are ``Nx4`` XYXY, continuous.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from weaksam.configlib import check_choice, check_fraction
from weaksam.geometry.boxes import as_boxes, box_area, box_intersection

MODES = ("top1", "adaptive")
NORMALIZATIONS = ("reference", "minmax")


@dataclass(frozen=True)
class PGTConfig:
    """Which rule, its thresholds (WeakSAM/SoS defaults: t_keep 0.5, t_con 0.85) and the
    adaptive rule's score normalisation (:data:`NORMALIZATIONS`)."""

    mode: str = "adaptive"
    t_keep: float = 0.5
    t_con: float = 0.85
    normalization: str = "minmax"

    def __post_init__(self) -> None:
        check_choice(self, "mode", MODES, "PGT mode")
        check_choice(self, "normalization", NORMALIZATIONS, "PGT score normalization")
        check_fraction(self, "t_keep", "t_con")


@dataclass(frozen=True)
class PseudoGT:
    """Kept detections: ``boxes`` ``Gx4``, ``classes`` ``G``, ``scores`` ``G`` (original)."""

    boxes: npt.NDArray[np.float32]
    classes: npt.NDArray[np.int64]
    scores: npt.NDArray[np.float32]

    def __len__(self) -> int:
        return int(self.boxes.shape[0])


def _prepare(
    boxes: npt.ArrayLike, scores: npt.ArrayLike, classes: npt.ArrayLike, labels: Iterable[int]
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32], npt.NDArray[np.int64], list[int]]:
    b = as_boxes(boxes)
    s = np.asarray(scores, dtype=np.float32).reshape(-1)
    c = np.asarray(classes, dtype=np.int64).reshape(-1)
    if not (len(b) == len(s) == len(c)):
        raise ValueError(
            f"boxes, scores and classes differ in length: {len(b)}, {len(s)}, {len(c)}"
        )
    return b, s, c, sorted({int(x) for x in labels})


def _select(
    b: npt.NDArray[np.float32],
    s: npt.NDArray[np.float32],
    c: npt.NDArray[np.int64],
    keep: list[int],
) -> PseudoGT:
    idx = np.asarray(keep, dtype=np.int64)
    return PseudoGT(b[idx].reshape(-1, 4), c[idx], s[idx])


def normalize_scores(scores: npt.ArrayLike, mode: str = "minmax") -> npt.NDArray[np.float32]:
    """One class's scores, normalised.

    ``minmax``: ``(s - min) / (max - min)``, 1 for every entry when ``max == min`` (one entry
    included). ``reference``: ``s / (max - min + 1e-8)`` (the reference code's rule, method
    §4.1; not a min-max normalisation: with one entry or equal scores every value is large,
    so every such box passes any ``t_keep``)."""
    s = np.asarray(scores, dtype=np.float32).reshape(-1)
    if s.size == 0:
        return s
    lo, hi = float(s.min()), float(s.max())
    if mode == "reference":
        return (s.astype(np.float64) / (hi - lo + 1e-8)).astype(np.float32)
    if mode != "minmax":
        raise ValueError(f"unknown normalization {mode!r}; known: {NORMALIZATIONS}")
    if hi - lo <= 0:
        return np.ones_like(s)
    return ((s - lo) / (hi - lo)).astype(np.float32)


def pgt_top1(
    boxes: npt.ArrayLike, scores: npt.ArrayLike, classes: npt.ArrayLike, labels: Iterable[int]
) -> PseudoGT:
    """The best detection (score > 0) of each labelled class, classes ascending."""
    b, s, c, labs = _prepare(boxes, scores, classes, labels)
    keep = []
    for cls in labs:
        idx = np.flatnonzero((c == cls) & (s > 0))
        if idx.size:
            keep.append(int(idx[np.argsort(-s[idx], kind="stable")[0]]))
    return _select(b, s, c, keep)


def pgt_adaptive(
    boxes: npt.ArrayLike,
    scores: npt.ArrayLike,
    classes: npt.ArrayLike,
    labels: Iterable[int],
    t_keep: float = 0.5,
    t_con: float = 0.85,
    normalization: str = "minmax",
) -> PseudoGT:
    """The adaptive rule (see the module docstring); per class by decreasing score."""
    b, s, c, labs = _prepare(boxes, scores, classes, labels)
    keep: list[int] = []
    for cls in labs:
        idx = np.flatnonzero(c == cls)
        if idx.size == 0:
            continue
        idx = idx[np.argsort(-s[idx], kind="stable")]
        norm = normalize_scores(s[idx], normalization)
        cand = [int(i) for rank, i in enumerate(idx) if rank == 0 or norm[rank] >= t_keep]
        kept: list[int] = []
        for i in cand:
            if kept:
                inside = box_intersection(b[[i]], b[kept])[0]
                area = box_area(b[[i]])[0]
                if area > 0 and float(inside.max()) / float(area) >= t_con:
                    continue
            kept.append(i)
        keep += kept
    return _select(b, s, c, keep)


def make_pgt(
    boxes: npt.ArrayLike,
    scores: npt.ArrayLike,
    classes: npt.ArrayLike,
    labels: Iterable[int],
    cfg: PGTConfig,
) -> PseudoGT:
    """Apply ``cfg.mode`` to one image."""
    if cfg.mode == "top1":
        return pgt_top1(boxes, scores, classes, labels)
    return pgt_adaptive(boxes, scores, classes, labels, cfg.t_keep, cfg.t_con, cfg.normalization)
