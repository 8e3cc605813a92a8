"""The proposal job: direct UDF calls, a corrupt image mid-run, resume without duplicates."""

from __future__ import annotations

import os

import numpy as np
import pyarrow.parquet as pq
import pytest

from weaksam.config import DataConfig, SynthConfig, load_config
from weaksam.data.ingest import ingest_splits
from weaksam.data.synth import generate_shapes_dataset
from weaksam.io.classes import ClassMap
from weaksam.io.schemas import META_TABLE
from weaksam.io.tables import read_classes, read_table, write_table
from weaksam.proposals.job import SHARDS, completed_ids, generate_proposals, summarize_proposals
from weaksam.proposals.udf import ProposalGenerator, decode_images, pack_points
from weaksam.sam.fast import box_agreement

OVERRIDES = [
    "sam.model_type=demo",
    "sam.checkpoint=",
    "sam.device=cpu",
    "proposals.engine.points_per_side=4",
    "proposals.engine.pred_iou_thresh=0",
    "proposals.engine.stability_score_thresh=0",
    "proposals.batch_size=2",
]


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("shapes")
    generate_shapes_dataset(SynthConfig(num_train=4, num_test=2, seed=3), str(root), progress=False)
    rows, classes = ingest_splits(DataConfig(format="synthetic"), str(root))
    # corrupt the second training image after ingest, as a disk error during the job would
    bad = rows[1]["path"]
    with open(bad, "r+b") as fh:
        fh.truncate(200)
    path = str(root / "manifest.parquet")
    write_table(rows, path, "manifest", classes)
    return path


def _generator(*extra: str) -> ProposalGenerator:
    cfg = load_config(None, [*OVERRIDES, *extra])
    from weaksam.configlib import to_dict

    return ProposalGenerator(to_dict(cfg.sam), to_dict(cfg.proposals.engine))


def _items(manifest_path: str) -> dict[str, np.ndarray]:
    rows = read_table(manifest_path, "manifest").to_pylist()
    keys = ("image_id", "image_index", "path", "height", "width")
    batch: dict[str, np.ndarray] = {k: np.asarray([r[k] for r in rows], dtype=object) for k in keys}
    batch["error"] = np.asarray(["" for _ in rows], dtype=object)
    packed = [pack_points([20.0, 30.0], [1], ["fine"]) for _ in rows]
    for k in ("points", "point_classes", "point_kinds"):
        batch[k] = np.asarray([p[k] for p in packed], dtype=object)
    return batch


def test_udf_direct_call_with_corrupt_image(manifest: str) -> None:
    decoded = decode_images(_items(manifest))
    assert decoded["error"][1] and not decoded["error"][0]
    table = _generator()(decoded)
    rows = table.to_pylist()
    assert len(rows) == 6
    assert rows[1]["error"] and "truncated" in rows[1]["error"]
    ok = [r for i, r in enumerate(rows) if i != 1]
    assert all(r["error"] is None for r in ok)
    for r in ok:
        n = len(r["scores"])
        assert len(r["boxes"]) == 4 * n and len(r["sources"]) == n == len(r["class_hints"])
        assert {"point:fine", "class:fine"} & set(r["sources"])  # the peak point was used
        hints = [h for h, s in zip(r["class_hints"], r["sources"], strict=True) if s != "grid"]
        assert set(hints) == {1}


def test_udf_fast_path_batches_the_encoder_around_a_bad_image(manifest: str) -> None:
    decoded = decode_images(_items(manifest))
    exact = _generator()(decoded).to_pylist()
    gen = _generator("proposals.engine.precision=fast", "proposals.engine.encoder_batch=4")
    calls: list[int] = []
    inner = gen.engine.embed_images

    def counting(images):  # type: ignore[no-untyped-def]
        calls.append(len(images))
        return inner(images)

    gen.engine.embed_images = counting  # type: ignore[method-assign]
    fast = gen(decoded).to_pylist()
    assert calls == [5]  # the five good images in one call (two encoder passes of <= 4)
    assert fast[1]["error"] and "truncated" in fast[1]["error"]
    for i, (r, f) in enumerate(zip(exact, fast, strict=True)):
        if i == 1:
            continue
        assert f["error"] is None and f["sources"] == r["sources"]
        matched, total = box_agreement(r["boxes"], f["boxes"], r["sources"], f["sources"])
        assert matched == total  # float32 SDPA vs exact: every box within IoU 0.9


@pytest.mark.ray
def test_job_resume_no_duplicates_none_missing(manifest: str, tmp_path, ray_local: None) -> None:
    cfg = load_config(None, [*OVERRIDES, "proposals.splits=[train]", "proposals.rows_per_file=3"])
    out = str(tmp_path / "proposals")
    first = generate_proposals(manifest, out, cfg.sam, cfg.proposals, use_gpu=False)
    assert first.submitted == 4
    # 4 rows in batches of 2: files of rows_per_file rows but the last, not one per batch;
    # each carries the contract's metadata and the manifest's class map
    files = [os.path.join(out, SHARDS, f) for f in os.listdir(os.path.join(out, SHARDS))]
    assert sorted(pq.read_metadata(f).num_rows for f in files) == [1, 3]
    for f in files:
        meta = pq.read_schema(f).metadata
        assert meta[META_TABLE] == b"proposals"
        assert ClassMap.from_metadata(meta) == read_classes(manifest)
    # simulate a crash that left one shard unreadable, plus the test split still to do
    shards = sorted(os.listdir(os.path.join(out, SHARDS)))
    broken = os.path.join(out, SHARDS, "zz-broken.parquet")
    with open(broken, "wb") as fh:
        fh.write(b"PAR1 truncated")
    cfg_all = load_config(None, OVERRIDES)
    second = generate_proposals(manifest, out, cfg_all.sam, cfg_all.proposals, use_gpu=False)
    assert second.skipped_done == 4 and second.submitted == 2
    assert not os.path.exists(broken) and len(shards) >= 1
    summary = summarize_proposals(out)  # raises if an image was written twice
    assert summary["images"] == 6 and summary["error_rows"] == 1
    assert completed_ids(os.path.join(out, SHARDS)) == set(
        read_table(manifest, "manifest").column("image_id").to_pylist()
    )
    third = generate_proposals(manifest, out, cfg_all.sam, cfg_all.proposals, use_gpu=False)
    assert third.submitted == 0
