"""The PGT mask job: ``pgt`` rows + image paths → Ray Data → Parquet shards, resumable.

Layout: ``<out_dir>/mask_shards/<key>/*.parquet`` (the ``pgt`` table with masks, one row
per image); ``key`` hashes the submitted boxes and the SAM and engine settings, so a rerun
with the same inputs resumes and a changed PGT or SAM starts afresh. Resuming works as in the
proposals job (:func:`weaksam.proposals.job.completed_ids`): images already in readable
shards are skipped, an unreadable shard is deleted and redone. :func:`merge_masks` then puts
the masks into the full list of PGT rows.

The caller starts or joins Ray first; nothing here starts a cluster.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from weaksam import storage
from weaksam.configlib import config_hash, to_dict
from weaksam.io.classes import ClassMap
from weaksam.io.schemas import error_row
from weaksam.io.tables import read_table
from weaksam.pgt.config import PGTMaskJobConfig
from weaksam.pgt.masks import PGTMaskPredictor, pack_item
from weaksam.proposals.job import JobStats, completed_ids, write_sam_shards
from weaksam.sam.build import SamConfig

log = logging.getLogger(__name__)

MASK_SHARDS = "mask_shards"


def shard_dir_for(
    rows: Sequence[Mapping[str, Any]], out_dir: str, sam: SamConfig, cfg: PGTMaskJobConfig
) -> str:
    """``<out_dir>/mask_shards/<key>`` for these rows and settings (module docstring)."""
    boxes = [[str(r["image_id"]), list(r.get("boxes") or [])] for r in rows if not r.get("error")]
    key = config_hash({"sam": to_dict(sam), "engine": to_dict(cfg.engine), "boxes": boxes})
    return storage.join(out_dir, MASK_SHARDS, key)


def generate_pgt_masks(
    rows: Sequence[Mapping[str, Any]],
    paths: Mapping[str, str],
    out_dir: str,
    sam: SamConfig,
    cfg: PGTMaskJobConfig,
    use_gpu: bool | None = None,
    classes: ClassMap | None = None,
) -> JobStats:
    """Run (or resume) the job over the rows that have boxes; shards in :func:`shard_dir_for`.

    Args:
        rows: ``pgt`` rows (error rows and rows without boxes are not submitted).
        paths: ``image_id → image path``; a row without a path is written as an error row.
        classes: the class map stored in the shards' metadata.
    """
    t0 = time.time()
    shard_dir = shard_dir_for(rows, out_dir, sam, cfg)
    storage.makedirs(shard_dir)
    todo = [r for r in rows if not r.get("error") and r.get("boxes")]
    done = completed_ids(shard_dir)
    items = [
        pack_item(r, paths.get(str(r["image_id"]), ""))
        for r in todo
        if str(r["image_id"]) not in done
    ]
    for it in items:
        if not it["path"]:
            it["error"] = "no image path for this image"
    skipped = len(todo) - len(items)
    if skipped:
        log.info("resuming: %d of %d images already have PGT masks", skipped, len(todo))
    device = ""
    if items:
        device = write_sam_shards(
            items, shard_dir, PGTMaskPredictor, sam, cfg, use_gpu, table="pgt", classes=classes
        )
    return JobStats(len(items), skipped, time.time() - t0, device)


def merge_masks(
    rows: Sequence[Mapping[str, Any]], out_dir: str, sam: SamConfig, cfg: PGTMaskJobConfig
) -> list[dict[str, Any]]:
    """``rows`` with the masks of the shards: a row with boxes gets its masks (or the job's
    error row); rows without boxes keep ``masks`` null. Raises if an image appears twice in
    the shards or a submitted image is missing."""
    shard_dir = shard_dir_for(rows, out_dir, sam, cfg)
    shard_rows = (
        read_table(shard_dir, "pgt").to_pylist()
        if storage.list_files(shard_dir, ".parquet")
        else []
    )
    by_id: dict[str, dict[str, Any]] = {}
    for r in shard_rows:
        if r["image_id"] in by_id:
            raise RuntimeError(f"image {r['image_id']} appears twice in {shard_dir}")
        by_id[r["image_id"]] = r
    out: list[dict[str, Any]] = []
    for r in rows:
        row = dict(r)
        if not row.get("error") and row.get("boxes"):
            got = by_id.get(str(row["image_id"]))
            if got is None:
                raise RuntimeError(f"image {row['image_id']} has no row in {shard_dir}")
            if got["error"]:
                row = error_row(
                    "pgt",
                    str(row["image_id"]),
                    int(row["image_index"]),
                    got["error"],
                    height=row.get("height"),
                    width=row.get("width"),
                )
            else:
                row["masks"] = got["masks"]
        out.append(row)
    return out
