"""The exported checkpoint and the Ray Data UDF, called directly on a dict batch."""

from __future__ import annotations

import os

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from weaksam.configlib import to_dict
from weaksam.io.schemas import validate_table
from weaksam.runs import manifest_path
from weaksam.wsod.config import WSODConfig
from weaksam.wsod.data import join_proposals, read_weak_manifest
from weaksam.wsod.inference import (
    INPUT_COLUMNS,
    WSODBatchPredictor,
    export_checkpoint,
    load_checkpoint,
)
from weaksam.wsod.model import build_wsod_model
from weaksam.wsod.stage import inference_inputs, proposals_path


@pytest.fixture
def checkpoint(tmp_path, tiny_cfg: WSODConfig) -> str:
    torch.manual_seed(0)
    model = build_wsod_model(tiny_cfg.model, 6, "mist")
    state = {
        "model": model.state_dict(),
        "model_config": to_dict(tiny_cfg.model),
        "method": "mist",
        "num_classes": 6,
        "class_names": list("abcdef"),
        "step": 0,
        "history": [],
        "optimizer": {},
    }
    return export_checkpoint(state, str(tmp_path / "model.pt"))


def test_checkpoint_round_trip_is_strict(checkpoint: str, tmp_path) -> None:
    model, meta = load_checkpoint(checkpoint)
    assert meta["method"] == "mist" and meta["num_classes"] == 6 and not model.training
    blob = torch.load(checkpoint, weights_only=True)
    blob["model"].pop(next(iter(blob["model"])))
    bad = str(tmp_path / "bad.pt")
    torch.save(blob, bad)
    with pytest.raises(RuntimeError, match="Missing key"):
        load_checkpoint(bad)


def test_udf_on_a_dict_batch(wsod_run: str, tiny_cfg: WSODConfig, checkpoint: str) -> None:
    manifest = manifest_path(wsod_run)
    rows = read_weak_manifest(manifest, "test")
    data = join_proposals(
        rows, proposals_path(wsod_run, tiny_cfg), tiny_cfg.data, require_labels=False
    )
    tbl = inference_inputs(data)
    assert tbl.column_names == list(INPUT_COLUMNS)
    batch = {c: tbl.column(c).to_numpy(zero_copy_only=False) for c in INPUT_COLUMNS}
    batch["path"][1] = "/no/such/image.png"  # a file that vanished after ingest
    udf = WSODBatchPredictor(checkpoint, to_dict(tiny_cfg.test), tiny_cfg.data.max_side, "cpu")
    out = validate_table(udf(batch), "detections").to_pylist()
    assert [r["image_id"] for r in out] == list(batch["image_id"])
    good, bad = out[0], out[1]
    assert bad["error"] == "file not found" and bad["boxes"] == []
    assert good["error"] is None
    n = len(good["scores"])
    assert 0 < n <= tiny_cfg.test.max_detections
    assert len(good["boxes"]) == 4 * n and len(good["classes"]) == n
    boxes = np.asarray(good["boxes"]).reshape(-1, 4)
    assert (
        boxes.min() >= 0
        and boxes[:, 2].max() <= good["width"]
        and boxes[:, 3].max() <= good["height"]
    )
    assert list(good["scores"]) == sorted(good["scores"], reverse=True)
    assert set(good["classes"]) <= set(range(6))


@pytest.mark.ray
def test_actors_write_the_detections_nothing_gathered(
    wsod_run: str,
    tiny_cfg: WSODConfig,
    checkpoint: str,
    tmp_path,
    ray_local: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The pool's detections reach the driver from the parts the actors wrote (files of
    ``rows_per_file`` rows with the class map), never through the object store."""
    import ray

    from weaksam.io import parts
    from weaksam.io.classes import ClassMap
    from weaksam.io.tables import read_classes
    from weaksam.wsod.stage import predict_with_ray_data

    for name in ("to_arrow_refs", "take_all", "take", "iter_batches", "to_pandas"):
        monkeypatch.setattr(ray.data.Dataset, name, _forbidden(name))
    monkeypatch.setattr(parts, "ROWS_PER_FILE", 2)
    manifest = manifest_path(wsod_run)
    rows = read_weak_manifest(manifest)
    data = join_proposals(rows, None, tiny_cfg.data, require_labels=False)
    folder = str(tmp_path / "detections_parts")
    classes = read_classes(manifest)
    got = predict_with_ray_data(
        inference_inputs(data), checkpoint, tiny_cfg, False, folder, classes
    )
    assert sorted(got.column("image_id").to_pylist()) == sorted(i.image_id for i in data.images)
    files = [f for f in os.listdir(folder) if f.endswith(".parquet")]
    sizes = sorted(pq.read_metadata(os.path.join(folder, f)).num_rows for f in files)
    assert sum(sizes) == len(data.images) and all(n == 2 for n in sizes[1:]), sizes
    meta = pq.read_schema(os.path.join(folder, files[0])).metadata
    assert ClassMap.from_metadata(meta) == classes


def _forbidden(name: str):
    def call(*args, **kwargs):
        raise AssertionError(f"Dataset.{name} would gather rows to the driver")

    return call
