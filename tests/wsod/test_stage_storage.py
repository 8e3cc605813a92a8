"""WSOD stage outputs in an object store (moto S3): the exported model, the split outputs and
their evaluation, the proposals lookup and the run name, all through weaksam.storage."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from weaksam import storage
from weaksam.config import load_config
from weaksam.configlib import to_dict
from weaksam.io.tables import read_classes, read_table
from weaksam.runs import manifest_path, model_file
from weaksam.runs import proposals_path as run_proposals_path
from weaksam.wsod.config import WSODConfig
from weaksam.wsod.data import read_weak_manifest
from weaksam.wsod.inference import export_checkpoint, load_checkpoint
from weaksam.wsod.model import build_wsod_model
from weaksam.wsod.stage import evaluate_method, proposals_path, run_name, write_split_outputs
from weaksam.wsod.summary import plot_curves

from .conftest import one_detection


def _upload_run(wsod_run: str, bucket: str) -> str:
    run = storage.join(bucket, "runs", "tiny")
    for local, remote in (
        (manifest_path(wsod_run), manifest_path(run)),
        (os.path.join(run_proposals_path(wsod_run), "part-0.parquet"),
         storage.join(run_proposals_path(run), "part-0.parquet")),
    ):  # fmt: skip
        storage.upload_file(local, remote)
    return run


def test_model_export_and_load_at_s3(s3_bucket: str, tiny_cfg: WSODConfig) -> None:
    torch.manual_seed(0)
    model = build_wsod_model(tiny_cfg.model, 6, "mist")
    state: dict[str, Any] = {
        "model": model.state_dict(),
        "model_config": to_dict(tiny_cfg.model),
        "method": "mist",
        "num_classes": 6,
        "class_names": list("abcdef"),
        "step": 3,
        "history": [{"step": 3, "loss": 1.0}],
        "optimizer": {},
    }
    loc = model_file(storage.join(s3_bucket, "runs", "tiny", "wsod"))
    assert export_checkpoint(state, loc) == loc
    loaded, meta = load_checkpoint(loc)
    assert meta["step"] == 3 and meta["method"] == "mist"
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    png = storage.join(s3_bucket, "runs", "tiny", "wsod", "curves.png")
    assert plot_curves(state["history"], png, "mist")
    assert storage.read_bytes(png).startswith(b"\x89PNG")


def test_split_outputs_proposals_and_run_name_at_s3(
    wsod_run: str, s3_bucket: str, tmp_path: Path
) -> None:
    run = _upload_run(wsod_run, s3_bucket)
    cfg = load_config(None, [])
    assert proposals_path(run, cfg.wsod) == run_proposals_path(run)
    manifest = manifest_path(run)
    name = run_name(cfg, "mist", [manifest, proposals_path(run, cfg.wsod)])
    assert name.startswith("mist-")

    classes = read_classes(manifest)
    rows = read_weak_manifest(manifest)
    first = next(r for r in rows if r["split"] == "test")
    dets = one_detection(first)
    out = storage.join(run, "wsod")
    path = write_split_outputs(dets, {}, rows, "test", out, classes)
    local = str(tmp_path / "wsod")
    os.makedirs(local)
    local_path = write_split_outputs(dets, {}, rows, "test", local, classes)
    assert path == storage.join(out, "detections_test.parquet")
    assert read_table(path, "detections").to_pylist() == read_table(local_path).to_pylist()
    with open(os.path.join(local, "coco_results_test.json"), "rb") as fh:
        assert storage.read_bytes(storage.join(out, "coco_results_test.json")) == fh.read()
    res = evaluate_method(manifest, out, train_split="train", test_split="test")
    assert res == evaluate_method(manifest_path(wsod_run), local, "train", "test")
    assert "voc07" in res and "corloc" not in res
