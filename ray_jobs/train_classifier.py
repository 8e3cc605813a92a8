"""Train the multi-label CAM classifier on image-level labels under Ray Train.

    python -m ray_jobs.train_classifier --config configs/demo.yaml [--set classifier.epochs=N]

Runs the pipeline's ``classify`` stage alone (the manifest must exist: run ``ingest`` first):
checkpoints under ``<run>/classify/ray_train_<hash>/`` (a rerun with the same config resumes
from the latest one), the inference model at ``<run>/classify/classifier.pt`` and the test
split's classification AP in ``<run>/classify/metrics.json``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ray_jobs._stage import run_one
from weaksam.cam.stage import classify_table


def _summary(metrics: dict[str, Any], seconds: float) -> str:
    return f"{classify_table(metrics)}\n\nclassifier: {metrics['classifier']} ({seconds:.1f} s)"


def main(argv: Sequence[str] | None = None) -> int:
    description = __doc__.split("\n")[0]
    return run_one("classify", description, argv, summary=_summary, config_required=False)


if __name__ == "__main__":
    raise SystemExit(main())
