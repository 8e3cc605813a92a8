"""What the retrain and wsis stages' detector families are called in results and reports.

``retrain.model.family`` / ``wsis.model.family`` (``weaksam.detection.config``) pick the
architecture: ``rcnn`` (torchvision's Faster R-CNN for boxes, Mask R-CNN for masks), ``rt_detr``
(boxes) or ``mask2former`` (masks). Results of a non-R-CNN family carry a suffix, so a run's
``results.json`` never puts an RT-DETR figure under an R-CNN key: ``retrain_ap50_detr``,
``wsis_ap50_m2f``. Light module: no torch.
"""

from __future__ import annotations

from typing import Any

# family -> (name for boxes, name for masks)
DISPLAY_NAMES: dict[str, tuple[str, str]] = {
    "rcnn": ("Faster R-CNN", "Mask R-CNN"),
    "rt_detr": ("RT-DETR", "RT-DETR"),
    "mask2former": ("Mask2Former", "Mask2Former"),
}
RESULT_SUFFIXES: dict[str, str] = {"rcnn": "", "rt_detr": "_detr", "mask2former": "_m2f"}

__all__ = ["DISPLAY_NAMES", "RESULT_SUFFIXES", "display_name", "result_suffix", "section_family"]


def _known(family: str) -> None:
    if family not in DISPLAY_NAMES:
        raise ValueError(f"unknown detector family {family!r}; families: {list(DISPLAY_NAMES)}")


def display_name(family: str, masks: bool = False) -> str:
    """The architecture's name for captions: ``Faster R-CNN`` / ``Mask R-CNN`` (``rcnn``
    without / with ``masks``), ``RT-DETR``, ``Mask2Former``. Unknown names raise
    ``ValueError``."""
    _known(family)
    return DISPLAY_NAMES[family][int(masks)]


def result_suffix(family: str) -> str:
    """The suffix of a family's result keys: ``""`` (rcnn), ``_detr``, ``_m2f``."""
    _known(family)
    return RESULT_SUFFIXES[family]


def section_family(section: Any) -> str:
    """``section.model.family`` of a retrain / wsis config section (``rcnn`` for a section
    without the field)."""
    return str(getattr(section.model, "family", "rcnn"))
