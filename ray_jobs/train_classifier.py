"""Train the multi-label CAM classifier on image-level labels under Ray Train.

    python -m ray_jobs.train_classifier --config configs/demo.yaml [--set classifier.epochs=N]
    weaksam classify --config configs/demo.yaml ...       (the same command)

Runs the pipeline's ``classify`` stage (``ingest`` must have completed): checkpoints under
``<run>/classify/ray_train_<hash>/`` (a rerun with the same config resumes from the latest
one), the inference model at ``<run>/classify/classifier.pt`` and the test split's
classification AP in ``<run>/classify/metrics.json``. ``--force`` starts training afresh.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ray_jobs._stage import run_command
from weaksam.cam.stage import classify_table

PROG = "python -m ray_jobs.train_classifier"


def _summary(metrics: dict[str, Any], seconds: float) -> str:
    return f"{classify_table(metrics)}\n\nclassifier: {metrics['classifier']} ({seconds:.1f} s)"


def main(argv: Sequence[str] | None = None, prog: str = PROG) -> int:
    description = __doc__.split("\n")[0]
    return run_command(
        ["classify"], argv, prog=prog, description=description, summaries={"classify": _summary}
    )


if __name__ == "__main__":
    raise SystemExit(main())
