"""Learning curves of the ``retrain`` and ``wsis`` stages: each kept checkpoint scored on a split.

A stage trained with ``train.keep_checkpoints: 0`` keeps every checkpoint of its Ray Train runs
(one per ``checkpoint_every`` steps, under ``<run>/<stage>/ray_train/<variant>-<hash>/``; the
run's name is in the stage's ``metrics.json``). :func:`stage_curves` exports each checkpoint,
detects on the split's images in this process (the stage's own predictor, one batch at a time)
and evaluates as the stage does (:func:`weaksam.detection.stage.evaluate_detections`): box AP50,
and mask AP25/50/70/75 for a stage with masks. The points before a schedule's last learning-rate
step are taken at the full rate, so they show the trend, not what a schedule that ends there
would reach.
"""

from __future__ import annotations

import glob
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from weaksam import storage
from weaksam.detection.inference import DetectorBatchPredictor, export_checkpoint
from weaksam.detection.stage import evaluate_detections
from weaksam.io.tables import read_classes, read_table, write_table
from weaksam.runs import detections_file, manifest_path, read_metrics
from weaksam.train.reporting import STATE_FILE

log = logging.getLogger(__name__)

#: figures kept per point: box AP50 (VOC07 11-point and all-point), mask AP at four IoUs
CURVE_KEYS = ("ap50_voc07", "ap50_voc", "mask_ap25", "mask_ap50", "mask_ap70", "mask_ap75")


@dataclass(frozen=True)
class CurvePoint:
    """One checkpoint's figures on the split: ``metrics`` holds those of :data:`CURVE_KEYS`
    that the stage produces."""

    variant: str
    step: int
    metrics: Mapping[str, float] = field(default_factory=dict)


def checkpoint_states(folder: str) -> list[tuple[int, str]]:
    """``(step, state file)`` of every checkpoint under a local Ray Train run folder, by step
    (a checkpoint is a folder holding ``state.pt``; its ``step`` is read from the state)."""
    found = []
    for root, _dirs, files in os.walk(folder):
        if STATE_FILE in files:
            path = os.path.join(root, STATE_FILE)
            state = torch.load(path, map_location="cpu", weights_only=True)
            found.append((int(state["step"]), path))
    return sorted(found)


def variant_runs(stage_dir: str) -> dict[str, str]:
    """Each variant's Ray Train run folder, from the stage's ``metrics.json``
    (``variants.<name>.ray_train_run``; without it, the one ``<name>-*`` folder), in the
    stage's order."""
    metrics = read_metrics(stage_dir)
    out = {}
    ray_train = os.path.join(stage_dir, "ray_train")
    for name, m in metrics.get("variants", {}).items():
        run = m.get("ray_train_run")
        if not run:  # a stage written before the name was recorded: its one run of that name
            found = glob.glob(os.path.join(glob.escape(ray_train), f"{glob.escape(name)}-*"))
            if len(found) != 1:
                raise ValueError(
                    f"{stage_dir}/metrics.json names no Ray Train run for {name!r} and "
                    f"{len(found)} folders match {name}-* under {ray_train}"
                )
            run = os.path.basename(found[0])
        out[name] = os.path.join(ray_train, run)
    return out


def score_checkpoint(
    state_file: str,
    manifest: str,
    split: str,
    masks: bool,
    work_dir: str,
    *,
    threads: int = 2,
    batch_size: int = 8,
    mask_threshold: float = 0.5,
) -> dict[str, float]:
    """The figures of :data:`CURVE_KEYS` of one training checkpoint on the ``split`` images of
    ``manifest``; its export and detections are written under ``work_dir`` (replaced each
    call)."""
    state = torch.load(state_file, map_location="cpu", weights_only=True)
    ckpt = export_checkpoint(state, os.path.join(work_dir, "model.pt"))
    pred = DetectorBatchPredictor(
        ckpt, threads=threads, mask_threshold=mask_threshold, manifest=manifest, split=split
    )
    ids = [
        str(r["image_id"])
        for r in read_table(manifest, "manifest", columns=["image_id", "split"]).to_pylist()
        if r["split"] == split
    ]
    rows: list[dict[str, Any]] = []
    for i in range(0, len(ids), batch_size):
        rows.extend(pred({"image_id": np.asarray(ids[i : i + batch_size])}).to_pylist())
    path = detections_file(work_dir, split)
    write_table(rows, path, "detections", read_classes(manifest))
    res = evaluate_detections(manifest, path, split, masks)
    return {k: float(res[k]) for k in CURVE_KEYS if k in res}


def stage_curves(
    run_dir: str,
    stage: str,
    split: str,
    work_dir: str,
    *,
    variants: Sequence[str] = (),
    threads: int = 2,
    mask_threshold: float = 0.5,
    progress: Callable[[CurvePoint], None] | None = None,
) -> list[CurvePoint]:
    """Every kept checkpoint of the stage's variants (all, or those named) scored on ``split``,
    by variant then step (masks binarised at ``mask_threshold``, the stage's
    ``test.mask_threshold``); ``progress`` is called with each point as it is scored."""
    stage_dir = os.path.join(run_dir, stage)
    masks = stage == "wsis"
    runs = variant_runs(stage_dir)
    unknown = sorted(set(variants) - set(runs))
    if unknown:
        raise ValueError(f"{stage}: no variant {unknown} (has {sorted(runs)})")
    manifest = manifest_path(run_dir)
    points = []
    for name, folder in runs.items():
        if variants and name not in variants:
            continue
        states = checkpoint_states(folder)
        if not states:
            raise FileNotFoundError(f"{stage}/{name}: no checkpoint under {folder}")
        for step, state_file in states:
            out = os.path.join(work_dir, stage, name)
            storage.makedirs(out)
            point = CurvePoint(
                name,
                step,
                score_checkpoint(
                    state_file,
                    manifest,
                    split,
                    masks,
                    out,
                    threads=threads,
                    mask_threshold=mask_threshold,
                ),
            )
            points.append(point)
            if progress is not None:
                progress(point)
    return points


__all__ = [
    "CURVE_KEYS",
    "CurvePoint",
    "checkpoint_states",
    "score_checkpoint",
    "stage_curves",
    "variant_runs",
]
