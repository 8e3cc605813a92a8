"""Proposal filtering, the manifest/proposals join, sampling, and "no GT boxes in training"."""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from weaksam.io.tables import read_table
from weaksam.runs import manifest_path
from weaksam.wsod import data as wsod_data
from weaksam.wsod.config import WSODConfig, WSODDataConfig
from weaksam.wsod.data import (
    WEAK_COLUMNS,
    TrainSampler,
    filter_proposals,
    grid_proposals,
    join_proposals,
    min_side_px,
    read_weak_manifest,
)
from weaksam.wsod.stage import proposals_path
from weaksam.wsod.training import TrainJob, build_sampler


def test_filter_clip_dedup_min_size_and_cap() -> None:
    cfg = WSODDataConfig(min_size=20, min_size_ref=500)
    assert min_side_px(250, 100, cfg) == 10.0  # 20 px at 500 -> 10 px at 250
    boxes = np.array(
        [
            [-5, 0, 50, 40],  # clipped to [0, 0, 50, 40]
            [0, 0, 50, 40],  # duplicate of the clipped first box
            [10, 10, 19, 60],  # 9 px wide: too small
            [60, 60, 90, 120],  # clipped to [60, 60, 90, 100]
            [0, 0, 30, 30],
        ],
        np.float32,
    )
    out = filter_proposals(boxes, None, height=100, width=250, cfg=cfg)
    np.testing.assert_array_equal(out, [[0, 0, 50, 40], [60, 60, 90, 100], [0, 0, 30, 30]])
    scores = np.array([0.1, 0.9, 0.5, 0.2, 0.8], np.float32)
    stored = filter_proposals(
        boxes, scores, 100, 250, WSODDataConfig(min_size=20, min_size_ref=500, max_proposals=2)
    )
    np.testing.assert_array_equal(stored, [[0, 0, 50, 40], [60, 60, 90, 100]])
    by_score = filter_proposals(
        boxes,
        scores,
        100,
        250,
        WSODDataConfig(min_size=20, min_size_ref=500, max_proposals=2, cap_order="score"),
    )
    # kept scores after dedup: 0.1 (first copy), 0.2, 0.8 -> the two best, in stored order
    np.testing.assert_array_equal(by_score, [[60, 60, 90, 100], [0, 0, 30, 30]])
    assert filter_proposals([], None, 10, 10, cfg).shape == (0, 4)


def test_dedup_grid_as_wsod2() -> None:
    """WSOD2's LoadProposals: boxes equal after round(box / 8) are one (8 px at VOC's 500 px;
    4 px on a 250-px image by the min_size_ref rule)."""
    boxes = np.array(
        [[0, 0, 40, 40], [1, 1, 41, 41], [0, 0, 42, 40], [100, 0, 140, 40]], np.float32
    )
    exact = WSODDataConfig(min_size=0)
    assert len(filter_proposals(boxes, None, 100, 500, exact)) == 4
    voc = WSODDataConfig(min_size=0, dedup_grid=8)
    # /8 at 500 px: (0,0,5,5), (0.125..5.125 -> 0,0,5,5), (0,0,5.25->5,5), (12.5->12,0,17.5->18,5)
    np.testing.assert_array_equal(
        filter_proposals(boxes, None, 100, 500, voc), [[0, 0, 40, 40], [100, 0, 140, 40]]
    )
    # a 250-px image: a 4-px grid; x2 42 / 4 = 10.5 rounds to 10 (= 40 / 4), 41 / 4 = 10.25
    np.testing.assert_array_equal(
        filter_proposals(boxes, None, 100, 250, voc), [[0, 0, 40, 40], [100, 0, 140, 40]]
    )
    shifted = np.array([[0, 0, 40, 40], [3, 0, 43, 40]], np.float32)  # 3 / 4 rounds to 1
    assert len(filter_proposals(shifted, None, 100, 250, voc)) == 2
    assert len(filter_proposals(shifted, None, 100, 500, voc)) == 1  # 3 / 8 rounds to 0


def test_grid_proposals_fit_the_image() -> None:
    g = grid_proposals(100, 200)
    assert g.shape[1] == 4 and len(g) > 50
    assert g[:, 0].min() >= 0 and g[:, 2].max() <= 200 + 1e-3 and g[:, 3].max() <= 100 + 1e-3


