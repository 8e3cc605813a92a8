"""Inference: the exported checkpoint, one image's detections, and the Ray Data batch class.

The exported checkpoint (``model.pt``) is ``{"model": state_dict, "model_config": dict,
"method": str, "num_classes": int, "class_names": list, "step": int, "history": list}``,
loaded with ``torch.load(weights_only=True)`` and a strict key check.

:class:`WSODBatchPredictor` is what Ray Data's ``map_batches`` runs on an actor pool: its
``__init__`` loads the model once per actor, its ``__call__`` takes a dict batch of input
rows (:data:`INPUT_COLUMNS`, numpy arrays; ``proposals`` a flat ``4R`` float list per row)
and returns a ``detections`` table (``pa.Table``), one row per input row — an image that
cannot be decoded becomes an error row. It runs without Ray too (tests call it directly).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from weaksam.configlib import from_dict, to_dict
from weaksam.data.imageio import ImageDecodeError
from weaksam.geometry.boxes import as_boxes
from weaksam.io.schemas import empty_row, error_row, rows_to_table
from weaksam.train.export import export_checkpoint as export_state
from weaksam.train.export import read_checkpoint
from weaksam.wsod.config import WSODModelConfig, WSODTestConfig
from weaksam.wsod.data import image_tensor
from weaksam.wsod.model import WSODModel, build_wsod_model
from weaksam.wsod.postprocess import select_detections

INPUT_COLUMNS = ("image_id", "image_index", "height", "width", "path", "proposals")
EXPORT_KEYS = ("model", "model_config", "method", "num_classes", "class_names", "step", "history")


def export_checkpoint(state: Mapping[str, Any], path: str) -> str:
    """Write the inference checkpoint from a training state (drops the optimiser)."""
    return export_state(state, path, EXPORT_KEYS)


def load_checkpoint(
    path: str, device: str | torch.device = "cpu"
) -> tuple[WSODModel, dict[str, Any]]:
    """The model (eval mode, on ``device``) and the checkpoint's metadata."""
    ckpt = read_checkpoint(path, EXPORT_KEYS, "a WSOD checkpoint")
    # No ImageNet file is needed: every weight comes from the checkpoint.
    model_cfg = from_dict({**ckpt["model_config"], "weights": ""}, WSODModelConfig)
    model = build_wsod_model(model_cfg, int(ckpt["num_classes"]), str(ckpt["method"]))
    model.load_state_dict(ckpt["model"], strict=True)
    meta = {k: ckpt[k] for k in EXPORT_KEYS if k != "model"}
    return model.to(device).eval(), meta


@torch.inference_mode()
def detect(
    model: WSODModel,
    image: torch.Tensor,
    proposals: torch.Tensor,
    test: WSODTestConfig,
    max_side: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Detections of one image: TTA-averaged per-RoI scores and boxes, then per-class NMS.

    Args:
        image: ``3xHxW`` uint8 or float RGB. proposals: ``Rx4`` original coordinates.

    Returns ``(boxes Nx4 float32 XYXY original pixels, scores N float32, classes N int64)``.
    """
    dev = next(model.parameters()).device
    h, w = int(image.shape[-2]), int(image.shape[-1])
    scores, boxes = model.predict(
        image.to(dev).float(), proposals.to(dev).float(), test.scales, max_side, test.flip
    )
    b, s, c = select_detections(
        scores,
        boxes,
        nms_iou=test.nms_iou,
        score_thresh=test.score_thresh,
        max_detections=test.max_detections,
        height=h,
        width=w,
    )
    return (
        b.cpu().numpy().astype(np.float32),
        s.cpu().numpy().astype(np.float32),
        c.cpu().numpy().astype(np.int64),
    )


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class WSODBatchPredictor:
    """Ray Data UDF: input rows → ``detections`` rows (see the module docstring).

    Args:
        checkpoint: path of the exported ``model.pt``.
        test: a :class:`WSODTestConfig` as a dict.
        max_side: the longer-side cap of every view.
        device: ``auto`` (CUDA when present), ``cpu`` or ``cuda``.
        threads: torch threads (CPU).
    """

    def __init__(
        self,
        checkpoint: str,
        test: Mapping[str, Any],
        max_side: int,
        device: str = "auto",
        threads: int = 1,
    ) -> None:
        torch.set_num_threads(threads)
        self.model, self.meta = load_checkpoint(checkpoint, _device(device))
        self.test = from_dict(dict(test), WSODTestConfig)
        self.max_side = max_side

    def __call__(self, batch: Mapping[str, Any]) -> pa.Table:
        rows = []
        for i in range(len(batch["image_id"])):
            image_id, index = str(batch["image_id"][i]), int(batch["image_index"][i])
            h, w = int(batch["height"][i]), int(batch["width"][i])
            try:
                image = image_tensor(str(batch["path"][i]))
            except ImageDecodeError as exc:
                rows.append(error_row("detections", image_id, index, str(exc), height=h, width=w))
                continue
            props = torch.from_numpy(as_boxes(np.array(batch["proposals"][i], np.float32)))
            boxes, scores, classes = detect(self.model, image, props, self.test, self.max_side)
            rows.append(
                empty_row(
                    "detections",
                    image_id,
                    index,
                    height=h,
                    width=w,
                    boxes=boxes.reshape(-1).tolist(),
                    scores=scores.tolist(),
                    classes=classes.tolist(),
                )
            )
        return rows_to_table(rows, "detections")


__all__ = [
    "INPUT_COLUMNS",
    "WSODBatchPredictor",
    "detect",
    "export_checkpoint",
    "load_checkpoint",
    "to_dict",
]
