"""Peak points of every manifest image from the trained CAM classifier, with Ray Data.

    python -m ray_jobs.extract_peaks --config configs/demo.yaml [--set peaks.actors=2]

Runs the pipeline's ``peaks`` stage alone (``classify`` must have run): writes the ``points``
table to ``<run>/peaks/points.parquet/``, point precision / recall to
``<run>/peaks/metrics.json`` and ``<run>/peaks/peaks.png``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ray_jobs._stage import run_one
from weaksam.cam.stage import peaks_table


def _summary(metrics: dict[str, Any], seconds: float) -> str:
    return f"{peaks_table(metrics)}\n\npoints: {metrics['points']} ({seconds:.1f} s)"


def main(argv: Sequence[str] | None = None) -> int:
    description = __doc__.split("\n")[0]
    return run_one("peaks", description, argv, summary=_summary, config_required=False)


if __name__ == "__main__":
    raise SystemExit(main())
