"""Run the whole pipeline for one config, skipping stages whose outputs are fresh.

    python -m ray_jobs.pipeline --config configs/demo.yaml [--set key=value ...]
        [--from STAGE | --only STAGE]

Works the same under ``ray job submit --working-dir . -- python -m ray_jobs.pipeline ...``.
Ends by writing ``runs/<name>/results.json``, printing the results table, and writing the
run report ``runs/<name>/report.md`` (+ ``report.html``), whose path is the last line printed.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

from ray_jobs._cli import add_config_args, config_from_args, parse
from ray_jobs._ray import init_ray
from weaksam.config import save_resolved
from weaksam.pipeline.core import run_stages
from weaksam.pipeline.report import try_write_report
from weaksam.pipeline.results import collect_results, results_table, stage_table, write_results
from weaksam.pipeline.stages import STAGES


def main(argv: Sequence[str] | None = None) -> int:
    names = [s.name for s in STAGES]
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_config_args(parser)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--from", dest="from_stage", choices=names, help="rerun from this stage")
    group.add_argument("--only", choices=names, help="run only this stage")
    args = parse(parser, argv)
    cfg = config_from_args(args)
    save_resolved(cfg)
    t0 = time.time()
    reports = run_stages(cfg, STAGES, ray_init=init_ray, from_stage=args.from_stage, only=args.only)
    results = collect_results(reports, time.time() - t0, cfg.data.splits[-1])
    path = write_results(cfg.run_dir, results)
    print(stage_table(reports))
    print()
    print(results_table(results))
    print(f"\nresults: {path}")
    print(f"report: {try_write_report(cfg.run_dir, reports, results, cfg.data.splits)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
