"""Retrain detectors on the pseudo ground truth: Faster R-CNN with RoI drop (``retrain``) and
Mask R-CNN on the PGT masks (``wsis``), under Ray Train, with Ray Data batch inference.

    python -m ray_jobs.retrain --config configs/demo.yaml [--stage retrain|wsis|both] \\
        [--set retrain.train.steps=200] [--force]
    weaksam retrain --config ... / weaksam wsis --config ...   (one stage each)

Reads the run's ``manifest`` and ``pgt`` tables (``ingest`` and ``pgt`` must have completed)
and writes ``<run>/retrain/`` and ``<run>/wsis/`` (model.pt, detections_<test>.parquet, COCO
results, metrics.json). Fresh stages are skipped; rerun after a kill, each training run
resumes from its latest checkpoint; ``--force`` starts afresh.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from ray_jobs._stage import run_command

PROG = "python -m ray_jobs.retrain"


def main(argv: Sequence[str] | None = None, prog: str = PROG) -> int:
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--stage", choices=("retrain", "wsis", "both"), default="both")
    known, rest = pre.parse_known_args(argv)
    stages = ["retrain", "wsis"] if known.stage == "both" else [known.stage]
    return run_command(stages, rest, prog=prog, description=(__doc__ or "").split("\n")[0])


if __name__ == "__main__":
    raise SystemExit(main())
