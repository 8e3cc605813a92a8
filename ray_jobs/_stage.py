"""The one way to run stages from a command line: every ``python -m ray_jobs.<stage>``,
``python -m ray_jobs.pipeline`` and ``weaksam <stage|run>`` goes through :func:`run_command`.

What it does, in order: parse ``--config FILE [--set k=v ...] [--force]``; load and validate
the config (a run ``name`` is required; value ranges are checked by the config classes);
check that the inputs the selected stages read exist (earlier stages' ``_SUCCESS`` markers,
the stages' own checks, the weight files the config names) and, for every ``use_gpu: true``,
that the cluster has the GPUs; only then write ``config.resolved.yaml`` and hand the stages to
:func:`weaksam.pipeline.core.run_stages`, which skips fresh stages, resumes interrupted ones
and discards outputs only with ``--force``. Every refusal is one line on stderr and exit
status 2, before anything in the run folder changed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from ray_jobs._cli import add_config_args, parse
from weaksam import storage
from weaksam.config import Config, ConfigError, load_run_config, save_resolved, to_dict
from weaksam.runs import read_success, weight_values
from weaksam.stage import Stage, StageReport

Summary = Callable[[dict[str, Any], float], str]


class UsageError(Exception):
    """A command that cannot run as asked; its message is printed as one line (exit 2)."""


def add_run_args(parser: argparse.ArgumentParser) -> None:
    """``--config``, ``--set`` and ``--force``, as every stage command takes (a missing
    ``--config`` is refused by :func:`load_checked_config`, in one line)."""
    add_config_args(parser)
    parser.add_argument(
        "--force",
        action="store_true",
        help="discard the selected stages' outputs and rerun them (default: skip fresh "
        "stages, resume interrupted ones)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def load_checked_config(args: argparse.Namespace) -> Config:
    """The run config named by ``args``; :class:`UsageError` when it cannot be loaded."""
    try:
        return load_run_config(args.config, args.overrides)
    except ConfigError as exc:
        raise UsageError(f"config error: {exc}") from None


def check_inputs(cfg: Config, stages: Sequence[Stage], selected: Sequence[str]) -> None:
    """Raise :class:`UsageError` when a selected stage's inputs are missing.

    Inputs are the stages it depends on that this call does not run (their ``_SUCCESS``
    marker must exist; disabled stages produce nothing and are not required), the stage's own
    :attr:`~weaksam.stage.Stage.check` of its external inputs, and the local weight files its
    config sections name (``builtin``, URIs and empty values are fine); with ``upstream``,
    that the upstream run folder exists and is not this run's. A dependency is not looked for
    in the upstream: a run reuses the upstream's stages by running them (a full pipeline, or
    ``--from`` its first stage), which links them.
    """
    if cfg.upstream:
        from weaksam.pipeline.upstream import check_upstream

        try:
            check_upstream(cfg.upstream_dir, cfg.run_dir)
        except (ValueError, FileNotFoundError) as exc:
            raise UsageError(str(exc)) from None
    by_name = {s.name: s for s in stages}
    for name in selected:
        stage = by_name[name]
        if not stage.enabled(cfg):
            continue
        for dep in stage.deps:
            if dep in selected or not by_name[dep].enabled(cfg):
                continue
            if read_success(storage.join(cfg.run_dir, dep)) is None:
                raise UsageError(
                    f"stage {name!r} reads the outputs of {dep!r}, which has not completed in "
                    f"{cfg.run_dir} (run `weaksam {dep}` or `weaksam run` with this config first)"
                )
        if stage.check is not None:
            try:
                stage.check(cfg)
            except (ValueError, FileNotFoundError) as exc:
                raise UsageError(f"stage {name!r}: {exc}") from None
        for section in stage.sections:
            tree = {section: to_dict(getattr(cfg, section))}
            for key, value in weight_values(tree):
                local = value and value != "builtin" and not storage.is_uri(value)
                if local and not os.path.isfile(value):
                    raise UsageError(f"{key}: no such file: {value}")


def gpu_requests(
    cfg: Config, stages: Sequence[Stage], selected: Sequence[str]
) -> list[tuple[str, float]]:
    """``(dotted key, GPUs needed)`` of every pool or trainer of the selected, enabled stages
    whose ``use_gpu`` is ``true`` (GPUs needed: workers or actors x GPUs per actor)."""
    by_name = {s.name: s for s in stages}
    out: list[tuple[str, float]] = []

    def walk(node: Any, key: str) -> None:
        if not dataclasses.is_dataclass(node) or isinstance(node, type):
            return
        if getattr(node, "use_gpu", None) == "true":
            count = next(
                (
                    getattr(node, f)
                    for f in ("num_workers", "workers", "num_actors", "actors")
                    if hasattr(node, f)
                ),
                1,
            )
            out.append((f"{key}.use_gpu", float(count) * float(getattr(node, "gpus_per_actor", 1))))
        for f in dataclasses.fields(node):
            walk(getattr(node, f.name), f"{key}.{f.name}")

    for name in selected:
        stage = by_name[name]
        if stage.enabled(cfg):
            for section in stage.sections:
                walk(getattr(cfg, section), section)
    return out


def check_gpus(requests: Sequence[tuple[str, float]], ray_init: Callable[[], None]) -> None:
    """Fail fast (:class:`UsageError`, one line) when a ``use_gpu: true`` pool or trainer
    cannot get its GPUs on the connected cluster (Ray is started only when one asks)."""
    if not requests:
        return
    from weaksam.train.placement import GPUPolicyError, decide_gpu

    ray_init()
    for key, needed in requests:
        try:
            decide_gpu("true", needed, what=key)
        except GPUPolicyError as exc:
            raise UsageError(str(exc)) from None


def check_cluster_storage(cfg: Config, ray_init: Callable[[], None]) -> None:
    """On a cluster (``RAY_ADDRESS`` set): connect, and fail fast (:class:`UsageError`, one
    line) when the run folder is not visible from every alive node or ``run_root`` is
    relative (``ray_jobs._ray.check_run_root``). A private local instance is one node: nothing
    to check, and Ray still starts only when a stage needs it."""
    import os

    from ray_jobs._ray import StorageError, check_run_root

    if not os.environ.get("RAY_ADDRESS"):
        return
    ray_init()
    try:
        check_run_root(cfg.run_root, cfg.run_dir)
    except StorageError as exc:
        raise UsageError(str(exc)) from None


def execute(
    cfg: Config,
    *,
    only: Sequence[str] | None = None,
    from_stage: str | None = None,
    force: bool = False,
) -> list[StageReport]:
    """Check inputs, write ``config.resolved.yaml`` and run the selected stages of the
    pipeline for ``cfg`` (Ray is started only when a stage needs it)."""
    from ray_jobs._ray import init_ray
    from weaksam.pipeline.core import run_stages, select_stages
    from weaksam.pipeline.stages import STAGES

    try:
        selected = select_stages(STAGES, from_stage, only)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    check_inputs(cfg, STAGES, selected)
    check_cluster_storage(cfg, init_ray)
    check_gpus(gpu_requests(cfg, STAGES, selected), init_ray)
    save_resolved(cfg)
    return run_stages(cfg, STAGES, ray_init=init_ray, only=only, from_stage=from_stage, force=force)


def default_summary(metrics: dict[str, Any], seconds: float) -> str:
    """The stage's flat metrics as JSON (nested tables and histories left out)."""
    flat = {k: v for k, v in metrics.items() if not isinstance(v, dict | list) and k != "table"}
    return json.dumps(flat, indent=2, default=str)


