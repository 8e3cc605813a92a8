"""Shared fixtures of the detection tests: a tiny detector config and a tiny PGT run."""

from __future__ import annotations

import os

import pytest

from weaksam.config import DataConfig, SynthConfig
from weaksam.data.ingest import ingest_splits
from weaksam.data.synth import generate_shapes_dataset
from weaksam.detection.config import DetectorModelConfig
from weaksam.io.schemas import empty_row, error_row
from weaksam.io.tables import write_table
from weaksam.runs import manifest_path

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
