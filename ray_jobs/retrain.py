"""Retrain detectors on the pseudo ground truth: Faster R-CNN with RoI drop (``retrain``) and
Mask R-CNN on the PGT masks (``wsis``), under Ray Train, with Ray Data batch inference.

    python -m ray_jobs.retrain --config configs/demo.yaml [--stage retrain|wsis|both] \
        [--set retrain.train.steps=200]

Reads ``<run>/ingest/manifest.parquet`` and ``<run>/pgt/pgt.parquet`` and writes
``<run>/retrain/`` and ``<run>/wsis/`` (model.pt, detections_<test>.parquet, COCO results,
metrics.json). Rerunning after a kill resumes each training run from its latest checkpoint.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

from ray_jobs._cli import add_config_args, config_from_args, parse
from ray_jobs._ray import init_ray
from weaksam.config import save_resolved
from weaksam.pipeline.core import Stage, run_stages


def pipeline_stages() -> tuple[Stage, ...]:
    """The registered stages, plus ``wsod``, ``pgt``, ``retrain`` and ``wsis`` appended in
    that order when ``weaksam/pipeline/stages.py`` does not list them (yet)."""
    from weaksam.detection.stage import RETRAIN_STAGE, WSIS_STAGE
    from weaksam.pgt.stage import PGT_STAGE
    from weaksam.pipeline.stages import STAGES
    from weaksam.wsod.stage import WSOD_STAGE

    names = {s.name for s in STAGES}
    extra = [s for s in (WSOD_STAGE, PGT_STAGE, RETRAIN_STAGE, WSIS_STAGE) if s.name not in names]
    return (*STAGES, *extra)


def run_named(stages: Sequence[str], argv: Sequence[str] | None, description: str) -> int:
    """Run the named stages (``--only`` each, in order) for ``--config``; print their metrics."""
    parser = argparse.ArgumentParser(description=description)
    add_config_args(parser, required=True)
    args = parse(parser, argv)
    cfg = config_from_args(args)
    save_resolved(cfg)
    every = pipeline_stages()
    for name in stages:
        reports = run_stages(cfg, every, ray_init=init_ray, only=name)
        report = next(r for r in reports if r.name == name)
        if report.action == "disabled":
            print(f"stage {name!r} is disabled by this config")
            continue
        flat = {
            k: v
            for k, v in report.metrics.items()
            if not isinstance(v, dict | list) and k != "table"
        }
        print(json.dumps(flat, indent=2, default=str))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--stage", choices=("retrain", "wsis", "both"), default="both")
    known, rest = pre.parse_known_args(argv)
    stages = ("retrain", "wsis") if known.stage == "both" else (known.stage,)
    return run_named(stages, rest, (__doc__ or "").split("\n")[0])


if __name__ == "__main__":
    raise SystemExit(main())
