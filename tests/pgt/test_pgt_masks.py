"""Box-prompted PGT masks: the Ray-facing UDF called directly; merging resumable shards."""

from __future__ import annotations

import os

import pytest

from weaksam.configlib import to_dict
from weaksam.io.rle import decode_masks
from weaksam.io.schemas import validate_table
from weaksam.io.tables import write_table
from weaksam.pgt.build import build_pgt_rows, read_detections
from weaksam.pgt.config import PGTMaskJobConfig
from weaksam.pgt.job import merge_masks, shard_dir_for
from weaksam.pgt.labels import read_labels
from weaksam.pgt.masks import PGTMaskPredictor, items_batch, pack_item
from weaksam.pgt.rules import PGTConfig
from weaksam.proposals.udf import decode_images
from weaksam.sam.build import SamConfig
from weaksam.sam.engine import EngineConfig

SAM = SamConfig(model_type="demo", checkpoint="", device="cpu")


def _rows(inputs: dict[str, str]) -> tuple[list[dict], dict[str, str]]:
    labels = read_labels(inputs["manifest"], split="train")
    rows = build_pgt_rows(read_detections(inputs["detections"], labels), labels, PGTConfig())
    return rows, {im.image_id: im.path for im in labels.images.values()}


@pytest.mark.parametrize("choice", ["best_iou", "single"])
def test_udf_direct_call(pgt_inputs: dict[str, str], tmp_path, choice: str) -> None:
    rows, paths = _rows(pgt_inputs)
    paths["i1"] = str(tmp_path / "missing.png")  # a file gone since ingest
    items = [pack_item(r, paths[r["image_id"]]) for r in rows]
    batch = decode_images(items_batch(items))
    engine = to_dict(EngineConfig(box_mask=choice, points_per_batch=2))
    out = validate_table(PGTMaskPredictor(to_dict(SAM), engine)(batch), "pgt").to_pylist()
    by_id = {r["image_id"]: r for r in out}
    i0 = by_id["i0"]
    assert i0["error"] is None and len(i0["masks"]) == len(i0["classes"]) == 3  # 2 chunks
    assert i0["boxes"] == rows[0]["boxes"] and i0["scores"] == rows[0]["scores"]
    assert decode_masks(i0["masks"], 32, 32).shape == (3, 32, 32)
    assert by_id["i1"]["error"] and by_id["i1"]["boxes"] == []
    assert by_id["i2"]["error"] == "corrupt image"
    assert by_id["i3"]["error"] is None and by_id["i3"]["masks"] == []  # no boxes, no SAM


def test_merge_masks_from_shards(pgt_inputs: dict[str, str], tmp_path) -> None:
    rows, _ = _rows(pgt_inputs)
    cfg = PGTMaskJobConfig()
    shard_dir = shard_dir_for(rows, str(tmp_path), SAM, cfg)
    done = [{**rows[0], "masks": [b"x", b"y", b"z"]}, {**rows[1], "masks": [b"w"]}]
    write_table(done[:1], os.path.join(shard_dir, "a.parquet"), "pgt")
    with pytest.raises(RuntimeError, match="no row"):
        merge_masks(rows, str(tmp_path), SAM, cfg)
    write_table(done[1:], os.path.join(shard_dir, "b.parquet"), "pgt")
    merged = {r["image_id"]: r for r in merge_masks(rows, str(tmp_path), SAM, cfg)}
    assert merged["i0"]["masks"] == [b"x", b"y", b"z"] and merged["i1"]["masks"] == [b"w"]
    assert merged["i2"]["error"] and merged["i3"]["masks"] is None
    # other PGT boxes (or another SAM) use another shard folder: nothing stale is reused
    moved = [{**r, "boxes": [v + 1 for v in r["boxes"]]} for r in rows]
    assert shard_dir_for(moved, str(tmp_path), SAM, cfg) != shard_dir
    write_table(done[:1], os.path.join(shard_dir, "c.parquet"), "pgt")
    with pytest.raises(RuntimeError, match="twice"):
        merge_masks(rows, str(tmp_path), SAM, cfg)
