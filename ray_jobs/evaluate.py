"""Evaluate detections, proposals or PGT against ground truth.

    python -m ray_jobs.evaluate --gt GT --detections DETS --metric voc07 [--metric ...] \
        [--out metrics.json]

``GT`` is a COCO instances json or a ``manifest`` Parquet (file or folder of shards); ``DETS``
a COCO results json or a ``detections`` / ``pgt`` / ``proposals`` Parquet. Prints the overall
and per-class tables and writes JSON (per-class values keyed by class name, NaN as null).
Exits with status 2 on a missing file, unknown metric or mismatched ids. No Ray needed.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from ray_jobs._cli import parse
from weaksam import storage
from weaksam.eval import (
    METRICS,
    IdMismatchError,
    evaluate,
    format_report,
    to_jsonable,
)
from weaksam.eval.formats import load_detections, load_ground_truth
from weaksam.eval.records import num_missing
from weaksam.eval.summary import CLASS_AGNOSTIC


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m ray_jobs.evaluate", description=(__doc__ or "").split("\n")[0]
    )
    p.add_argument("--gt", required=True, help="COCO instances json or manifest Parquet")
    p.add_argument(
        "--detections", required=True, help="COCO results json or detections/proposals Parquet"
    )
    p.add_argument(
        "--metric",
        dest="metrics",
        action="append",
        required=True,
        help=f"one of {sorted(METRICS)} (repeatable)",
    )
    p.add_argument("--out", default=None, help="write the metrics JSON here")
    p.add_argument("--split", default=None, help="only manifest rows of this split")
    p.add_argument("--iou-thresh", type=float, default=0.5, help="box IoU for voc/corloc (>)")
    p.add_argument(
        "--exclude-difficult", action="store_true", help="recall: leave difficult GT out"
    )
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def _fail(message: str) -> int:
    print(f"evaluate: {message}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(build_parser(), argv)
    unknown = [m for m in args.metrics if m not in METRICS]
    if unknown:
        return _fail(f"unknown metric(s) {unknown}; known: {sorted(METRICS)}")
    for path in (args.gt, args.detections):
        try:
            found = storage.exists(path)
        except (ValueError, OSError) as exc:  # an unknown scheme, an unreachable store
            return _fail(f"{path}: {exc}")
        if not found:
            return _fail(f"no such file or folder: {path}")
    try:
        gt = load_ground_truth(args.gt, split=args.split)
        dets = load_detections(args.detections, gt)
        if dets.kind == "proposals":
            bad = [m for m in args.metrics if m not in CLASS_AGNOSTIC]
            if bad:
                return _fail(f"proposals are class-agnostic; {bad} need classes (use recall)")
        results = evaluate(
            gt.records,
            dets.records,
            args.metrics,
            gt.classes,
            iou_thresh=args.iou_thresh,
            include_difficult=not args.exclude_difficult,
        )
    except FileNotFoundError as exc:
        return _fail(str(exc))
    except IdMismatchError as exc:
        return _fail(f"ids do not match: {exc}")
    except (ValueError, KeyError) as exc:
        return _fail(str(exc))

    missing = num_missing(gt.records, dets.records)
    print(
        f"{len(gt.records)} images evaluated ({len(gt.skipped)} skipped in the ground truth, "
        f"{len(dets.errors)} detection error rows, {missing} without detections)\n"
    )
    if args.split is None and missing * 2 > len(gt.records):
        print(
            "note: most ground-truth images have no detections; if the detections cover one "
            "split of a manifest (e.g. test), pass --split to evaluate against that split only\n"
        )
    print(format_report(results))
    if args.out:
        payload: dict[str, Any] = {
            "gt": args.gt,
            "detections": args.detections,
            "num_images": len(gt.records),
            "skipped_gt": gt.skipped,
            "detection_errors": dets.errors,
            "images_without_detections": missing,
            "metrics": results,
        }
        text = json.dumps(to_jsonable(payload), indent=2, allow_nan=False)
        storage.write_text(args.out, text)  # parents made for local paths; atomic
        print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