def test_join_skips_error_rows_with_reasons(wsod_run: str) -> None:
    manifest = manifest_path(wsod_run)
    cfg = WSODConfig()
    props = proposals_path(wsod_run, cfg)
    assert props.endswith(os.path.join("proposals", "shards"))
    rows = read_weak_manifest(manifest)
    data = join_proposals(rows, props, WSODDataConfig(min_size=4), require_labels=False)
    assert len(data.images) == len(rows) - 1
    assert data.skip_counts() == {"proposals error row": 1}
    assert all(1 <= len(im.proposals) <= 40 for im in data.images)
    missing = join_proposals(
        [*rows, {**rows[0], "image_id": "nope"}], props, WSODDataConfig(min_size=4),
        require_labels=False,
    )  # fmt: skip
    assert missing.skipped["nope"] == "no proposals row"
    unlabeled = join_proposals(
        [{**rows[0], "labels": []}], props, WSODDataConfig(), require_labels=True
    )
    assert unlabeled.skip_counts() == {"no image-level label": 1}


def test_join_streams_the_table_and_matches_a_whole_read(wsod_run: str) -> None:
    """The streamed join keeps the same boxes as filtering the whole table's rows, in
    manifest order; a worker's share holds only its images, the counts cover the split."""
    props = proposals_path(wsod_run, WSODConfig())
    rows = read_weak_manifest(manifest_path(wsod_run))
    cfg = WSODDataConfig(min_size=4, max_proposals=25)
    data = join_proposals(rows, props, cfg, require_labels=False)
    whole = {r["image_id"]: r for r in read_table(props, "proposals").to_pylist()}
    for im in data.images:
        r = whole[im.image_id]
        ref = filter_proposals(r["boxes"], r["scores"], im.height, im.width, cfg)
        np.testing.assert_array_equal(im.proposals, ref)
    assert [im.image_id for im in data.images] == [
        r["image_id"] for r in rows if r["image_id"] in data.proposal_counts
    ]
    assert data.proposal_counts == {im.image_id: len(im.proposals) for im in data.images}
    for rank in range(3):
        mine = join_proposals(rows, props, cfg, require_labels=False, shard=(rank, 3))
        assert [im.image_id for im in mine.images] == [im.image_id for im in data.images[rank::3]]
        assert all(len(im.proposals) for im in mine.images)
        assert mine.skipped == data.skipped and mine.proposal_counts == data.proposal_counts


def test_list_values_reads_rows_without_python_numbers() -> None:
    from weaksam.io.tables import list_values

    col = pa.chunked_array(
        [
            pa.array([[1.0, 2.0], None], pa.list_(pa.float32())),
            pa.array([[9.0], [3.0, 4.0, 5.0], []], pa.list_(pa.float32())).slice(1),
        ]
    )
    out = list_values(col, np.float32)
    assert out[1] is None and out[3] is not None and len(out[3]) == 0
    assert [None if v is None else v.tolist() for v in out] == [[1, 2], None, [3, 4, 5], []]
    assert out[0] is not None and out[0].dtype == np.float32


def test_iter_batches_is_bounded(tmp_path) -> None:
    from weaksam.io.tables import iter_batches

    folder = tmp_path / "t"
    folder.mkdir()
    for k in range(2):
        pq.write_table(
            pa.table({"image_id": [f"{k}-{i}" for i in range(10)]}), folder / f"{k}.parquet"
        )
    (folder / "_SUCCESS").write_text("")
    batches = list(iter_batches(str(folder), ["image_id"], batch_rows=4))
    assert [b.num_rows for b in batches] == [4, 4, 2, 4, 4, 2]
    ids = [i for b in batches for i in b.column("image_id").to_pylist()]
    assert ids == [f"{k}-{i}" for k in range(2) for i in range(10)]


def _poison_gt(manifest: str, out: str) -> None:
    """The same manifest with every gt_* column replaced by garbage."""
    tbl = pq.read_table(manifest)
    n = tbl.num_rows
    rng = np.random.default_rng(1)
    garbage = {
        "gt_boxes": pa.array(
            [rng.random(8).astype(np.float32).tolist() for _ in range(n)], pa.list_(pa.float32())
        ),
        "gt_classes": pa.array([[5, 0]] * n, pa.list_(pa.int32())),
        "gt_difficult": pa.array([[True, False]] * n, pa.list_(pa.bool_())),
        "gt_masks": pa.array([None] * n, pa.list_(pa.binary())),
    }
    for name, col in garbage.items():
        tbl = tbl.set_column(tbl.schema.get_field_index(name), name, col)
    pq.write_table(tbl, out)


