"""Train the multi-label CAM classifier on image-level labels under Ray Train.

    python -m ray_jobs.train_classifier --config configs/demo.yaml [--set classifier.epochs=N]

Runs the pipeline's ``classify`` stage alone (the manifest must exist: run ``ingest`` first):
checkpoints under ``<run>/classify/ray_train_<hash>/`` (a rerun with the same config resumes
from the latest one), the inference model at ``<run>/classify/classifier.pt`` and the test
split's classification AP in ``<run>/classify/metrics.json``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from ray_jobs._cli import add_config_args, config_from_args, parse
from ray_jobs._ray import init_ray
from weaksam.cam.stage import classify_table
from weaksam.config import save_resolved
from weaksam.pipeline.core import run_stages
from weaksam.pipeline.stages import STAGES


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_config_args(parser)
    args = parse(parser, argv)
    cfg = config_from_args(args)
    save_resolved(cfg)
    report = run_stages(cfg, STAGES, ray_init=init_ray, only="classify")[-1]
    print(classify_table(report.metrics))
    print(f"\nclassifier: {report.metrics['classifier']} ({report.seconds:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
