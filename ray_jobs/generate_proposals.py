"""Generate WeakSAM proposals for a run's manifest with SAM on a Ray Data actor pool.

    python -m ray_jobs.generate_proposals --config configs/demo.yaml [--set proposals.num_actors=2]

Reads ``<run>/ingest/manifest.parquet`` (and ``<run>/peaks/points.parquet`` when present) and
writes ``<run>/proposals/shards/*.parquet`` plus ``metrics.json``. Rerunning after an
interruption processes only the images not yet written.
"""

from __future__ import annotations

from ray_jobs._stage import run_one

if __name__ == "__main__":
    raise SystemExit(run_one("proposals", __doc__.split("\n")[0]))
