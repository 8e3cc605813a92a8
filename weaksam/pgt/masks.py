"""Ray-facing batch callables of the PGT mask job; each can be called directly on a dict.

A work item is one ``pgt`` row plus the image's ``path``; the boxes, scores and classes travel
as bytes (float32 ``4G``, float32 ``G``, int32 ``G``) so every column converts to Arrow
whatever the number of boxes. Images are decoded in a CPU stage
(:func:`weaksam.proposals.udf.decode_images`); :class:`PGTMaskPredictor` holds SAM once per
actor, encodes each image once and prompts it with all of the image's PGT boxes
(:meth:`weaksam.sam.engine.SamPromptEngine.predict_boxes`), returning the ``pgt`` row with its
``masks`` (RLE, one per box, in box order). A failing image becomes an error row.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from weaksam.io.schemas import empty_row, error_row, rows_to_table

log = logging.getLogger(__name__)

ITEM_KEYS = (
    "image_id",
    "image_index",
    "path",
    "height",
    "width",
    "error",
    "boxes",
    "scores",
    "classes",
)


def pack_item(row: Mapping[str, Any], path: str) -> dict[str, Any]:
    """The work item of a ``pgt`` row (see the module docstring); ``error`` ``""`` if none."""
    return {
        "image_id": str(row["image_id"]),
        "image_index": int(row["image_index"]),
        "path": path,
        "height": int(row.get("height") or 0),
        "width": int(row.get("width") or 0),
        "error": str(row.get("error") or ""),
        "boxes": np.asarray(row.get("boxes") or [], np.float32).tobytes(),
        "scores": np.asarray(row.get("scores") or [], np.float32).tobytes(),
        "classes": np.asarray(row.get("classes") or [], np.int32).tobytes(),
    }


def unpack_targets(item: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(boxes Gx4 float32, scores G float32, classes G int64)`` of a work item."""
    boxes = np.frombuffer(item["boxes"] or b"", np.float32).reshape(-1, 4)
    scores = np.frombuffer(item["scores"] or b"", np.float32)
    classes = np.frombuffer(item["classes"] or b"", np.int32).astype(np.int64)
    return boxes, scores, classes


class PGTMaskPredictor:
    """Holds one SAM per actor and adds box-prompted masks to a batch of decoded PGT items.

    Args:
        sam_config: ``SamConfig`` as a dict. engine_config: ``EngineConfig`` as a dict
            (``box_mask`` chooses each box's mask; ``points_per_batch`` the chunk size).
    """

    def __init__(self, sam_config: Mapping[str, Any], engine_config: Mapping[str, Any]) -> None:
        from weaksam.configlib import from_dict
        from weaksam.sam.build import SamConfig
        from weaksam.sam.engine import EngineConfig, SamPromptEngine

        self.engine = SamPromptEngine.from_config(
            from_dict(sam_config, SamConfig), from_dict(engine_config, EngineConfig)
        )

    def __call__(self, batch: dict[str, Any]) -> pa.Table:
        rows = [
            self.process({k: (batch[k][i] if k in batch else None) for k in (*ITEM_KEYS, "image")})
            for i in range(len(batch["image_id"]))
        ]
        return rows_to_table(rows, "pgt")

    def process(self, item: Mapping[str, Any]) -> dict[str, Any]:
        """One decoded work item → one ``pgt`` row with masks."""
        image_id, index = str(item["image_id"]), int(item["image_index"])
        size = {"height": int(item["height"] or 0), "width": int(item["width"] or 0)}
        if item.get("error"):
            return error_row("pgt", image_id, index, str(item["error"]), **size)
        boxes, scores, classes = unpack_targets(item)
        image = item["image"]
        h, w = int(image.shape[0]), int(image.shape[1])
        if (h, w) != (size["height"], size["width"]):
            return error_row(
                "pgt",
                image_id,
                index,
                f"image is {h}x{w}, the table says {size['height']}x{size['width']}",
                **size,
            )
        masks: list[bytes] = []
        if len(boxes):
            try:
                masks = _masks(self.engine, image, boxes)
            except Exception as exc:  # one bad image must not stop the job
                log.exception("PGT masks failed for %s", image_id)
                return error_row("pgt", image_id, index, f"PGT masks failed: {exc}", **size)
        return empty_row(
            "pgt",
            image_id,
            index,
            **size,
            boxes=boxes.reshape(-1).tolist(),
            scores=scores.tolist(),
            classes=classes.tolist(),
            masks=masks,
        )


def _masks(engine: Any, image: np.ndarray, boxes: np.ndarray) -> list[bytes]:
    out = engine.predict_boxes(engine.embed_image(image), boxes)
    if out.masks is None or len(out.masks) != len(boxes):
        raise RuntimeError("SAM returned a different number of masks than boxes")
    return list(out.masks)


def items_batch(items: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
    """Work items as a numpy dict batch (Ray Data's format), for direct calls and tests."""
    return {k: np.asarray([it[k] for it in items], dtype=object) for k in ITEM_KEYS}
