"""Learning curves of a run's ``retrain`` and ``wsis`` stages: each kept checkpoint on a split.

Train with ``train.keep_checkpoints: 0`` (``configs/bench_transformers.yaml`` does: a checkpoint
every 100 steps, all kept), then

    python bench/learning_curve.py --run runs/bench_transformers \\
        [--stage retrain wsis] [--split test] [--out docs/learning_curve.json] [--png-dir DIR]
    python bench/learning_curve.py --show docs/learning_curve.json

Each checkpoint of each variant (PGT-trained and, when the stage trained one, the GT-trained
upper bound) is exported, run over the split in this process and evaluated as the stage
evaluates: box AP50 (VOC07 11-point) for ``retrain``, mask AP25/50/70/75 for ``wsis``. Prints one
row per step with the weak / full ratio where both variants have that step, and draws one PNG
per stage (``<png-dir>/learning_curve_<stage>.png``; default: the run's ``report/``). A point
before the schedule's last learning-rate step is taken at the full rate: it shows the trend, not
what a schedule ending there would reach. Local run folders only.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

from weaksam.config import load_config
from weaksam.detection.curve import CurvePoint, stage_curves
from weaksam.eval.table import format_table
from weaksam.runs import resolved_config_path
from weaksam.viz.plots import Curve, plot_curves

#: the curve's figure per stage: RT-DETR / Faster R-CNN boxes, Mask2Former / Mask R-CNN masks
HEADLINE = {"retrain": "ap50_voc07", "wsis": "mask_ap50"}
COLUMNS = {
    "retrain": ("ap50_voc07", "ap50_voc"),
    "wsis": ("mask_ap25", "mask_ap50", "mask_ap70", "mask_ap75"),
}


def curve_table(stage: str, points: Sequence[dict[str, Any]]) -> str:
    """One row per (variant, step); ``weak/full``: the PGT variant's headline figure over the
    ``upper_bound`` variant's at the same step (blank where either is missing)."""
    key = HEADLINE[stage]
    full = {p["step"]: p["metrics"].get(key) for p in points if p["variant"] == "upper_bound"}
    rows = []
    for p in points:
        value, bound = p["metrics"].get(key), full.get(p["step"])
        ratio = None
        if p["variant"] != "upper_bound" and value is not None and bound:
            ratio = round(value / bound, 3)
        rows.append(
            [p["variant"], p["step"], *(p["metrics"].get(k) for k in COLUMNS[stage]), ratio]
        )
    return format_table(
        rows,
        ["variant", "step", *COLUMNS[stage], "weak/full"],
        title=f"{stage}: learning curve on the test split (each kept checkpoint)",
    )


def draw(stage: str, points: Sequence[dict[str, Any]], path: str, title: str) -> str:
    """The headline figure against steps, one line per variant (GT-trained dashed)."""
    key = HEADLINE[stage]
    curves = []
    for i, name in enumerate(dict.fromkeys(p["variant"] for p in points)):
        mine = [p for p in points if p["variant"] == name and key in p["metrics"]]
        curves.append(
            Curve(
                f"{name} ({'ground truth' if name == 'upper_bound' else 'PGT'})",
                [p["step"] for p in mine],
                [p["metrics"][key] for p in mine],
                color_index=i,
                dashed=name == "upper_bound",
            )
        )
    return plot_curves(curves, path, xlabel="training step", ylabel=f"{key} (test)", title=title)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    p.add_argument("--run", default="runs/bench_transformers", help="the run folder")
    p.add_argument("--stage", nargs="+", choices=sorted(HEADLINE), default=["retrain", "wsis"])
    p.add_argument("--split", default="", help="default: the run's test split (its last)")
    p.add_argument("--out", default="", help="also write the points as JSON")
    p.add_argument("--png-dir", default="", help="default: <run>/report")
    p.add_argument("--show", default="", help="print the tables of a saved --out file and stop")
    a = p.parse_args(argv)
    if a.show:
        with open(a.show) as f:
            saved = json.load(f)
        for stage, pts in saved["stages"].items():
            print(curve_table(stage, pts))
        return 0
    cfg_file = resolved_config_path(a.run)
    if not os.path.exists(cfg_file):
        print(f"error: no run at {a.run} ({cfg_file} missing)", file=sys.stderr)
        return 2
    cfg = load_config(cfg_file)
    split = a.split or cfg.data.splits[-1]
    png_dir = a.png_dir or os.path.join(a.run, "report")
    saved: dict[str, Any] = {"run": a.run, "split": split, "stages": {}}
    t0 = time.time()

    def show(pt: CurvePoint) -> None:
        figures = " ".join(f"{k} {v:.4f}" for k, v in pt.metrics.items())
        print(f"[{time.time() - t0:6.0f} s] {pt.variant} step {pt.step}: {figures}", flush=True)

    with tempfile.TemporaryDirectory(prefix="curve_") as work:
        for stage in a.stage:
            section = cfg.retrain if stage == "retrain" else cfg.wsis
            points = stage_curves(
                a.run,
                stage,
                split,
                work,
                mask_threshold=section.test.mask_threshold,
                progress=show,
            )
            rows = [
                {"variant": q.variant, "step": q.step, "metrics": dict(q.metrics)} for q in points
            ]
            saved["stages"][stage] = rows
            print(curve_table(stage, rows))
            png = draw(
                stage,
                rows,
                os.path.join(png_dir, f"learning_curve_{stage}.png"),
                f"{a.run}: {stage}, {split} split",
            )
            print(f"wrote {png}")
    if a.out:
        with open(a.out, "w") as f:
            json.dump(saved, f, indent=1)
        print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
