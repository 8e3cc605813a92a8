"""Generate WeakSAM proposals for a run's manifest with SAM on a Ray Data actor pool.

    python -m ray_jobs.generate_proposals --config configs/demo.yaml [--set ...] [--force]
    weaksam proposals --config configs/demo.yaml ...      (the same command)

Runs the pipeline's ``proposals`` stage (``ingest`` must have completed; ``peaks`` points are
used when that stage ran). Reads the run's ``manifest`` (and ``points``) table and writes
``<run>/proposals/shards/*.parquet`` plus ``metrics.json``. A fresh stage is skipped; rerun
after an interruption, only the images not yet written are processed; ``--force`` discards
the stage's outputs and starts again.
"""

from __future__ import annotations

from collections.abc import Sequence

from ray_jobs._stage import run_command

PROG = "python -m ray_jobs.generate_proposals"


def main(argv: Sequence[str] | None = None, prog: str = PROG) -> int:
    return run_command(["proposals"], argv, prog=prog, description=__doc__.split("\n")[0])


if __name__ == "__main__":
    raise SystemExit(main())
