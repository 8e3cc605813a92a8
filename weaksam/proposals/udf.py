"""Ray-facing batch callables of the proposal job; each can be called directly on a dict.

Batches are ``dict[str, np.ndarray]`` (Ray Data's numpy batch format). Images are decoded in a
CPU stage (:func:`decode_images`); :class:`ProposalGenerator` holds SAM once per actor and
turns each decoded image into one ``proposals`` row. A failing image becomes an error row.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from weaksam.data.imageio import ImageDecodeError, load_image
from weaksam.io.schemas import empty_row, error_row, rows_to_table

log = logging.getLogger(__name__)

# Columns of a work item (one manifest row plus its peak points). Points travel as bytes
# (float32 x, y pairs; int32 classes) and kinds as one "|"-joined string, so every column
# converts to Arrow whatever the number of points; "" means "no error".
ITEM_KEYS = (
    "image_id",
    "image_index",
    "path",
    "height",
    "width",
    "error",
    "points",
    "point_classes",
    "point_kinds",
)


def _col(batch: Mapping[str, Any], key: str) -> list[Any]:
    value = batch.get(key)
    if value is None:
        n = len(batch["image_id"])
        return [None] * n
    return list(value)


def decode_images(batch: dict[str, Any], max_pixels: int = 64_000_000) -> dict[str, Any]:
    """Decode each item's image; sets ``image`` (HxWx3 uint8, or an empty array) and ``error``.

    Rows that already carry an error (from ingest) are passed through undecoded.
    """
    images: list[npt.NDArray[np.uint8]] = []
    errors: list[str] = []
    for path, err in zip(_col(batch, "path"), _col(batch, "error"), strict=True):
        if err:
            images.append(np.zeros((0, 0, 3), np.uint8))
            errors.append(str(err))
            continue
        try:
            images.append(load_image(str(path), max_pixels=max_pixels))
            errors.append("")
        except ImageDecodeError as exc:
            images.append(np.zeros((0, 0, 3), np.uint8))
            errors.append(str(exc))
    out = dict(batch)
    out["image"] = _object_array(images)
    out["error"] = np.asarray(errors, dtype=object)
    return out


def _object_array(items: list[Any]) -> npt.NDArray[np.object_]:
    arr = np.empty(len(items), dtype=object)
    for i, item in enumerate(items):
        arr[i] = item
    return arr


class ProposalGenerator:
    """Holds one SAM per actor and generates WeakSAM proposals for a batch of decoded images.

    Args:
        sam_config: ``SamConfig`` as a dict (see :func:`weaksam.configlib.to_dict`); its
            ``model_type`` picks the backend (SAM or SAM 2.1, :func:`~weaksam.sam.backends
            .build_engine`).
        engine_config: ``EngineConfig`` as a dict.
    """

    def __init__(self, sam_config: Mapping[str, Any], engine_config: Mapping[str, Any]) -> None:
        from weaksam.configlib import from_dict
        from weaksam.sam.backends import build_engine
        from weaksam.sam.build import SamConfig
        from weaksam.sam.engine import EngineConfig, prompt_embedding

        self._prompt_embedding = prompt_embedding
        self.sam_config = from_dict(sam_config, SamConfig)
        self.engine_config = from_dict(engine_config, EngineConfig)
        self.engine = build_engine(self.sam_config, self.engine_config)

    def __call__(self, batch: dict[str, Any]) -> pa.Table:
        items = [
            {k: (batch[k][i] if k in batch else None) for k in (*ITEM_KEYS, "image")}
            for i in range(len(batch["image_id"]))
        ]
        embeddings = self._embed_batch(items)
        return rows_to_table(
            [self.process(item, embeddings.get(i)) for i, item in enumerate(items)],
            "proposals",
        )

    def _embed_batch(self, items: Sequence[Mapping[str, Any]]) -> dict[int, Any]:
        """Encoder passes shared by the batch's good images, when the engine batches them
        (``precision: fast`` with ``encoder_batch > 1``); ``{}`` otherwise or when the
        batched pass fails (each image is then encoded, and fails, on its own)."""
        cfg = self.engine_config
        good = [i for i, it in enumerate(items) if not it.get("error")]
        if cfg.precision != "fast" or cfg.encoder_batch < 2 or len(good) < 2:
            return {}
        try:
            embs = self.engine.embed_images([items[i]["image"] for i in good])
        except Exception:
            log.warning("batched encoder pass failed; encoding one image at a time", exc_info=True)
            return {}
        return dict(zip(good, embs, strict=True))

    def process(self, item: Mapping[str, Any], embedding: Any = None) -> dict[str, Any]:
        """One work item (with a decoded ``image``) → one ``proposals`` row; ``embedding``:
        the image already encoded (a batched encoder pass), else it is encoded here."""
        image_id, index = str(item["image_id"]), int(item["image_index"])
        if item.get("error"):
            return error_row("proposals", image_id, index, str(item["error"]))
        image = item["image"]
        t0 = time.perf_counter()
        try:
            points, classes, kinds = _points_of(item)
            if embedding is None:
                result = self.engine.generate(
                    image, points=points, point_classes=classes, point_kinds=kinds
                )
            else:
                result = self._prompt_embedding(self.engine, embedding, points, classes, kinds)
        except Exception as exc:  # one bad image must not stop the job
            log.exception("proposal generation failed for %s", image_id)
            return error_row("proposals", image_id, index, f"proposal generation failed: {exc}")
        h, w = image.shape[:2]
        log.debug(
            "%s: %d proposals in %.2f s", image_id, len(result.boxes), time.perf_counter() - t0
        )
        return empty_row(
            "proposals",
            image_id,
            index,
            height=int(h),
            width=int(w),
            boxes=np.asarray(result.boxes, np.float32).reshape(-1).tolist(),
            scores=np.asarray(result.scores, np.float32).tolist(),
            sources=list(result.sources),
            class_hints=np.asarray(result.class_hints, np.int64).tolist(),
            masks=list(result.masks) if result.masks is not None else None,
        )


def pack_points(
    points: Sequence[float], classes: Sequence[int], kinds: Sequence[str]
) -> dict[str, Any]:
    """The work-item encoding of a points-table row (see ``ITEM_KEYS``)."""
    return {
        "points": np.asarray(points, dtype=np.float32).tobytes(),
        "point_classes": np.asarray(classes, dtype=np.int32).tobytes(),
        "point_kinds": "|".join(kinds),
    }


def _points_of(
    item: Mapping[str, Any],
) -> tuple[npt.NDArray[np.float32] | None, npt.NDArray[np.int64] | None, list[str] | None]:
    raw = item.get("points")
    if not raw:
        return None, None, None
    points = np.frombuffer(raw, dtype=np.float32).reshape(-1, 2)
    classes = np.frombuffer(item["point_classes"], dtype=np.int32).astype(np.int64)
    kinds = str(item["point_kinds"]).split("|")
    return points, classes, kinds