def test_training_data_never_reads_gt_columns(
    wsod_run: str, tmp_path, tiny_cfg, monkeypatch
) -> None:
    """Batches are identical with poisoned gt_* columns, and the manifest read asks for the
    weak columns only."""
    manifest = manifest_path(wsod_run)
    poisoned = str(tmp_path / "poisoned.parquet")
    _poison_gt(manifest, poisoned)
    props = proposals_path(wsod_run, tiny_cfg)
    requested: list[tuple[str, ...] | None] = []
    real_read = wsod_data.read_table

    def spy(path: str, table: str | None = None, columns=None):  # type: ignore[no-untyped-def]
        requested.append(tuple(columns) if columns is not None else None)
        return real_read(path, table, columns)

    monkeypatch.setattr(wsod_data, "read_table", spy)
    batches = []
    for m in (manifest, poisoned):
        job = TrainJob("mist", 6, tuple("abcdef"), m, props, "train")
        sampler = build_sampler(tiny_cfg, job)
        batches.append([sampler.batch(s) for s in range(3)])
    for a, b in zip(*batches, strict=True):
        assert a.image_ids == b.image_ids and a.scale == b.scale and a.flips == b.flips
        for x, y in zip(
            a.images + a.proposals + a.labels, b.images + b.proposals + b.labels, strict=True
        ):
            assert torch.equal(x, y)
    manifest_reads = [c for c in requested if c is not None and "labels" in c]
    assert manifest_reads and all(c == WEAK_COLUMNS for c in manifest_reads)
    assert all(c is not None for c in requested)  # never "all columns"
    assert not any(name.startswith("gt_") for name in WEAK_COLUMNS)


def test_sampler_is_deterministic_per_step_and_sharded(wsod_run: str) -> None:
    manifest = manifest_path(wsod_run)
    rows = read_weak_manifest(manifest, "train")
    data = join_proposals(rows, None, WSODDataConfig(min_size=4), require_labels=True)
    cfg = WSODDataConfig(train_scales=(64, 96), cache_images=False)
    a = TrainSampler(data.images, cfg, 2, seed=3)
    b = TrainSampler(data.images, cfg, 2, seed=3)
    assert a.batch(7).image_ids == b.batch(7).image_ids
    # ... and varies with the step and the seed (not a constant draw)
    assert any(a.batch(s).image_ids != a.batch(7).image_ids for s in range(10))
    other = TrainSampler(data.images, cfg, 2, seed=4)
    assert any(other.batch(s).image_ids != a.batch(s).image_ids for s in range(10))
    r0 = TrainSampler(data.images, cfg, 2, seed=3, rank=0, world=2)
    r1 = TrainSampler(data.images, cfg, 2, seed=3, rank=1, world=2)
    assert not {i.image_id for i in r0.images} & {i.image_id for i in r1.images}
    assert read_table(manifest, "manifest").num_rows == 9


def test_cached_and_uncached_batches_are_equal(wsod_run: str) -> None:
    """The bounded cache changes when images are decoded, never what a batch holds (a cached
    image is not modified by the photometric jitter); a small bound evicts."""
    rows = read_weak_manifest(manifest_path(wsod_run), "train")
    data = join_proposals(rows, None, WSODDataConfig(min_size=4), require_labels=True)
    base = {"train_scales": (64, 96), "color_jitter": 0.3, "channel_shuffle": True}
    plain = TrainSampler(data.images, WSODDataConfig(**base), 2, seed=3)
    cached = TrainSampler(data.images, WSODDataConfig(**base, cache_images=True), 2, seed=3)
    tiny = TrainSampler(
        data.images, WSODDataConfig(**base, cache_images=True, cache_mb=0.05), 2, seed=3
    )
    for step in range(12):
        want = plain.batch(step)
        for sampler in (cached, tiny):
            got = sampler.batch(step)
            assert got.image_ids == want.image_ids and got.flips == want.flips
            for g, w in zip(got.images, want.images, strict=True):
                assert torch.equal(g, w)
    assert cached._cache.hits > 0 and len(cached._cache) == len(data.images)
    assert len(tiny._cache) < len(data.images) and tiny._cache.nbytes <= 0.05 * 2**20
