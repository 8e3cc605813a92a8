"""Ingest stage: images + image-level labels -> ``manifest.parquet``.

With a config (the pipeline's ``ingest`` stage, run as every stage is run)::

    python -m ray_jobs.ingest --config configs/demo.yaml [--set data.splits=[train,test]]
    weaksam ingest --config configs/demo.yaml            (the same command)

reads ``cfg.data`` and writes the run's ``manifest`` table, ``metrics.json`` and ``_SUCCESS``
(last), with the pipeline's hash: a later ``ray_jobs.pipeline`` skips it. For ``format:
synthetic`` the data is read from ``<run>/data``. Skipped when fresh; ``--force`` reruns.

Without a config (one-off conversion)::

    python -m ray_jobs.ingest --format voc --root VOCdevkit/VOC2007 \\
        --split trainval --split test --out manifest.parquet

``--root``, ``--annotations``, ``--classes`` and ``--out`` may be local paths or URIs
(``file://``, ``s3://``).

Exit status: 0 when the manifest was written (error rows are data, not failures); 2 for
unusable arguments or a missing/invalid annotation file.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from ray_jobs._cli import parse
from ray_jobs._stage import run_command
from weaksam.config import DataConfig
from weaksam.data.imageio import DEFAULT_MAX_PIXELS
from weaksam.data.ingest import format_summary, ingest_splits, summarize_rows
from weaksam.io.tables import write_table


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m ray_jobs.ingest",
        description="Ingest images and image-level labels into manifest.parquet.",
    )
    g = p.add_argument_group("a one-off conversion (the pipeline's stage: --config FILE)")
    g.add_argument("--format", choices=("coco", "voc", "folder"))
    g.add_argument("--root", help="image folder (coco, folder) or the VOCxxxx folder (voc)")
    g.add_argument("--annotations", help="COCO json (coco) or labels CSV (folder); {split} ok")
    g.add_argument(
        "--split",
        dest="splits",
        action="append",
        help="split to ingest, repeatable; the first is the training split "
        "(default: trainval for voc, train otherwise)",
    )
    g.add_argument("--classes", help="class names file, one per line (voc, folder)")
    g.add_argument("--image-labels", help="coco: {file_name: [class names]} json; {split} ok")
    g.add_argument("--out", help="output Parquet file")
    g.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS)
    p.add_argument("--num-workers", type=int, default=None, help="decoding threads")
    p.add_argument(
        "--allow-empty-labels",
        action="store_true",
        help="keep training images without labels as good rows",
    )
    p.add_argument(
        "--no-verify",
        dest="verify",
        action="store_false",
        help="read image headers only (fast; truncated files are not detected)",
    )
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def _adhoc_config(args: argparse.Namespace, parser: argparse.ArgumentParser) -> DataConfig:
    if not args.root:
        parser.error("--root is required with --format")
    if not args.out:
        parser.error("--out is required with --format")
    if args.format in ("coco", "folder") and not args.annotations:
        parser.error(f"--annotations is required with --format {args.format}")
    if args.format == "coco" and args.classes:
        print("note: --classes is ignored for coco (classes come from the json)", file=sys.stderr)
    splits = args.splits or (["trainval"] if args.format == "voc" else ["train"])
    return DataConfig(
        format=args.format,
        root=args.root,
        annotations=args.annotations or "",
        image_labels=args.image_labels or "",
        splits=tuple(splits),
        classes_file=(args.classes or "") if args.format != "coco" else "",
        max_pixels=args.max_pixels,
    )


def main(argv: Sequence[str] | None = None, prog: str = "python -m ray_jobs.ingest") -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    if any(w.split("=")[0] == "--config" for w in words):
        # the pipeline's stage: the same runner, hash and _SUCCESS marker as the pipeline
        description = "the pipeline's ingest stage"
        return run_command(["ingest"], words, prog=prog, description=description)
    parser = build_parser()
    args = parse(parser, words)
    if not args.format:
        parser.error("give --config FILE, or --format with --root and --out")
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    t0 = time.perf_counter()
    data_cfg = _adhoc_config(args, parser)
    try:
        rows, classes = ingest_splits(
            data_cfg,
            None,
            allow_empty_labels=args.allow_empty_labels,
            verify=args.verify,
            num_workers=args.num_workers,
            progress=progress,
        )
    except (FileNotFoundError, ValueError) as exc:
        print(f"ingest: error: {exc}", file=sys.stderr)
        return 2
    write_table(rows, args.out, "manifest", classes)
    summary = summarize_rows(rows, classes)
    summary["seconds"] = round(time.perf_counter() - t0, 3)
    print(format_summary(summary))
    print(f"wrote {len(rows)} rows to {args.out} in {summary['seconds']:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
