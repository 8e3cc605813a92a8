"""Peak points of every manifest image from the trained CAM classifier, with Ray Data.

    python -m ray_jobs.extract_peaks --config configs/demo.yaml [--set peaks.actors=2]

Runs the pipeline's ``peaks`` stage alone (``classify`` must have run): writes the ``points``
table to ``<run>/peaks/points.parquet/``, point precision / recall to
``<run>/peaks/metrics.json`` and ``<run>/peaks/peaks.png``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from ray_jobs._cli import add_config_args, config_from_args, parse
from ray_jobs._ray import init_ray
from weaksam.cam.stage import peaks_table
from weaksam.config import save_resolved
from weaksam.pipeline.core import run_stages
from weaksam.pipeline.stages import STAGES


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_config_args(parser)
    args = parse(parser, argv)
    cfg = config_from_args(args)
    save_resolved(cfg)
    report = run_stages(cfg, STAGES, ray_init=init_ray, only="peaks")[-1]
    print(peaks_table(report.metrics))
    print(f"\npoints: {report.metrics['points']} ({report.seconds:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
