"""Painter's-algorithm composition with exact visible masks.

Objects are drawn in order, later ones on top. The canvas keeps an ``owner`` map (``HxW`` int32,
index of the object that owns each pixel, -1 = background), so every object's *visible* mask is
``owner == index`` and visible masks are disjoint by construction.

Occlusion rule: a placement is refused when it would leave any earlier object less than
``min_visible`` of its full area visible, or when the new object itself would show less than
``min_visible`` of its area inside the image (truncation). Callers re-sample refused placements.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from weaksam.data.synth.shapes import BoolArray, Stamp
from weaksam.data.synth.textures import FloatImage, object_fill

MIN_CONTRAST = 60.0
"""Minimum RGB distance between an object's mean fill and the mean of what it covers."""


class Canvas:
    """An image being composed, with the owner map of its objects.

    Args:
        background: ``HxWx3`` float32 RGB in ``[0, 255]``; copied.
    """

    def __init__(self, background: FloatImage) -> None:
        self.image = background.astype(np.float32, copy=True)
        self.height, self.width = self.image.shape[:2]
        self.owner = np.full((self.height, self.width), -1, dtype=np.int32)
        self.full_area: list[int] = []
        self.visible: list[int] = []

    def __len__(self) -> int:
        return len(self.full_area)

    def can_place(self, stamp: Stamp, min_visible: float, allow_overlap: bool = True) -> bool:
        """Whether ``stamp`` may go on top (see the module's occlusion rule)."""
        area = stamp.area
        if area == 0 or area < min_visible * stamp.full_area:
            return False
        covered = self.owner[stamp.window()][stamp.mask]
        covered = covered[covered >= 0]
        if covered.size == 0:
            return True
        if not allow_overlap:
            return False
        lost = np.bincount(covered, minlength=len(self))
        after = np.asarray(self.visible) - lost
        return bool(np.all(after >= min_visible * np.asarray(self.full_area)))

    def place(self, stamp: Stamp) -> int:
        """Put ``stamp`` on top (no checks); returns its object index."""
        index = len(self)
        win = self.owner[stamp.window()]
        covered = win[stamp.mask]
        covered = covered[covered >= 0]
        if covered.size:
            lost = np.bincount(covered, minlength=index)
            self.visible = [int(v - n) for v, n in zip(self.visible, lost, strict=True)]
        win[stamp.mask] = index
        self.full_area.append(stamp.full_area)
        self.visible.append(stamp.area)
        return index

    def under(self, stamp: Stamp) -> npt.NDArray[np.float32]:
        """Mean RGB of the canvas under ``stamp``, shape ``3``."""
        return self.image[stamp.window()][stamp.mask].mean(axis=0).astype(np.float32)

    def paint(self, stamp: Stamp, fill: FloatImage) -> None:
        """Copy ``fill`` (``hxwx3``, the stamp window's size) into the stamp's pixels."""
        self.image[stamp.window()][stamp.mask] = fill[stamp.mask]

    def visible_mask(self, index: int) -> BoolArray:
        """The visible ``HxW`` bool mask of object ``index``."""
        return np.asarray(self.owner == index)

    def visible_fraction(self, index: int) -> float:
        """Visible pixels / full area of object ``index`` (0 for an empty shape)."""
        full = self.full_area[index]
        return self.visible[index] / full if full else 0.0


def contrasting_fill(
    rng: np.random.Generator,
    under: npt.NDArray[np.float32],
    height: int,
    width: int,
    tries: int = 6,
) -> FloatImage:
    """A random object fill whose mean is at least :data:`MIN_CONTRAST` from ``under``.

    Draws up to ``tries`` fills from :func:`~weaksam.data.synth.textures.object_fill` and keeps
    the first that contrasts enough (else the most contrasting one), so the object is visible
    without making colour a class cue.
    """
    best = object_fill(rng, height, width)
    best_d = float(np.linalg.norm(best.reshape(-1, 3).mean(0) - under))
    for _ in range(tries - 1):
        if best_d >= MIN_CONTRAST:
            break
        fill = object_fill(rng, height, width)
        d = float(np.linalg.norm(fill.reshape(-1, 3).mean(0) - under))
        if d > best_d:
            best, best_d = fill, d
    return best
