"""Each method switch's effect on the bench: rerun the stages it touches with it turned back.

The bench (``configs/bench.yaml``) runs the method as published; this takes a finished bench
run and, one switch at a time, copies the run folder, turns that one switch back to this
project's earlier setting and reruns only the stages it changes (``--only wsod`` or
``--from pgt``) in the copy. The original run is only read.

    python bench/method_switches.py --run runs/bench [--config configs/bench.yaml] \\
        [--switches mist_no_background ...] [--out docs/bench_switches.json]

Prints, per switch, the figures it reran beside the bench's own (``results.json``), and the
difference; the copies stay as ``<run>_<switch>`` for inspection (``--clean`` removes each
after its figures are written).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from typing import Any

from ray_jobs._stage import execute
from weaksam.config import load_run_config
from weaksam.eval.table import format_table
from weaksam.pipeline.results import RESULT_KEYS, collect_results

# name: (what it turns back, --set items, (only | from), stage)
_EARLIER_WSOD = ["wsod.compare=[]", "wsod.method_overrides=[]", "wsod.model.mil_background=false"]
SWITCHES: dict[str, tuple[str, list[str], str, str]] = {
    "mist_no_background": (
        "MIST with C WSDDN columns (no background column)",
        ["wsod.compare=[]", "wsod.model.mil_background=false"],
        "only",
        "wsod",
    ),
    "mist_background": (
        "MIST with wetectron's C + 1 WSDDN columns (bench.yaml measured C columns better)",
        ["wsod.compare=[]", "wsod.model.mil_background=true"],
        "only",
        "wsod",
    ),
    "mist_no_cdb": (
        "MIST without Concrete DropBlock",
        ["wsod.compare=[]", "wsod.model.cdb=false"],
        "only",
        "wsod",
    ),
    "oicr_earlier": (
        "OICR with MIST's settings (mean MIL, std 0.001, rate x1, lr 0.003, flip)",
        ["wsod.method=oicr", *_EARLIER_WSOD],
        "only",
        "wsod",
    ),
    "wsddn_earlier": (
        "WSDDN with MIST's settings (mean MIL, std 0.001)",
        ["wsod.method=wsddn", *_EARLIER_WSOD],
        "only",
        "wsod",
    ),
    "pgt_minmax": (
        "PGT normalised (s - min) / (max - min)",
        [
            "pgt.normalization=minmax",
            "retrain.enabled=true",
            "retrain.compare_no_drop=false",
            "retrain.upper_bound=false",
            "wsis.enabled=false",
        ],
        "from",
        "pgt",
    ),
    "box_best_iou": (
        "PGT masks: the best-predicted-IoU mask of three",
        [
            "pgt.mask_job.engine.box_mask=best_iou",
            "retrain.enabled=false",
            "wsis.upper_bound=false",
        ],
        "from",
        "pgt",
    ),
}


def run_switch(config: str, run: str, name: str) -> dict[str, Any]:
    """Copy ``run`` to ``<run>_<name>``, rerun with switch ``name`` and return its figures."""
    _, sets, how, stage = SWITCHES[name]
    copy = f"{run.rstrip('/')}_{name}"
    if os.path.exists(copy):
        shutil.rmtree(copy)
    shutil.copytree(run, copy, symlinks=True)
    root, base = os.path.split(os.path.abspath(copy))
    cfg = load_run_config(config, [*sets, f"name={base}", f"run_root={root}"])
    t0 = time.time()
    reports = execute(cfg, only=[stage]) if how == "only" else execute(cfg, from_stage=stage)
    res = collect_results(reports, time.time() - t0, cfg.data.splits[-1], cfg.data.splits[0])
    # only the rerun stages' figures are set (collect_results leaves the others None)
    return {k: res[k] for k in RESULT_KEYS if res.get(k) is not None} | {
        "seconds": res["total_seconds"]
    }


def main() -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    p.add_argument("--run", required=True, help="a finished bench run folder")
    p.add_argument("--config", default="configs/bench.yaml", help="the bench run's config")
    p.add_argument("--switches", nargs="+", choices=sorted(SWITCHES), default=list(SWITCHES))
    p.add_argument("--clean", action="store_true", help="remove each copy after its run")
    p.add_argument("--out", default="")
    a = p.parse_args()
    with open(os.path.join(a.run, "results.json")) as f:
        bench = json.load(f)
    out: dict[str, Any] = {"run": a.run, "bench": {k: bench.get(k) for k in RESULT_KEYS}}
    rows: list[list[object]] = []
    for name in a.switches:
        figures = run_switch(a.config, a.run, name)
        out[name] = figures
        if a.clean:
            shutil.rmtree(f"{a.run.rstrip('/')}_{name}")
        print(json.dumps({name: figures}), flush=True)
        for k in RESULT_KEYS:
            if k in figures and bench.get(k) is not None:
                delta = round(bench[k] - figures[k], 4)
                rows.append([SWITCHES[name][0], k, figures[k], bench[k], delta])
    print(
        format_table(
            rows,
            ["turned back", "figure", "without the switch", "bench", "switch's effect"],
            title=f"Method switches on {a.run} (AP50 and mask AP: test split; CorLoc, PGT: train)",
        )
    )
    if a.out:
        with open(a.out, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
