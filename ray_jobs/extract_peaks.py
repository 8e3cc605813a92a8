"""Peak points of every manifest image from the trained CAM classifier, with Ray Data.

    python -m ray_jobs.extract_peaks --config configs/demo.yaml [--set peaks.actors=2] [--force]
    weaksam peaks --config configs/demo.yaml ...          (the same command)

Runs the pipeline's ``peaks`` stage (``classify`` must have completed): writes the ``points``
table to ``<run>/peaks/points.parquet/``, point precision / recall to
``<run>/peaks/metrics.json`` and ``<run>/peaks/peaks.png``. A fresh stage is skipped;
``--force`` reruns it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ray_jobs._stage import run_command
from weaksam.cam.stage import peaks_table

PROG = "python -m ray_jobs.extract_peaks"


def _summary(metrics: dict[str, Any], seconds: float) -> str:
    return f"{peaks_table(metrics)}\n\npoints: {metrics['points']} ({seconds:.1f} s)"


def main(argv: Sequence[str] | None = None, prog: str = PROG) -> int:
    description = __doc__.split("\n")[0]
    return run_command(
        ["peaks"], argv, prog=prog, description=description, summaries={"peaks": _summary}
    )


if __name__ == "__main__":
    raise SystemExit(main())
