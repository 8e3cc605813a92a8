"""Fixtures of the CAM tests: a tiny manifest of synthetic images and a tiny trained model."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from PIL import Image

from weaksam.cam.config import ClassifierConfig
from weaksam.configlib import to_dict
from weaksam.io.classes import ClassMap
from weaksam.io.tables import write_table

CLASSES = ClassMap.from_names(["square", "bar", "dot"])
TINY = ClassifierConfig(
    backbone="plainconv",
    width=4,
    input_size=32,
    epochs=1,
    batch_size=4,
    val_fraction=0.25,
    workers=1,
    checkpoint_every=1,
    lr=1e-2,
)


def _image(rng: np.random.Generator, labels: list[int], size: int = 40) -> np.ndarray:
    img = rng.integers(0, 60, (size, size, 3)).astype(np.uint8)
    for c in labels:
        y, x = rng.integers(2, size - 14, 2)
        if c == 0:
            img[y : y + 12, x : x + 12] = 230
        elif c == 1:
            img[y : y + 3, x : x + 12] = (230, 40, 40)
        else:
            img[y + 4 : y + 8, x + 4 : x + 8] = (40, 40, 230)
    return img


def make_manifest(root: str, n_train: int = 8, n_test: int = 4, out: str = "") -> str:
    """A manifest of ``n_train`` + ``n_test`` 40x40 PNGs with labels (and no GT columns),
    written to ``out`` (default ``<root>/manifest.parquet``)."""
    rng = np.random.default_rng(0)
    rows: list[dict[str, Any]] = []
    for i in range(n_train + n_test):
        split = "train" if i < n_train else "test"
        labels = sorted({int(i % 3), int((i * 7) % 3)} if i % 2 else {int(i % 3)})
        path = os.path.join(root, f"img{i:02d}.png")
        Image.fromarray(_image(rng, labels)).save(path)
        rows.append(
            {"image_id": f"img{i:02d}", "image_index": i, "height": 40, "width": 40,
             "path": path, "split": split, "labels": labels}
        )  # fmt: skip
    out = out or os.path.join(root, "manifest.parquet")
    write_table(rows, out, "manifest", CLASSES)
    return out


@pytest.fixture
def tiny_manifest(tmp_path: Any) -> str:
    return make_manifest(str(tmp_path))


@pytest.fixture
def tiny_run(tmp_path: Any) -> str:
    """A run folder with a ``manifest`` table (images under ``<run>/data``)."""
    run = tmp_path / "run"
    (run / "data").mkdir(parents=True)
    make_manifest(str(run / "data"), out=str(run / "ingest" / "manifest.parquet"))
    return str(run)


@pytest.fixture
def cam_classes() -> ClassMap:
    return CLASSES


@pytest.fixture
def tiny_cls_cfg() -> ClassifierConfig:
    return TINY


@pytest.fixture
def loop_config() -> Callable[..., dict[str, Any]]:
    """``loop_config(manifest, **classifier_overrides)``: a training-loop config dict."""

    def make(manifest: str, **overrides: Any) -> dict[str, Any]:
        return {
            "classifier": {**to_dict(TINY), **overrides},
            "manifest": manifest,
            "split": "train",
            "num_classes": CLASSES.num_classes,
        }

    return make
