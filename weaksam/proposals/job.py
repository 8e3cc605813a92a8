"""The proposal generation job: manifest (+ points) → Ray Data → Parquet shards, resumable.

Layout of the stage folder::

    <run>/proposals/shards/*.parquet   the ``proposals`` table, one row per image
    <run>/proposals/metrics.json       images/s, proposals per image, recall (when GT exists)

Resuming: the image ids already present in readable shards are skipped, so a rerun after an
interruption processes only the missing images and never writes an image twice. A shard that
cannot be read (a write cut off by a crash) is deleted and its images are redone.

The caller starts or joins Ray first; nothing here starts a cluster.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pyarrow.parquet as pq

from weaksam import storage
from weaksam.configlib import to_dict
from weaksam.io.classes import ClassMap
from weaksam.io.parts import write_parts
from weaksam.io.tables import read_classes, read_table
from weaksam.proposals.config import ProposalsConfig
from weaksam.proposals.udf import ProposalGenerator, decode_images, pack_points
from weaksam.sam.build import SamConfig
from weaksam.sam.engine import EngineConfig
from weaksam.train.placement import actor_pool, decide_actor_gpus

log = logging.getLogger(__name__)

SHARDS = "shards"


@dataclass(frozen=True)
class JobStats:
    """What one call of a SAM shard job did (:func:`generate_proposals`,
    :func:`weaksam.pgt.job.generate_pgt_masks`): images submitted, images skipped because
    earlier shards hold them, wall seconds."""

    submitted: int
    skipped_done: int
    seconds: float
    device: str = ""  # where the SAM actors ran and why (weaksam.train.placement)


class SamJobSettings(Protocol):
    """The actor-pool and shard settings a SAM shard job reads (:class:`ProposalsConfig`,
    :class:`weaksam.pgt.config.PGTMaskJobConfig`)."""

    @property
    def num_actors(self) -> int: ...
    @property
    def max_actors(self) -> int: ...
    @property
    def cpus_per_actor(self) -> float: ...
    @property
    def use_gpu(self) -> str: ...
    @property
    def gpus_per_actor(self) -> float: ...
    @property
    def batch_size(self) -> int: ...
    @property
    def decode_cpus(self) -> float: ...
    @property
    def rows_per_file(self) -> int: ...
    @property
    def max_pixels(self) -> int: ...
    @property
    def engine(self) -> EngineConfig: ...


def write_sam_shards(
    items: Sequence[Mapping[str, Any]],
    shard_dir: str,
    predictor: type,
    sam: SamConfig,
    cfg: SamJobSettings,
    use_gpu: bool | None = None,
    *,
    table: str,
    classes: ClassMap | None = None,
) -> str:
    """The Ray Data pipeline of both SAM jobs: ``items`` (rows with ``path``) → decode tasks
    (:func:`decode_images`) → an actor pool of ``predictor(sam_config=..., engine_config=...)``
    (its batches: ``table`` rows) → Parquet shards in ``shard_dir`` (a local folder or a
    :mod:`weaksam.storage` URI).

    Shards hold ``cfg.rows_per_file`` rows each (the last one of a run fewer; Ray Data
    gathers batches until a file is full), and their schema carries the contract's metadata
    and the class map ``classes``, as every table written by :func:`weaksam.io.tables.write_table`.

    The pool has ``num_actors`` to ``max_actors`` actors
    (:func:`weaksam.train.placement.pool_sizes`); each asks for ``gpus_per_actor`` GPUs when
    the pool is placed on GPUs (None: ``cfg.use_gpu``'s policy,
    :func:`weaksam.train.placement.decide_actor_gpus`). Lost actors are restarted and their
    batches retried by Ray Data; a rerun resumes from the shards (:func:`completed_ids`). The
    caller has started or joined Ray. Returns where the actors ran and why."""
    import ray

    lo, hi = cfg.num_actors, cfg.max_actors or "one per GPU"
    what = f"SAM actors (pool {lo}..{hi})"
    if use_gpu is None and cfg.gpus_per_actor <= 0:
        use_gpu, device = False, f"{what}: CPU (gpus_per_actor: 0)"
    elif use_gpu is None:
        decision = decide_actor_gpus(cfg.use_gpu, cfg.num_actors * cfg.gpus_per_actor, what=what)
        use_gpu, device = decision.use_gpu, decision.reason
    else:
        device = f"{what}: {'GPU' if use_gpu else 'CPU'} (set by the caller)"
    ds: ray.data.Dataset = ray.data.from_items(
        list(items), override_num_blocks=max(1, len(items) // cfg.batch_size)
    )
    ds = ds.map_batches(
        decode_images,
        batch_size=cfg.batch_size,
        num_cpus=cfg.decode_cpus,
        fn_kwargs={"max_pixels": cfg.max_pixels},
    )
    ds = ds.map_batches(
        predictor,
        fn_constructor_kwargs={"sam_config": to_dict(sam), "engine_config": to_dict(cfg.engine)},
        compute=actor_pool(cfg.num_actors, cfg.max_actors, bool(use_gpu)),
        batch_size=cfg.batch_size,
        num_cpus=cfg.cpus_per_actor,
        num_gpus=cfg.gpus_per_actor if use_gpu else 0,
    )
    write_parts(ds, shard_dir, table, classes, cfg.rows_per_file)
    return device


def completed_ids(shard_dir: str) -> set[str]:
    """Image ids in the readable shards of ``shard_dir``; unreadable shards are deleted."""
    done: set[str] = set()
    for loc in storage.list_files(shard_dir, ".parquet"):
        fs, path = storage.resolve(loc)
        try:
            tbl = pq.read_table(path, columns=["image_id"], filesystem=fs)
            ids = tbl.column("image_id").to_pylist()
        except Exception as exc:  # a shard cut off mid-write
            log.warning("removing unreadable shard %s (%s); its images will be redone", loc, exc)
            storage.remove(loc)
            continue
        done.update(str(i) for i in ids)
    return done


def work_items(
    manifest_rows: Sequence[Mapping[str, Any]],
    points_by_id: Mapping[str, Mapping[str, Any]],
    done: set[str],
) -> list[dict[str, Any]]:
    """Manifest rows not yet done, with their peak points attached (lists, possibly empty)."""
    items = []
    for r in manifest_rows:
        if str(r["image_id"]) in done:
            continue
        p = points_by_id.get(str(r["image_id"]), {})
        items.append(
            {
                "image_id": str(r["image_id"]),
                "image_index": int(r["image_index"]),
                "path": r.get("path") or "",
                "height": int(r["height"] or 0),
                "width": int(r["width"] or 0),
                "error": r.get("error") or "",
                **pack_points(
                    p.get("points") or [], p.get("point_classes") or [], p.get("point_kinds") or []
                ),
            }
        )
    return items


def load_points(points_path: str | None) -> dict[str, dict[str, Any]]:
    """``image_id -> points row`` from a points table (empty when there is none)."""
    if not points_path or not storage.exists(points_path):
        return {}
    tbl = read_table(points_path, "points")
    return {str(r["image_id"]): r for r in tbl.to_pylist() if not r.get("error")}


def generate_proposals(
    manifest_path: str,
    out_dir: str,
    sam: SamConfig,
    cfg: ProposalsConfig,
    points_path: str | None = None,
    use_gpu: bool | None = None,
) -> JobStats:
    """Run (or resume) the Ray Data job; shards go to ``<out_dir>/shards``."""
    t0 = time.time()
    shard_dir = storage.join(out_dir, SHARDS)
    storage.makedirs(shard_dir)
    manifest = read_table(manifest_path, "manifest").to_pylist()
    rows = [r for r in manifest if not cfg.splits or r["split"] in cfg.splits]
    done = completed_ids(shard_dir)
    items = work_items(rows, load_points(points_path) if cfg.use_points else {}, done)
    skipped = len(rows) - len(items)
    if skipped:
        log.info("resuming: %d of %d images already have proposals", skipped, len(rows))
    device = ""
    if items:
        classes = read_classes(manifest_path)
        device = write_sam_shards(
            items,
            shard_dir,
            ProposalGenerator,
            sam,
            cfg,
            use_gpu,
            table="proposals",
            classes=classes,
        )
    return JobStats(len(items), skipped, time.time() - t0, device)


def summarize_proposals(proposals_dir: str) -> dict[str, Any]:
    """Counts from the shards: images, error rows, proposals per image (mean, median, max)."""
    tbl = read_table(storage.join(proposals_dir, SHARDS), "proposals")
    ids = tbl.column("image_id").to_pylist()
    if len(ids) != len(set(ids)):
        raise RuntimeError(f"{len(ids) - len(set(ids))} images appear twice in {proposals_dir}")
    errors = [e for e in tbl.column("error").to_pylist() if e]
    counts = np.asarray(
        [
            len(s)
            for s, e in zip(
                tbl.column("scores").to_pylist(), tbl.column("error").to_pylist(), strict=True
            )
            if not e
        ],
        dtype=np.float64,
    )
    sources: dict[str, int] = {}
    for row_sources in tbl.column("sources").to_pylist():
        for s in row_sources or []:
            sources[s] = sources.get(s, 0) + 1
    return {
        "images": len(ids),
        "error_rows": len(errors),
        "proposals_per_image": float(counts.mean()) if counts.size else 0.0,
        "proposals_per_image_median": float(np.median(counts)) if counts.size else 0.0,
        "proposals_per_image_max": int(counts.max()) if counts.size else 0,
        "proposals_by_source": sources,
    }
