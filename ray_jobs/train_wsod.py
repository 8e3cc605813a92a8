"""Train the weakly-supervised detector(s) under Ray Train, infer on every split, evaluate.

    python -m ray_jobs.train_wsod --config configs/demo.yaml [--set wsod.train.steps=N ...]
    weaksam wsod --config configs/demo.yaml ...           (the same command)

Runs the pipeline's ``wsod`` stage (``ingest`` and ``proposals`` must have completed;
``--set wsod.proposals=grid`` uses a plumbing window grid instead of SAM proposals). Writes
``<run>/wsod/`` and prints the comparison table. A fresh stage is skipped; rerun after a
kill, training resumes from the latest checkpoint; ``--force`` starts afresh.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ray_jobs._stage import run_command

PROG = "python -m ray_jobs.train_wsod"


def _summary(metrics: dict[str, Any], seconds: float) -> str:
    return str(metrics.get("table", ""))


def main(argv: Sequence[str] | None = None, prog: str = PROG) -> int:
    description = (__doc__ or "").split("\n")[0]
    return run_command(
        ["wsod"], argv, prog=prog, description=description, summaries={"wsod": _summary}
    )


if __name__ == "__main__":
    raise SystemExit(main())