def report_line(report: StageReport) -> str:
    """One line saying what happened to a stage."""
    if report.action == "skipped":
        return f"stage {report.name}: fresh, skipped (use --force to rerun it)"
    if report.action == "disabled":
        return f"stage {report.name}: disabled by this config"
    if report.action == "upstream":
        return f"stage {report.name}: reused from the upstream run ({report.source})"
    how = "resumed an interrupted run" if report.resumed else "ran"
    return f"stage {report.name}: {how} in {report.seconds:.1f} s"


def fail(prog: str, message: str) -> int:
    """Print ``prog: message`` as one line on stderr; return exit status 2."""
    print(f"{prog}: {' '.join(message.split())}", file=sys.stderr)
    return 2


def run_command(
    stages: Sequence[str],
    argv: Sequence[str] | None,
    *,
    prog: str,
    description: str,
    summaries: dict[str, Summary] | None = None,
) -> int:
    """Parse a stage command's arguments and run ``stages`` (in pipeline order) for them.

    Prints one line per stage and its summary (``summaries[name]``, else its flat metrics).
    Returns 0, or 2 with a one-line message when the command cannot run as asked.
    """
    parser = argparse.ArgumentParser(prog=prog, description=description)
    add_run_args(parser)
    args = parse(parser, argv)
    try:
        cfg = load_checked_config(args)
        reports = execute(cfg, only=list(stages), force=args.force)
    except UsageError as exc:
        return fail(prog, str(exc))
    except FileNotFoundError as exc:  # an input a stage looked for and did not find
        return fail(prog, str(exc))
    for report in reports:
        print(report_line(report))
        if report.action != "disabled":
            summary = (summaries or {}).get(report.name, default_summary)
            print(summary(report.metrics, report.seconds))
    return 0
