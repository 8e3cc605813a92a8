"""Make pseudo ground truth from detections and image-level labels (WeakSAM's adaptive PGT).

    python -m ray_jobs.make_pgt --detections DETS --labels LABELS --mode top1|adaptive \
        [--t-keep 0.5 --t-con 0.85] [--split train] [--bbox-source pgt|mask] --out DIR \
        [--masks --config FILE [--set sam.checkpoint=...]] [--image-root DIR] [--gt GT]
    python -m ray_jobs.make_pgt --config FILE [--set ...] [--force]   # the ``pgt`` stage

``DETS`` is a ``detections`` Parquet (file or folder) or a COCO results json; ``LABELS`` a
``manifest`` Parquet or a COCO instances json, of which only the image-level labels are read
(never boxes or masks). Writes ``DIR/pgt.parquet``, ``DIR/pgt_coco.json`` and
``DIR/metrics.json``. With ``--masks`` each PGT box prompts SAM (the config's ``sam`` and
``pgt.mask_job`` sections) on a Ray Data actor pool. ``--gt`` (a manifest or COCO json with
boxes) only adds PGT precision/recall to the metrics, after the PGT is written. Without
``--split``, only the images that appear in ``DETS`` get a row. Exit status 2 on bad input.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Sequence

from ray_jobs._cli import add_config_args, config_from_args, parse
from weaksam.pgt.coco import BBOX_SOURCES
from weaksam.pgt.rules import MODES


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m ray_jobs.make_pgt", description=(__doc__ or "").split("\n")[0]
    )
    p.add_argument("--detections", help="detections Parquet or COCO results json")
    p.add_argument("--labels", help="manifest Parquet or COCO instances json (labels only)")
    p.add_argument("--out", help="output folder")
    p.add_argument("--mode", choices=MODES, default=None, help="PGT rule (default: config's)")
    p.add_argument("--t-keep", type=float, default=None, help="adaptive: keep threshold")
    p.add_argument("--t-con", type=float, default=None, help="adaptive: containment threshold")
    p.add_argument("--split", default=None, help="manifest split whose images get rows")
    p.add_argument("--bbox-source", choices=BBOX_SOURCES, default=None, help="COCO bbox")
    p.add_argument("--masks", action="store_true", help="prompt SAM with each PGT box")
    p.add_argument("--image-root", default="", help="root of COCO file_names (masks)")
    p.add_argument("--gt", default=None, help="evaluation only: GT manifest or COCO json")
    p.add_argument("-v", "--verbose", action="store_true")
    add_config_args(p)
    return p


def _fail(message: str) -> int:
    print(f"make_pgt: {message}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None, prog: str = "python -m ray_jobs.make_pgt") -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    if not any(w.split("=")[0] in ("--detections", "--labels") for w in words):
        if not any(w.split("=")[0] == "--config" for w in words):
            return _fail("give --detections, --labels and --out, or --config for the stage")
        from ray_jobs._stage import run_command

        return run_command(["pgt"], words, prog=prog, description="the pipeline's pgt stage")
    parser = build_parser()
    args = parse(parser, words)
    if not (args.detections and args.labels and args.out):
        return _fail("--detections, --labels and --out are all required")
    for path in (args.detections, args.labels, *([args.gt] if args.gt else [])):
        if "://" not in path and not os.path.exists(path):
            return _fail(f"no such file or folder: {path}")
    cfg = config_from_args(args, run=False)
    changes = {
        k: v
        for k, v in (
            ("mode", args.mode),
            ("t_keep", args.t_keep),
            ("t_con", args.t_con),
            ("bbox_source", args.bbox_source),
        )
        if v is not None
    }
    try:  # the config classes check the values (e.g. --t-keep in [0, 1])
        pgt_cfg = dataclasses.replace(cfg.pgt, masks=args.masks, **changes)
    except ValueError as exc:
        return _fail(str(exc))
    from weaksam.pgt.labels import read_labels
    from weaksam.pgt.stage import evaluate_pgt, make_pgt_outputs, quality_table

    try:
        labels = read_labels(args.labels, split=args.split, image_root=args.image_root)
        metrics = make_pgt_outputs(
            args.detections,
            labels,
            pgt_cfg,
            args.out,
            sam=cfg.sam if args.masks else None,
            only_detected=args.split is None,
            ray_init=_ray_init,
        )
        if args.gt:
            metrics["quality"] = evaluate_pgt(args.out, args.gt, split=args.split)
    except (ValueError, KeyError, FileNotFoundError) as exc:
        return _fail(str(exc))
    with open(os.path.join(args.out, "metrics.json"), "w", encoding="utf-8") as fh:
        json.dump(metrics, fh, indent=2)
    print(quality_table(metrics, f"PGT ({pgt_cfg.mode}) → {args.out}"))
    return 0


def _ray_init() -> None:
    from ray_jobs._ray import init_ray

    init_ray()


if __name__ == "__main__":
    raise SystemExit(main())
