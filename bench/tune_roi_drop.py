"""Sweep RoI drop's thresholds (``retrain.roi_drop``) on a tuning pool: retrained AP50 and counts.

Tune on images no benchmark uses: ``configs/tune_roi_drop.yaml`` is the bench's pipeline on
`shapes` images of seed 2000 (the demo and the bench use seed 0). Run its pipeline to the PGT
first, then sweep:

    python -m ray_jobs.pipeline --config configs/tune_roi_drop.yaml
    python bench/tune_roi_drop.py --config configs/tune_roi_drop.yaml \\
        [--pairs off 4:4 2:2 1:1 ...] [--out docs/tune_roi_drop.json]

Each pair ``CLS:REG`` retrains Faster R-CNN on the pool's PGT with ``thresh_cls`` CLS and
``thresh_reg`` REG (``off``: without drop) through the pipeline's own ``retrain`` stage
(``--only retrain``, the same schedule and switch-on step as the bench) and scores it on the
pool's test split. Prints one row per pair: AP50 (VOC07 11-point and all-point), the change
against ``off``, the foreground RoIs over each threshold (all steps) and those dropped.
The stage's outputs are replaced by each pair's, so the last pair's model stays in the run.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from ray_jobs._stage import execute
from weaksam.config import load_run_config
from weaksam.eval.table import format_table


def parse_pair(text: str) -> tuple[float, float] | None:
    """``"off"`` → None; ``"CLS:REG"`` → ``(CLS, REG)``."""
    if text == "off":
        return None
    cls, sep, reg = text.partition(":")
    if not sep:
        raise argparse.ArgumentTypeError(f"a pair is CLS:REG or off, got {text!r}")
    return float(cls), float(reg)


def pair_overrides(pair: tuple[float, float] | None) -> list[str]:
    """The ``--set`` items that retrain one pair (``None``: drop off)."""
    common = ["retrain.enabled=true", "retrain.compare_no_drop=false", "retrain.upper_bound=false"]
    if pair is None:
        return [*common, "retrain.roi_drop.enabled=false"]
    return [
        *common,
        "retrain.roi_drop.enabled=true",
        f"retrain.roi_drop.thresh_cls={pair[0]}",
        f"retrain.roi_drop.thresh_reg={pair[1]}",
    ]


def sweep_table(rows: list[dict[str, Any]], run_dir: str) -> str:
    """One row per pair: AP50, the change against ``off``, RoIs over each threshold in all steps
    (with or without drop: how often the rule holds) and those dropped (from the switch-on)."""
    base = next((r["ap50_voc07"] for r in rows if r["thresh_cls"] is None), None)
    table = [
        [
            "off" if r["thresh_cls"] is None else f"{r['thresh_cls']:g} / {r['thresh_reg']:g}",
            r["ap50_voc07"],
            None if base is None else round(r["ap50_voc07"] - base, 4),
            r["ap50_voc"],
            r["rois_foreground"],
            r["rois_over_cls"],
            r["rois_over_reg"],
            r["rois_over_both"],
            r["rois_dropped"],
        ]
        for r in rows
    ]
    return format_table(
        table,
        [
            "cls / reg",
            "AP50 voc07",
            "vs off",
            "AP50 all-pt",
            "fg",
            ">cls",
            ">reg",
            ">both",
            "dropped",
        ],
        title=f"RoI drop on {run_dir}: AP50 on its test split; foreground RoIs of all steps",
    )


def main() -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    p.add_argument("--config", default="configs/tune_roi_drop.yaml")
    p.add_argument(
        "--pairs",
        type=parse_pair,
        nargs="+",
        default=[None, (4.0, 4.0), (3.0, 3.0), (2.0, 2.0), (1.0, 3.96), (1.0, 2.0), (1.0, 1.0)],
        help="CLS:REG threshold pairs, or off (default: off, the method's 4:4, its sweep's "
        "1:3.96, and lower ones)",
    )
    p.add_argument("--out", default="")
    p.add_argument("--show", default="", help="print the table of a saved --out file and stop")
    a = p.parse_args()
    if a.show:
        with open(a.show) as f:
            saved = json.load(f)
        print(sweep_table(saved["rows"], load_run_config(saved["config"]).run_dir))
        return 0
    rows: list[dict[str, Any]] = []
    for pair in a.pairs:
        cfg = load_run_config(a.config, pair_overrides(pair))
        t0 = time.time()
        report = execute(cfg, only=["retrain"])[-1]
        m = report.metrics["variants"]["drop"]
        rows.append(
            {
                "thresh_cls": None if pair is None else pair[0],
                "thresh_reg": None if pair is None else pair[1],
                "operate_iter": cfg.retrain.roi_drop.operate_iter,
                **{k: v for k, v in m.items() if k.startswith(("ap50", "rois_"))},
                "seconds": round(time.time() - t0, 1),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    print(sweep_table(rows, load_run_config(a.config).run_dir))
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"config": a.config, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
