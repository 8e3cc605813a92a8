"""Generate the synthetic ``shapes`` benchmark (or the class-agnostic ``blobs`` set).

    python -m ray_jobs.synth_data --config configs/demo.yaml [--set synth.num_train=20 ...]
    python -m ray_jobs.synth_data --config configs/demo.yaml --dataset blobs --num-images 500

Pure numpy, no Ray. Without ``--out``, ``shapes`` is the pipeline's ``data`` stage (run as
every stage is run: ``<run>/data``, skipped when fresh) and ``blobs`` goes to ``<run>/blobs``.
Otherwise ``metrics.json`` and, last, ``_SUCCESS`` (with the hash of the ``synth`` config) go
into the output folder; a folder already complete for the same config is left alone unless
``--force``. ``--out`` (like the run folder) may be a local path, ``file://`` or ``s3://``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from ray_jobs._cli import add_config_args, config_from_args, parse
from ray_jobs._stage import run_command
from weaksam import storage
from weaksam.config import config_hash, to_dict
from weaksam.data.synth import generate_blobs_dataset, generate_shapes_dataset
from weaksam.runs import clear_success, is_complete, mark_success, write_metrics


def _summary(summary: dict[str, Any]) -> str:
    mib = summary["bytes"] / 2**20
    if "masks" in summary:
        return (
            f"blobs: {summary['images']} images, {summary['masks']} masks, "
            f"{summary['image_size']} px, {mib:.1f} MiB, {summary['seconds']:.1f} s "
            f"-> {summary['out_dir']}"
        )
    images = ", ".join(f"{k} {v}" for k, v in summary["images"].items())
    inst = ", ".join(f"{k} {v}" for k, v in summary["instances"].items())
    return (
        f"shapes: images {images}; instances {inst}; {len(summary['classes'])} classes "
        f"({', '.join(summary['classes'])}); {summary['image_size']} px; {mib:.1f} MiB on disk; "
        f"{summary['seconds']:.1f} s\n  data: {summary['out_dir']}\n"
        f"  contact sheet: {summary['contact_sheet']}"
    )


def main(argv: Sequence[str] | None = None, prog: str = "python -m ray_jobs.synth_data") -> int:
    parser = argparse.ArgumentParser(
        prog=prog, description="Generate the synthetic shapes or blobs set."
    )
    add_config_args(parser)
    parser.add_argument("--dataset", choices=("shapes", "blobs"), default="shapes")
    parser.add_argument("--out", default=None, help="output folder (default: in the run folder)")
    parser.add_argument("--num-images", type=int, default=200, help="blobs: number of images")
    parser.add_argument("--force", action="store_true", help="regenerate even if up to date")
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar (default: when stderr is a terminal)",
    )
    args = parse(parser, argv)
    if args.dataset == "shapes" and args.out is None:
        # the pipeline's ``data`` stage: the same runner, hash and marker as the pipeline
        words = ["--config", args.config or "", *(x for o in args.overrides for x in ("--set", o))]
        words += ["--force"] if args.force else []
        return run_command(["data"], words, prog=prog, description="the pipeline's data stage")
    cfg = config_from_args(args, run=args.out is None)
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    if args.dataset == "shapes":
        out_dir = args.out
        stamp = config_hash(cfg.synth)
    else:
        out_dir = args.out or storage.join(cfg.run_dir, "blobs")
        stamp = config_hash({"synth": to_dict(cfg.synth), "num_images": args.num_images})
    if not args.force and is_complete(out_dir, stamp):
        print(f"{args.dataset}: up to date in {out_dir} (use --force to regenerate)")
        return 0
    storage.makedirs(out_dir)
    clear_success(out_dir)
    if args.dataset == "shapes":
        summary = generate_shapes_dataset(cfg.synth, out_dir, progress=progress)
    else:
        summary = generate_blobs_dataset(
            out_dir,
            args.num_images,
            cfg.synth.image_size,
            cfg.synth.seed,
            progress=progress,
        )
    write_metrics(out_dir, summary)
    mark_success(out_dir, stamp, dataset=args.dataset)
    print(_summary(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
