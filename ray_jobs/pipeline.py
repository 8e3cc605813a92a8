"""Run the whole pipeline for one config: skip fresh stages, resume interrupted ones.

    python -m ray_jobs.pipeline --config configs/demo.yaml [--set key=value ...]
        [--from STAGE | --only STAGE] [--force]
    weaksam run --config configs/demo.yaml ...            (the same command)

``--from STAGE`` runs that stage and every later one, ``--only STAGE`` that stage alone; both
still skip what is fresh unless ``--force`` is given, which discards the selected stages'
outputs. Works the same under ``ray job submit --working-dir . -- python -m ray_jobs.pipeline
...``. Ends by writing ``<run>/results.json``, printing the stage and results tables (with an
``upstream:`` run, also its detectors beside the upstream's), and writing the run report
``<run>/report.md`` (+ ``report.html``), whose path is the last line.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

from ray_jobs._cli import parse
from ray_jobs._stage import UsageError, add_run_args, execute, fail, load_checked_config
from weaksam.detection.family_names import section_family
from weaksam.machine import machine_info, machine_line
from weaksam.pipeline.report import try_write_report
from weaksam.pipeline.results import (
    add_upstream,
    collect_results,
    comparison_table,
    results_table,
    stage_table,
    write_results,
)
from weaksam.pipeline.stages import STAGE_NAMES


def main(argv: Sequence[str] | None = None, prog: str = "python -m ray_jobs.pipeline") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=(__doc__ or "").split("\n")[0])
    add_run_args(parser)
    group = parser.add_mutually_exclusive_group()
    inputs = "; its inputs must be done here or (with `upstream:`) in the upstream run"
    group.add_argument(
        "--from",
        dest="from_stage",
        choices=STAGE_NAMES,
        help="run this stage and later ones" + inputs,
    )
    group.add_argument("--only", choices=STAGE_NAMES, help="run only this stage" + inputs)
    args = parse(parser, argv)
    t0 = time.time()
    try:
        cfg = load_checked_config(args)
        reports = execute(cfg, only=args.only, from_stage=args.from_stage, force=args.force)
    except (UsageError, FileNotFoundError) as exc:
        return fail(prog, str(exc))
    results = collect_results(
        reports,
        time.time() - t0,
        cfg.data.splits[-1],
        cfg.data.splits[0],
        retrain_family=section_family(cfg.retrain),
        wsis_family=section_family(cfg.wsis),
    )
    if cfg.upstream:
        results = add_upstream(results, cfg.run_dir, cfg.upstream_dir)
    results["machine"] = machine_info()  # trained figures depend on the CPU's kernel paths
    path = write_results(cfg.run_dir, results)
    print(stage_table(reports))
    print()
    print(results_table(results))
    if comparison_table(results):
        print()
        print(comparison_table(results))
    print(f"\nmachine: {machine_line(results['machine'])}")
    print(f"results: {path}")
    print(f"report: {try_write_report(cfg.run_dir, reports, results, cfg.data.splits)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
