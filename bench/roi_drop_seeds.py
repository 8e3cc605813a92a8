"""RoI drop against no drop over several training seeds, on a finished run's PGT.

One `make bench` compares one RoI-drop detector with one no-drop detector; the two share their
first ``operate_iter`` steps and then drift apart, so a single pair's difference mixes the
rule's effect with the seed's. This script retrains both on the same PGT for each of several
``retrain.train.seed`` values (initial head weights, each step's images and flips) and prints
the paired differences, their mean and median and how many seeds RoI drop wins:

    python bench/roi_drop_seeds.py --config configs/bench.yaml --upstream runs/bench \\
        --seeds 1 2 3 [--out docs/roi_drop_seeds.json]
    python bench/roi_drop_seeds.py --show docs/roi_drop_seeds.json

Each seed is its own run, ``<name>_roidrop_s<seed>``, whose stages up to ``pgt`` are links to
the upstream run's (``upstream:``; nothing is recomputed or written there); only ``retrain``
runs (``compare_no_drop`` on, no upper bound, ``wsis`` off). The upstream run's own retrain
stage (its config's seed) is read as one more pair when it compared against no drop. AP50 is
on the run's test split; thresholds and switch-on step are the config's (chosen on the
seed-2000 pool, never on the bench's images).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Mapping, Sequence
from typing import Any

from ray_jobs._stage import execute
from weaksam.config import Config, load_run_config
from weaksam.eval.table import format_table
from weaksam.pipeline.stages import STAGE_NAMES
from weaksam.runs import read_metrics, resolved_config_path

UP_TO_RETRAIN = STAGE_NAMES[: STAGE_NAMES.index("retrain") + 1]


def seed_overrides(name: str, upstream: str, seed: int) -> list[str]:
    """The ``--set`` items of one seed's run."""
    return [
        f"name={name}_roidrop_s{seed}",
        f"upstream={upstream}",
        f"retrain.train.seed={seed}",
        "retrain.enabled=true",
        "retrain.compare_no_drop=true",
        "retrain.upper_bound=false",
        "wsis.enabled=false",
    ]


def pair_row(seed: int, metrics: Mapping[str, Any], source: str) -> dict[str, Any]:
    """One seed's drop / no-drop figures from a retrain stage's ``metrics.json``."""
    drop, off = metrics["variants"]["drop"], metrics["variants"]["no_drop"]
    return {
        "seed": seed,
        "source": source,
        "drop_ap50": drop["ap50_voc07"],
        "no_drop_ap50": off["ap50_voc07"],
        "diff": drop["ap50_voc07"] - off["ap50_voc07"],
        "drop_ap50_all_point": drop["ap50_voc"],
        "no_drop_ap50_all_point": off["ap50_voc"],
        "rois_dropped": drop.get("rois_dropped", 0),
        "rois_foreground_active": drop.get("rois_foreground_active", 0),
    }


def summary(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Mean and median of the paired differences (drop − no drop), wins and seeds."""
    diffs = [float(r["diff"]) for r in rows]
    return {
        "seeds": len(diffs),
        "mean_diff": statistics.fmean(diffs) if diffs else None,
        "median_diff": statistics.median(diffs) if diffs else None,
        "stdev_diff": statistics.stdev(diffs) if len(diffs) > 1 else None,
        "drop_wins": sum(d > 0 for d in diffs),
        "ties": sum(d == 0 for d in diffs),
        "mean_drop_ap50": statistics.fmean(r["drop_ap50"] for r in rows) if rows else None,
        "mean_no_drop_ap50": statistics.fmean(r["no_drop_ap50"] for r in rows) if rows else None,
    }


def seeds_table(rows: Sequence[Mapping[str, Any]], title: str) -> str:
    """One row per seed, then the summary line."""
    s = summary(rows)
    table = [
        [r["seed"], r["drop_ap50"], r["no_drop_ap50"], round(r["diff"], 4), r["rois_dropped"]]
        for r in rows
    ]
    text = format_table(
        table,
        ["seed", "AP50 drop", "AP50 no drop", "drop - no drop", "fg RoIs dropped"],
        title=title,
    )
    if rows:
        text += (
            f"\n{s['seeds']} seeds: mean AP50 drop {s['mean_drop_ap50']:.4f}, no drop "
            f"{s['mean_no_drop_ap50']:.4f}; difference mean {s['mean_diff']:+.4f}, median "
            f"{s['median_diff']:+.4f}"
            + (f", stdev {s['stdev_diff']:.4f}" if s["stdev_diff"] is not None else "")
            + f"; RoI drop ahead in {s['drop_wins']} of {s['seeds']}"
        )
    return text


def run_seed(config: str, upstream: str, seed: int) -> tuple[Config, dict[str, Any]]:
    """Retrain drop and no drop for one seed (stages before retrain linked); its metrics."""
    base = load_run_config(config)
    cfg = load_run_config(config, seed_overrides(base.name, upstream, seed))
    execute(cfg, only=list(UP_TO_RETRAIN))
    return cfg, read_metrics(os.path.join(cfg.run_dir, "retrain"))


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    p.add_argument("--config", default="configs/bench.yaml")
    p.add_argument("--upstream", default="runs/bench", help="the finished run whose PGT is used")
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--out", default="")
    p.add_argument("--show", default="", help="print the table of a saved --out file and stop")
    a = p.parse_args(argv)
    if a.show:
        with open(a.show) as f:
            saved = json.load(f)
        print(seeds_table(saved["rows"], saved["title"]))
        return 0
    title = f"RoI drop vs no drop on {a.upstream}'s PGT: VOC07 AP50, test split"
    rows: list[dict[str, Any]] = []
    up_cfg = load_run_config(resolved_config_path(a.upstream))
    up_retrain = read_metrics(os.path.join(a.upstream, "retrain"))
    if "no_drop" in up_retrain.get("variants", {}):
        rows.append(pair_row(up_cfg.retrain.train.seed, up_retrain, a.upstream))
        print(json.dumps(rows[-1]), flush=True)
    for seed in a.seeds:
        if any(r["seed"] == seed for r in rows):
            continue
        t0 = time.time()
        cfg, metrics = run_seed(a.config, a.upstream, seed)
        rows.append({**pair_row(seed, metrics, cfg.run_dir), "seconds": round(time.time() - t0)})
        print(json.dumps(rows[-1]), flush=True)
    print(seeds_table(rows, title))
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"title": title, "rows": rows, "summary": summary(rows)}, f, indent=1)
        print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
