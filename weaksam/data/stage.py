"""The ``data`` and ``ingest`` pipeline stages.

* ``data`` (synthetic configs only): generate the ``shapes`` benchmark into ``<run>/data``.
* ``ingest``: images + image-level labels → the ``manifest`` table at
  :func:`weaksam.runs.manifest_path`. Image paths inside the run folder (the synthetic data)
  are stored relative to it, so a run folder can be moved; dataset paths stay absolute.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from weaksam.data.ingest import check_data_config, ingest_splits, summarize_rows
from weaksam.data.synth import generate_shapes_dataset
from weaksam.io.tables import write_table
from weaksam.runs import data_dir, manifest_path
from weaksam.stage import Stage, StageContext

if TYPE_CHECKING:
    from weaksam.config import Config


def run_data(cfg: Config, ctx: StageContext) -> dict[str, Any]:
    """Generate the synthetic dataset into ``<run>/data`` (synthetic configs only)."""
    return generate_shapes_dataset(cfg.synth, ctx.out_dir, progress=False)


def run_ingest(cfg: Config, ctx: StageContext) -> dict[str, Any]:
    """Images + image-level labels → the run's ``manifest`` table; counts per split."""
    data_root = data_dir(ctx.run_dir) if cfg.data.format == "synthetic" else None
    on_ray = decode_in_ray(cfg.data.decode_on)
    if on_ray:
        ctx.ray_init()
    chunk = cfg.data.decode_chunk if on_ray else 0
    rows, classes = ingest_splits(cfg.data, data_root, ray_chunk=chunk)
    write_table(rows, manifest_path(ctx.run_dir), "manifest", classes, path_root=ctx.run_dir)
    return {
        **summarize_rows(rows, classes),
        "decoded_on": f"Ray tasks of {chunk} images" if on_ray else "driver threads",
    }


def decode_in_ray(decode_on: str) -> bool:
    """Whether ingest decodes in Ray tasks: ``ray``, or ``auto`` on a cluster (``RAY_ADDRESS``
    set: other machines can share the work); ``driver`` never."""
    return decode_on == "ray" or (decode_on == "auto" and bool(os.environ.get("RAY_ADDRESS")))


def _synthetic(cfg: Config) -> bool:
    return cfg.data.format == "synthetic"


def check_ingest(cfg: Config) -> None:
    """The dataset the config names exists and its settings are complete."""
    check_data_config(cfg.data)


DATA_STAGE = Stage("data", run_data, sections=("synth",), enabled=_synthetic)
INGEST_STAGE = Stage("ingest", run_ingest, sections=("data",), deps=("data",), check=check_ingest)
