"""The exported checkpoint and the Ray Data UDF, called directly on a batch of the proposals
table, and on an actor pool that reads its inputs from storage."""

from __future__ import annotations

import os

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from weaksam.configlib import to_dict
from weaksam.io.schemas import validate_table
from weaksam.io.tables import read_table
from weaksam.runs import manifest_path
from weaksam.wsod.config import WSODConfig
from weaksam.wsod.data import PROPOSAL_COLUMNS, image_tensor, join_proposals, read_weak_manifest
from weaksam.wsod.inference import (
    WSODBatchPredictor,
    detect,
    export_checkpoint,
    load_checkpoint,
)
from weaksam.wsod.model import build_wsod_model
from weaksam.wsod.stage import proposals_path


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


def test_udf_reads_its_split_from_the_manifest(
    wsod_run: str, tiny_cfg: WSODConfig, checkpoint: str
) -> None:
    """The actor filters each image's proposals as training does; other splits are dropped,
    an unusable image or one that vanished becomes an error row with the reason."""
    manifest = manifest_path(wsod_run)
    props = proposals_path(wsod_run, tiny_cfg)
    batch = read_table(props, columns=list(PROPOSAL_COLUMNS))
    udf = WSODBatchPredictor(
        checkpoint,
        to_dict(tiny_cfg.test),
        to_dict(tiny_cfg.data),
        manifest,
        ["test"],
        device="cpu",
    )
    test_rows = read_weak_manifest(manifest, "test")
    ref = join_proposals(test_rows, props, tiny_cfg.data, require_labels=False)
    vanished = ref.images[1].image_id
    udf.rows[vanished] = {**udf.rows[vanished], "path": "/no/such/image.png"}
    out = {r["image_id"]: r for r in validate_table(udf(batch), "detections").to_pylist()}
    assert sorted(out) == sorted(r["image_id"] for r in test_rows)  # the test split only
    assert out[vanished]["error"] == "file not found" and out[vanished]["boxes"] == []
    assert (
        {i: out[i]["error"] for i in ref.skipped}
        == ref.skipped
        == {test_rows[-1]["image_id"]: "proposals error row"}
    )
    good = out[ref.images[0].image_id]
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
    # the same image through detect() with the reference join's proposals: the same output
    model, _ = load_checkpoint(checkpoint)
    im = ref.images[0]
    b, sc, c = detect(
        model, image_tensor(im.path), torch.from_numpy(im.proposals), udf.test, udf.data.max_side
    )
    assert np.allclose(good["boxes"], b.reshape(-1)) and good["classes"] == c.tolist()
    assert np.allclose(good["scores"], sc)


@pytest.mark.ray
def test_actors_read_storage_and_write_the_detections(
    wsod_run: str,
    tiny_cfg: WSODConfig,
    checkpoint: str,
    tmp_path,
    ray_local: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The pool reads the proposals table from storage and its detections reach the driver
    from the parts the actors wrote (files of ``rows_per_file`` rows with the class map),
    never through the object store: no dataset made from driver rows, none gathered."""
    import ray

    from weaksam.io import parts
    from weaksam.io.classes import ClassMap
    from weaksam.io.tables import read_classes
    from weaksam.wsod.stage import missing_reasons, predict_with_ray_data

    for name in ("to_arrow_refs", "take_all", "take", "iter_batches", "to_pandas"):
        monkeypatch.setattr(ray.data.Dataset, name, _forbidden(name))
    for name in ("from_arrow", "from_items", "from_pandas", "from_numpy"):
        monkeypatch.setattr(ray.data, name, _forbidden(name))
    monkeypatch.setattr(parts, "ROWS_PER_FILE", 2)
    manifest = manifest_path(wsod_run)
    props = proposals_path(wsod_run, tiny_cfg)
    rows = read_weak_manifest(manifest)
    data = join_proposals(rows, props, tiny_cfg.data, require_labels=False)
    folder = str(tmp_path / "detections_parts")
    classes = read_classes(manifest)
    got = predict_with_ray_data(
        props, manifest, ["train", "test"], len(rows), checkpoint, tiny_cfg, False, folder, classes
    )
    assert missing_reasons(rows, props, tiny_cfg) == {}  # every image has a proposals row
    ids = got.column("image_id").to_pylist()
    assert sorted(ids) == sorted(r["image_id"] for r in rows)
    errors = {i: e for i, e in zip(ids, got.column("error").to_pylist(), strict=True) if e}
    assert errors == data.skipped and len(ids) - len(errors) == len(data.images)
    files = [f for f in os.listdir(folder) if f.endswith(".parquet")]
    sizes = sorted(pq.read_metadata(os.path.join(folder, f)).num_rows for f in files)
    assert sum(sizes) == len(rows) and all(n == 2 for n in sizes[1:]), sizes
    meta = pq.read_schema(os.path.join(folder, files[0])).metadata
    assert ClassMap.from_metadata(meta) == classes


def _forbidden(name: str):
    def call(*args, **kwargs):
        raise AssertionError(f"{name} would pass rows through the driver")

    return call
