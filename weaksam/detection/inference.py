"""Inference: the exported checkpoint and the Ray Data batch class.

The exported checkpoint (``model.pt``) is ``{"model": state_dict, "model_config": dict,
"roi_drop": dict, "masks": bool, "num_classes": int, "class_names": list, "variant": str,
"step": int, "history": list}``, loaded with ``torch.load(weights_only=True)`` and a strict
key check. The ``retrain`` and ``wsis`` stages write it from their training state
(:func:`export_checkpoint`); :func:`export_detector` writes it for a model in hand (tests, the
service's fixtures).

:class:`DetectorBatchPredictor` is what Ray Data's ``map_batches`` runs on an actor pool: its
``__init__`` loads the model once per actor (and, given the manifest, the rows of one split),
its ``__call__`` takes a dict batch of :data:`INPUT_COLUMNS` (numpy arrays), or of
``image_id`` alone as :func:`predict_with_ray_data` reads them from the manifest, and returns a
``detections`` table, one row per input row of the split: boxes (XYXY, original pixels),
scores, 0-based classes and, for Mask R-CNN, RLE masks (mask probability
``>= mask_threshold``). An image that cannot be decoded becomes an error row. It runs without
Ray too (tests call it directly).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa
import torch
from torchvision.models.detection import FasterRCNN

from weaksam import storage
from weaksam.configlib import from_dict, to_dict
from weaksam.data.imageio import ImageDecodeError, load_image
from weaksam.detection.config import DetectorModelConfig, RoIDropConfig
from weaksam.detection.data import image_tensor
from weaksam.detection.model import build_detector, set_inference_size
from weaksam.io.classes import ClassMap
from weaksam.io.parts import read_pool_inputs, write_and_read_parts
from weaksam.io.rle import encode_masks
from weaksam.io.schemas import empty_row, error_row, rows_to_table
from weaksam.io.tables import read_table
from weaksam.train.export import export_checkpoint as export_state
from weaksam.train.export import read_checkpoint
from weaksam.train.placement import actor_pool, pool_cpus

INPUT_COLUMNS = ("image_id", "image_index", "height", "width", "path", "error")
EXPORT_KEYS = (
    "model",
    "model_config",
    "roi_drop",
    "masks",
    "num_classes",
    "class_names",
    "variant",
    "step",
    "history",
)


def export_checkpoint(state: Mapping[str, Any], path: str) -> str:
    """Write the inference checkpoint from a training state (drops the optimiser)."""
    return export_state(state, path, EXPORT_KEYS)


def export_detector(
    model: FasterRCNN,
    path: str,
    *,
    model_config: DetectorModelConfig,
    class_names: Sequence[str],
    variant: str = "",
    roi_drop: RoIDropConfig | None = None,
    step: int = 0,
) -> str:
    """Write ``model`` (built by :func:`~weaksam.detection.model.build_detector` from
    ``model_config`` for ``len(class_names)`` classes) as the stages' ``model.pt``; return the
    path. :func:`load_detector` rebuilds it; ``masks`` is read from the model."""
    heads: Any = getattr(model, "roi_heads", model)  # Mask2Former: has_mask() itself
    state = {
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "model_config": to_dict(model_config),
        "roi_drop": to_dict(roi_drop if roi_drop is not None else RoIDropConfig(enabled=False)),
        "masks": bool(heads.has_mask()),
        "num_classes": len(class_names),
        "class_names": [str(c) for c in class_names],
        "variant": str(variant),
        "step": int(step),
        "history": [],
    }
    return export_checkpoint(state, path)


def load_detector(
    path: str, device: str | torch.device = "cpu"
) -> tuple[FasterRCNN, dict[str, Any]]:
    """The model (eval mode, test size set, on ``device``) and the checkpoint's metadata."""
    ckpt = read_checkpoint(path, EXPORT_KEYS, "a detector checkpoint")
    if len(ckpt["class_names"]) != int(ckpt["num_classes"]):
        raise ValueError(
            f"{path}: {len(ckpt['class_names'])} class names for {ckpt['num_classes']} classes"
        )
    # No ImageNet file is needed: every weight comes from the checkpoint.
    # Nor a detector weights file (Mask2Former's).
    mc = ckpt["model_config"]
    if "mask2former" in mc:
        mc = {**mc, "mask2former": {**mc["mask2former"], "detector_weights": ""}}
    cfg = from_dict({**mc, "weights": ""}, DetectorModelConfig)
    model = build_detector(cfg, int(ckpt["num_classes"]), masks=bool(ckpt["masks"]))
    model.load_state_dict(ckpt["model"], strict=True)
    set_inference_size(model, cfg.test_size)
    return model.to(device), {k: ckpt[k] for k in EXPORT_KEYS if k != "model"}


