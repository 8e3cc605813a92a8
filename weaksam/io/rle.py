"""COCO RLE helpers (pycocotools). Masks cross Ray and Parquet only as compressed RLE.

An RLE here is the ``counts`` bytes of pycocotools' compressed RLE; its size is the image's
``(height, width)``, stored in the table row, not repeated per mask.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from pycocotools import mask as mask_utils


def encode_mask(mask: npt.NDArray[Any]) -> bytes:
    """Encode a binary ``HxW`` mask (bool or 0/1) as compressed-RLE counts bytes."""
    m = np.asfortranarray(np.asarray(mask, dtype=np.uint8))
    if m.ndim != 2:
        raise ValueError(f"mask must be HxW, got shape {m.shape}")
    rle = mask_utils.encode(m)
    counts = rle["counts"]
    return counts if isinstance(counts, bytes) else str(counts).encode()


def encode_masks(masks: npt.NDArray[Any]) -> list[bytes]:
    """Encode ``NxHxW`` binary masks; returns ``N`` counts bytes."""
    arr = np.asarray(masks, dtype=np.uint8)
    if arr.ndim != 3:
        raise ValueError(f"masks must be NxHxW, got shape {arr.shape}")
    if arr.shape[0] == 0:
        return []
    rles = mask_utils.encode(np.asfortranarray(arr.transpose(1, 2, 0)))
    return [r["counts"] for r in rles]


def to_coco_rle(counts: bytes, height: int, width: int) -> dict[str, Any]:
    """A pycocotools RLE dict ``{"size": [h, w], "counts": bytes}``."""
    return {"size": [int(height), int(width)], "counts": counts}


def to_json_rle(counts: bytes, height: int, width: int) -> dict[str, Any]:
    """The JSON-serialisable form used in COCO files (``counts`` as an ASCII string)."""
    return {"size": [int(height), int(width)], "counts": counts.decode("ascii")}


def from_json_rle(rle: dict[str, Any]) -> tuple[bytes, int, int]:
    """Parse a COCO json RLE (compressed or uncompressed) to ``(counts, height, width)``."""
    h, w = (int(v) for v in rle["size"])
    counts = rle["counts"]
    if isinstance(counts, list):  # uncompressed RLE
        counts = mask_utils.frPyObjects(rle, h, w)["counts"]
    if isinstance(counts, str):
        counts = counts.encode("ascii")
    return counts, h, w


def polygons_to_rle(polygons: Sequence[Sequence[float]], height: int, width: int) -> bytes:
    """Rasterise COCO polygons (lists of ``x0 y0 x1 y1 ...``) into one RLE counts bytes."""
    polys = [list(map(float, p)) for p in polygons if len(p) >= 6]
    if not polys:
        return encode_mask(np.zeros((height, width), dtype=np.uint8))
    rles = mask_utils.frPyObjects(polys, height, width)
    merged = mask_utils.merge(rles)
    return bytes(merged["counts"])


def decode_mask(counts: bytes, height: int, width: int) -> npt.NDArray[np.bool_]:
    """Decode one RLE to a boolean ``HxW`` mask."""
    return mask_utils.decode(to_coco_rle(counts, height, width)).astype(bool)


def decode_masks(counts: Sequence[bytes], height: int, width: int) -> npt.NDArray[np.bool_]:
    """Decode ``N`` RLEs to a boolean ``NxHxW`` array (``0xHxW`` when empty)."""
    if len(counts) == 0:
        return np.zeros((0, height, width), dtype=bool)
    rles = [to_coco_rle(c, height, width) for c in counts]
    return mask_utils.decode(rles).transpose(2, 0, 1).astype(bool)


def rle_area(counts: Sequence[bytes], height: int, width: int) -> npt.NDArray[np.float32]:
    """Pixel areas of ``N`` RLEs. Shape ``N``."""
    if len(counts) == 0:
        return np.zeros(0, dtype=np.float32)
    rles = [to_coco_rle(c, height, width) for c in counts]
    return np.asarray(mask_utils.area(rles), dtype=np.float32)


def rle_to_boxes(counts: Sequence[bytes], height: int, width: int) -> npt.NDArray[np.float32]:
    """Tight XYXY boxes (continuous convention) of ``N`` RLEs. Shape ``Nx4``."""
    if len(counts) == 0:
        return np.zeros((0, 4), dtype=np.float32)
    rles = [to_coco_rle(c, height, width) for c in counts]
    xywh = np.asarray(mask_utils.toBbox(rles), dtype=np.float32).reshape(-1, 4)
    xywh[:, 2:] += xywh[:, :2]
    return xywh


def mask_iou(
    a: Sequence[bytes], b: Sequence[bytes], height: int, width: int
) -> npt.NDArray[np.float32]:
    """Pairwise mask IoU of RLE lists ``a`` (N) and ``b`` (M) of one image. Shape ``NxM``."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), dtype=np.float32)
    ra = [to_coco_rle(c, height, width) for c in a]
    rb = [to_coco_rle(c, height, width) for c in b]
    iscrowd = [0] * len(rb)
    return np.asarray(mask_utils.iou(ra, rb, iscrowd), dtype=np.float32).reshape(len(a), len(b))
