"""Train the demo SAM on the class-agnostic ``blobs`` set under Ray Train and export it.

    python -m ray_jobs.train_demo_sam --config configs/demo_sam.yaml [--set sam_train.steps=N]
        [--workers 1] [--export weaksam/assets/demo_sam.pt]

Rerunning with the same run name resumes from the latest checkpoint. The exported checkpoint
holds the weights, the SAM config and the training history (loadable with weights_only=True).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from ray_jobs._cli import add_config_args, config_from_args, parse
from ray_jobs._ray import init_ray, run_torch_trainer
from weaksam.config import save_resolved, to_dict
from weaksam.sam.export import export_trained_sam, plot_history

log = logging.getLogger("train_demo_sam")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_config_args(parser)
    parser.add_argument("--workers", type=int, default=1, help="Ray Train workers (DDP)")
    parser.add_argument("--cpus-per-worker", type=float, default=1.0)
    parser.add_argument("--export", default="", help="where to write the final checkpoint")
    args = parse(parser, argv)
    cfg = config_from_args(args)
    if cfg.sam.model_type != "demo":
        print("train_demo_sam trains the 'demo' model type only", file=sys.stderr)
        return 2
    out_dir = os.path.join(cfg.run_dir, "sam_train")
    os.makedirs(out_dir, exist_ok=True)
    save_resolved(cfg)
    init_ray()
    sam_cfg = {**to_dict(cfg.sam), "checkpoint": "", "device": "auto"}
    result = run_torch_trainer(
        _loop,
        {"train": to_dict(cfg.sam_train), "sam": sam_cfg},
        name="ray_train",
        storage_path=out_dir,
        num_workers=args.workers,
        cpus_per_worker=args.cpus_per_worker,
    )
    if result.checkpoint is None:
        print("training produced no checkpoint", file=sys.stderr)
        return 1
    export = args.export or os.path.join(out_dir, "demo_sam.pt")
    with result.checkpoint.as_directory() as ckpt_dir:
        summary = export_trained_sam(ckpt_dir, export)
    plot_history(summary["history"], os.path.join(out_dir, "training_curves.png"))
    last = summary["history"][-1] if summary["history"] else {}
    print(
        f"exported {export} ({os.path.getsize(export) / 2**20:.1f} MiB) at step {summary['step']}"
    )
    print("final: " + ", ".join(f"{k}={v:.4f}" for k, v in sorted(last.items())))
    return 0


def _loop(config: dict[str, Any]) -> None:
    from weaksam.sam.training import train_loop_per_worker

    train_loop_per_worker(config)


if __name__ == "__main__":
    raise SystemExit(main())