class DetectorBatchPredictor:
    """Loads a detector checkpoint once per actor and detects objects in a batch of images.

    Args:
        checkpoint: path of the exported ``model.pt``.
        device: ``auto`` (CUDA when visible), ``cpu`` or ``cuda``. threads: torch threads on
            CPU.
        mask_threshold: probability threshold of the RLE masks (Mask R-CNN).
    """

    def __init__(
        self,
        checkpoint: str,
        device: str = "cpu",
        threads: int = 1,
        mask_threshold: float = 0.5,
        manifest: str = "",
        split: str = "",
    ) -> None:
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cpu":
            torch.set_num_threads(threads)
        self.device = torch.device(device)
        self.model, self.meta = load_detector(checkpoint, self.device)
        self.mask_threshold = mask_threshold
        self.rows: dict[str, dict[str, Any]] | None = None
        if manifest:
            tbl = read_table(manifest, columns=[*INPUT_COLUMNS, "split"])
            self.rows = {str(r["image_id"]): r for r in tbl.to_pylist() if r["split"] == split}

    @torch.inference_mode()
    def __call__(self, batch: Mapping[str, Any]) -> pa.Table:
        """``batch``: :data:`INPUT_COLUMNS` (numpy arrays or lists), or, for an actor given
        the ``manifest``, ``image_id`` alone (ids of other splits are dropped)."""
        if self.rows is not None:
            mine = [self.rows[i] for i in map(str, batch["image_id"]) if i in self.rows]
            batch = {c: [r[c] for r in mine] for c in INPUT_COLUMNS}
        n = len(batch["image_id"])
        rows: list[dict[str, Any] | None] = [None] * n
        images, where = [], []
        for i in range(n):
            image_id, index = str(batch["image_id"][i]), int(batch["image_index"][i])
            err = batch["error"][i] if "error" in batch else None
            if err:
                rows[i] = error_row("detections", image_id, index, str(err))
                continue
            try:
                img = load_image(str(batch["path"][i]))
            except ImageDecodeError as exc:
                rows[i] = error_row("detections", image_id, index, str(exc))
                continue
            images.append(image_tensor(img).to(self.device))
            where.append(i)
        outputs = self.model(images) if images else []
        for i, tensor, out in zip(where, images, outputs, strict=True):
            rows[i] = self._row(batch, i, int(tensor.shape[1]), int(tensor.shape[2]), out)
        return rows_to_table([r for r in rows if r is not None], "detections")

    def _row(
        self, batch: Mapping[str, Any], i: int, h: int, w: int, out: Mapping[str, torch.Tensor]
    ) -> dict[str, Any]:
        boxes = out["boxes"].float().cpu().numpy()
        masks = None
        if "masks" in out:
            binary = (out["masks"][:, 0] >= self.mask_threshold).cpu().numpy()
            masks = encode_masks(binary)
        return empty_row(
            "detections",
            str(batch["image_id"][i]),
            int(batch["image_index"][i]),
            height=h,
            width=w,
            boxes=boxes.reshape(-1).tolist(),
            scores=out["scores"].float().cpu().numpy().tolist(),
            classes=(out["labels"].cpu().numpy() - 1).tolist(),
            masks=masks,
        )


def inference_inputs(rows: list[Mapping[str, Any]]) -> pa.Table:
    """The Ray Data input table (:data:`INPUT_COLUMNS`) of manifest rows."""
    return pa.table(
        {
            "image_id": [str(r["image_id"]) for r in rows],
            "image_index": pa.array([int(r["image_index"]) for r in rows], pa.int64()),
            "height": pa.array([int(r["height"] or 0) for r in rows], pa.int32()),
            "width": pa.array([int(r["width"] or 0) for r in rows], pa.int32()),
            "path": [str(r["path"] or "") for r in rows],
            "error": [str(r["error"] or "") for r in rows],
        }
    )


def predict_with_ray_data(
    manifest: str,
    split: str,
    num_images: int,
    checkpoint: str,
    *,
    num_actors: int,
    cpus_per_actor: float,
    max_actors: int = 0,
    batch_size: int,
    mask_threshold: float,
    use_gpu: bool,
    parts_dir: str,
    classes: ClassMap | None = None,
) -> pa.Table:
    """Run :class:`DetectorBatchPredictor` over the ``split`` images of the manifest on an
    actor pool: Ray Data reads the manifest's ids from storage, each actor reads the rows of
    the split itself and writes the detections into ``parts_dir`` (emptied first:
    :func:`weaksam.io.parts.write_parts`), read back from there as one table (row order not
    guaranteed). ``num_images`` (the split's) sizes the blocks
    (:func:`weaksam.io.parts.read_pool_inputs`)."""
    ds = read_pool_inputs(manifest, ("image_id",), num_images, batch_size, num_actors)
    ds = ds.map_batches(
        DetectorBatchPredictor,
        fn_constructor_kwargs={
            "checkpoint": storage.absolute(checkpoint),
            "device": "auto" if use_gpu else "cpu",  # GPU slots without CUDA: CPU
            "threads": max(1, int(cpus_per_actor)),
            "mask_threshold": mask_threshold,
            "manifest": storage.absolute(manifest),
            "split": split,
        },
        compute=actor_pool(num_actors, max_actors, use_gpu),
        batch_size=batch_size,
        batch_format="numpy",
        num_cpus=pool_cpus(cpus_per_actor, num_actors, use_gpu),
        num_gpus=1 if use_gpu else 0,
    )
    return write_and_read_parts(ds, parts_dir, "detections", classes)
