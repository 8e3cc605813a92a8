"""Shared fixtures of the detection tests: a tiny detector config and a tiny PGT run."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

from weaksam.config import Config, DataConfig, SynthConfig
from weaksam.configlib import dump_yaml, to_dict
from weaksam.data.ingest import ingest_splits
from weaksam.data.synth import generate_shapes_dataset
from weaksam.detection.config import DetectorModelConfig
from weaksam.detection.model import build_detector
from weaksam.io.schemas import empty_row, error_row
from weaksam.io.tables import write_table
from weaksam.runs import manifest_path, pgt_path, resolved_config_path, write_metrics

TINY = DetectorModelConfig(
    backbone="small_fpn",
    width=8,
    fpn_channels=16,
    min_size=(64,),
    max_size=64,
    test_size=64,
    box_batch_size=16,
    box_head_dim=32,
    mask_head_channels=8,
    mask_head_layers=1,
)


@pytest.fixture
def tiny_model() -> DetectorModelConfig:
    return TINY


@pytest.fixture(scope="session")
def det_run(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A run folder with 6 train + 3 test 96-px ``shapes`` images, their manifest and a
    ``<run>/pgt/pgt.parquet`` made from the ground truth (boxes and masks; plumbing only),
    in which the last training image is an error row."""
    run = tmp_path_factory.mktemp("det_run")
    data = run / "data"
    generate_shapes_dataset(
        SynthConfig(image_size=96, num_train=6, num_test=3, seed=7), str(data), progress=False
    )
    rows, classes = ingest_splits(DataConfig(format="synthetic"), str(data))
    write_table(rows, manifest_path(str(run)), "manifest", classes)
    train = [r for r in rows if r["split"] == "train"]
    pgt = [
        empty_row(
            "pgt",
            r["image_id"],
            r["image_index"],
            height=r["height"],
            width=r["width"],
            boxes=r["gt_boxes"],
            scores=[1.0] * len(r["gt_classes"]),
            classes=r["gt_classes"],
            masks=r["gt_masks"],
        )
        for r in train[:-1]
    ]
    pgt.append(error_row("pgt", train[-1]["image_id"], train[-1]["image_index"], "no detections"))
    write_table(pgt, os.path.join(run, "pgt", "pgt.parquet"), "pgt", classes)
    return str(run)


def _state(cfg: DetectorModelConfig, seed: int, step: int) -> dict:
    torch.manual_seed(seed)
    model = build_detector(cfg, 6, masks=False)
    return {
        "model": model.state_dict(),
        "optimizer": {},
        "model_config": {**to_dict(cfg), "score_thresh": 0.0},  # random weights: keep all
        "roi_drop": {},
        "masks": False,
        "num_classes": 6,
        "class_names": list("abcdef"),
        "variant": "x",
        "step": step,
        "history": [],
    }


@pytest.fixture
def curve_run(tmp_path: Path, det_run: str, tiny_model: DetectorModelConfig) -> str:
    """``det_run``'s manifest and PGT in a run whose retrain stage kept two checkpoints of
    each of two variants (tiny Faster R-CNNs); the checkpoint folders' names sort against
    their steps (the step must come from the state)."""
    run = tmp_path / "run"
    for path in (manifest_path, pgt_path):
        os.makedirs(os.path.dirname(path(str(run))))
        shutil.copy(path(det_run), path(str(run)))
    Path(resolved_config_path(str(run))).write_text(dump_yaml(Config(name="run")))
    stage = run / "retrain"
    variants = {}
    for v, (name, seed) in enumerate((("drop", 1), ("upper_bound", 2))):
        folder = stage / "ray_train" / f"{name}-abc"
        for step, label in ((4, "a"), (2, "b")):
            ckpt = folder / f"checkpoint_{label}"
            ckpt.mkdir(parents=True)
            torch.save(_state(tiny_model, seed * 10 + step, step), ckpt / "state.pt")
        variants[name] = {"ray_train_run": f"{name}-abc", "ap50_voc07": 0.0 + v}
    write_metrics(str(stage), {"variants": variants})
    return str(run)
