"""Inference: the exported checkpoint, one image's detections, and the Ray Data batch class.

The exported checkpoint (``model.pt``) is ``{"model": state_dict, "model_config": dict,
"method": str, "num_classes": int, "class_names": list, "step": int, "history": list}``,
loaded with ``torch.load(weights_only=True)`` and a strict key check.

:class:`WSODBatchPredictor` is what Ray Data's ``map_batches`` runs on an actor pool, over
the ``proposals`` table as Ray Data reads it from storage: its ``__init__`` loads the model
and the manifest rows of the predicted splits once per actor, its ``__call__`` takes a
``pa.Table`` batch of ``proposals`` rows and returns a ``detections`` table, one row per
input row of those splits — an unusable image or one that cannot be decoded becomes an error
row. It runs without Ray too (tests call it directly).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from weaksam.configlib import from_dict, to_dict
from weaksam.data.imageio import ImageDecodeError
from weaksam.io.schemas import empty_row, error_row, rows_to_table
from weaksam.train.export import export_checkpoint as export_state
from weaksam.train.export import read_checkpoint
from weaksam.wsod.config import WSODDataConfig, WSODModelConfig, WSODTestConfig
from weaksam.wsod.data import (
    ProposalRow,
    image_tensor,
    proposal_rows,
    read_weak_manifest,
    usable_proposals,
)
from weaksam.wsod.model import WSODModel, build_wsod_model
from weaksam.wsod.postprocess import select_detections

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
    """Ray Data UDF: ``proposals`` rows → ``detections`` rows (see the module docstring).

    Each actor reads the manifest rows of ``splits`` itself (:data:`WEAK_COLUMNS`: no ground
    truth) and filters each image's proposals as training does
    (:func:`weaksam.wsod.data.usable_proposals`), so nothing but the table's own rows travels
    through Ray. Rows of other splits are dropped; an unusable image (error rows, no proposal
    left) or one that cannot be decoded becomes an error row with the reason.

    Args:
        checkpoint: path of the exported ``model.pt``.
        test: a :class:`WSODTestConfig` as a dict.
        data: a :class:`WSODDataConfig` as a dict (the filter and ``max_side``).
        manifest: the manifest location; ``splits``: the splits to predict.
        grid: input rows are manifest ``image_id`` rows and every image gets the plumbing
            window grid (:func:`weaksam.wsod.data.grid_proposals`).
        device: ``auto`` (CUDA when present), ``cpu`` or ``cuda``.
        threads: torch threads (CPU).
    """

    def __init__(
        self,
        checkpoint: str,
        test: Mapping[str, Any],
        data: Mapping[str, Any],
        manifest: str,
        splits: Sequence[str],
        *,
        grid: bool = False,
        device: str = "auto",
        threads: int = 1,
    ) -> None:
        torch.set_num_threads(threads)
        self.model, self.meta = load_checkpoint(checkpoint, _device(device))
        self.test = from_dict(dict(test), WSODTestConfig)
        self.data = from_dict(dict(data), WSODDataConfig)
        self.grid = grid
        wanted = set(splits)
        self.rows = {
            str(r["image_id"]): r for r in read_weak_manifest(manifest) if r["split"] in wanted
        }

    def __call__(self, batch: pa.Table) -> pa.Table:
        """``batch``: :data:`weaksam.wsod.data.PROPOSAL_COLUMNS` rows (``image_id`` rows with
        ``grid``), as a ``pa.Table`` (numpy batches would turn null errors into NaN)."""
        items: Iterable[tuple[str, ProposalRow | None]] = (
            ((str(i), None) for i in batch.column("image_id").to_pylist())
            if self.grid
            else proposal_rows(batch)
        )
        rows = []
        for image_id, prow in items:
            r = self.rows.get(image_id)
            if r is None:
                continue  # another split's image
            index = int(r["image_index"])
            boxes, reason = usable_proposals(r, prow, self.data, grid=self.grid)
            if boxes is None:  # as the manifest has it (an error row's size may be null)
                size = {"height": r["height"], "width": r["width"]}
                rows.append(error_row("detections", image_id, index, str(reason), **size))
                continue
            h, w = int(r["height"]), int(r["width"])
            try:
                image = image_tensor(str(r["path"]))
            except ImageDecodeError as exc:
                rows.append(error_row("detections", image_id, index, str(exc), height=h, width=w))
                continue
            props = torch.from_numpy(boxes)
            det_boxes, scores, classes = detect(
                self.model, image, props, self.test, self.data.max_side
            )
            rows.append(
                empty_row(
                    "detections",
                    image_id,
                    index,
                    height=h,
                    width=w,
                    boxes=det_boxes.reshape(-1).tolist(),
                    scores=scores.tolist(),
                    classes=classes.tolist(),
                )
            )
        return rows_to_table(rows, "detections")


__all__ = [
    "WSODBatchPredictor",
    "detect",
    "export_checkpoint",
    "load_checkpoint",
    "to_dict",
]
