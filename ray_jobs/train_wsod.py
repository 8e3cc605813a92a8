"""Train the weakly-supervised detector(s) under Ray Train, infer on every split, evaluate.

    python -m ray_jobs.train_wsod --config configs/demo.yaml [--set wsod.train.steps=N ...]

Runs the pipeline's ``wsod`` stage alone (its inputs, ``ingest`` and ``proposals``, must
exist; ``--set wsod.proposals=grid`` uses a plumbing window grid instead of SAM proposals).
Writes ``runs/<name>/wsod/`` and prints the comparison table. Rerunning after a killed run
resumes training from the latest checkpoint.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence

from ray_jobs._cli import add_config_args, config_from_args, parse
from ray_jobs._ray import init_ray
from weaksam.config import save_resolved
from weaksam.pipeline.core import Stage, run_stages
from weaksam.pipeline.stages import STAGES
from weaksam.wsod.stage import WSOD_STAGE


def wsod_stages() -> tuple[Stage, ...]:
    """The pipeline's stages, with ``wsod`` appended while it is not registered there."""
    names = {s.name for s in STAGES}
    if WSOD_STAGE.name in names:
        return STAGES
    deps = tuple(d for d in WSOD_STAGE.deps if d in names)
    return (*STAGES, dataclasses.replace(WSOD_STAGE, deps=deps))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    add_config_args(parser, required=True)
    args = parse(parser, argv)
    cfg = config_from_args(args)
    save_resolved(cfg)
    try:
        reports = run_stages(cfg, wsod_stages(), ray_init=init_ray, only=WSOD_STAGE.name)
    except FileNotFoundError as exc:
        print(f"train_wsod: {exc}", file=sys.stderr)
        return 2
    metrics = next(r for r in reports if r.name == WSOD_STAGE.name).metrics
    print(metrics.get("table", ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
