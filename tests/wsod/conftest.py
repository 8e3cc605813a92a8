"""A tiny synthetic run for the WSOD tests: the ``manifest`` table and proposals."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from weaksam.config import DataConfig, SynthConfig
from weaksam.configlib import load_into
from weaksam.data.ingest import ingest_splits
from weaksam.data.synth import generate_shapes_dataset
from weaksam.io.schemas import empty_row, error_row, rows_to_table
from weaksam.io.tables import write_table
from weaksam.runs import manifest_path
from weaksam.wsod.config import WSODConfig
from weaksam.wsod.data import grid_proposals


@pytest.fixture(scope="session")
def wsod_run(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A run folder with 6 train + 3 test 96-px ``shapes`` images, their manifest and a
    ``proposals`` table (a window grid, shuffled; the last test image is an error row)."""
    run = tmp_path_factory.mktemp("wsod_run")
    data = run / "data"
    generate_shapes_dataset(
        SynthConfig(image_size=96, num_train=6, num_test=3, seed=5), str(data), progress=False
    )
    rows, classes = ingest_splits(DataConfig(format="synthetic"), str(data))
    write_table(rows, manifest_path(str(run)), "manifest", classes)
    rng = np.random.default_rng(0)
    props = []
    for i, r in enumerate(rows):
        if i == len(rows) - 1:
            props.append(error_row("proposals", r["image_id"], r["image_index"], "sam failed"))
            continue
        boxes = grid_proposals(r["height"], r["width"], stride=0.5)
        boxes = boxes[rng.permutation(len(boxes))[:40]]
        props.append(
            empty_row(
                "proposals",
                r["image_id"],
                r["image_index"],
                height=r["height"],
                width=r["width"],
                boxes=boxes.reshape(-1).tolist(),
                scores=rng.random(len(boxes)).astype(np.float32).tolist(),
                sources=["grid"] * len(boxes),
                class_hints=[-1] * len(boxes),
            )
        )
    os.makedirs(run / "proposals" / "shards")
    write_table(props, str(run / "proposals" / "shards" / "part-0.parquet"), "proposals", classes)
    return str(run)


TINY_OVERRIDES = [
    "model.backbone=small",
    "model.width=8",
    "model.hidden=32",
    "data.train_scales=[64,96]",
    "data.max_side=128",
    "data.min_size=4",
    "train.steps=4",
    "train.images_per_step=2",
    "train.lr=0.001",
    "train.warmup_steps=2",
    "train.lr_steps=[3]",
    "train.log_every=1",
    "train.checkpoint_every=2",
    "train.num_workers=1",
    "test.scales=[64,96]",
    "test.batch_size=2",
]


@pytest.fixture
def tiny_cfg() -> WSODConfig:
    """A WSOD config that trains in a fraction of a second per step on 96-px images."""
    return load_into(WSODConfig, None, TINY_OVERRIDES)


def one_detection(row: dict[str, Any]) -> pa.Table:
    """A ``detections`` table with one box (``[0, 0, 10, 10]``, score 0.5, class 1) for the
    manifest ``row``."""
    keys = ("image_id", "image_index", "height", "width")
    det = {**{k: row[k] for k in keys}, "boxes": [0.0, 0.0, 10.0, 10.0], "scores": [0.5]}
    return rows_to_table([{**det, "classes": [1]}], "detections")
