"""Run one pipeline stage as its own job (the same code path as ``pipeline --only STAGE``)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from typing import Any

from ray_jobs._cli import add_config_args, config_from_args, parse
from ray_jobs._ray import init_ray
from weaksam.config import save_resolved
from weaksam.pipeline.core import run_stages
from weaksam.pipeline.stages import STAGES


def run_one(
    stage: str,
    description: str,
    argv: Sequence[str] | None = None,
    *,
    summary: Callable[[dict[str, Any], float], str] | None = None,
    config_required: bool = True,
) -> int:
    """Run ``stage`` alone; print ``summary(metrics, seconds)`` (default: the flat metrics as
    JSON)."""
    parser = argparse.ArgumentParser(description=description)
    add_config_args(parser, required=config_required)
    args = parse(parser, argv)
    cfg = config_from_args(args)
    save_resolved(cfg)
    reports = run_stages(cfg, STAGES, ray_init=init_ray, only=stage)
    report = next(r for r in reports if r.name == stage)
    if report.action == "disabled":
        print(f"stage {stage!r} is disabled by this config")
        return 0
    if summary is not None:
        print(summary(report.metrics, report.seconds))
        return 0
    flat = {k: v for k, v in report.metrics.items() if not isinstance(v, dict | list)}
    print(json.dumps(flat, indent=2))
    return 0
