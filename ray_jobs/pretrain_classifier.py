"""Pre-train the CAM classifier's backbone on image-level labels and export it.

    python -m ray_jobs.pretrain_classifier --config configs/demo_backbone.yaml \\
        --export runs/demo_backbone_128.pt
    python -m ray_jobs.pretrain_classifier --config configs/demo_backbone_hires.yaml \\
        --export weaksam/assets/demo_backbone.pt

The demo's stand-in for ImageNet pre-training (no ImageNet weights can be downloaded here).
Runs the pipeline's ``data``, ``ingest`` and ``classify`` stages for the config (a separate
pool of synthetic ``shapes`` images, the classifier trained under Ray Train on their
image-level labels only; a rerun skips fresh stages and resumes training), then writes the
backbone (no class head) to ``--export``, with ``<stem>.json`` (training metrics) and
``<stem>_training.png`` (curves) beside it; their ``initialised_from`` names the file a
second phase started from (its SHA-256, input size, epochs and pool mAP).
``classifier.weights`` loads the file (``builtin`` is ``weaksam/assets/demo_backbone.pt``).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

from ray_jobs._cli import parse
from ray_jobs._stage import UsageError, add_run_args, execute, fail, load_checked_config
from weaksam.cam.models import resolve_weights
from weaksam.cam.pretrain import export_backbone, plot_history, provenance, write_summary
from weaksam.cam.stage import classify_table
from weaksam.config import to_dict
from weaksam.runs import classifier_path

PRETRAIN_STAGES = ["data", "ingest", "classify"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ray_jobs.pretrain_classifier", description=__doc__.split("\n")[0]
    )
    add_run_args(parser)
    parser.add_argument("--export", default="", help="backbone file (default: in the run folder)")
    args = parse(parser, argv)
    try:
        cfg = load_checked_config(args)
        report = execute(cfg, only=PRETRAIN_STAGES, force=args.force)[-1]
    except (UsageError, FileNotFoundError) as exc:
        return fail(parser.prog, str(exc))
    metrics = report.metrics
    print(classify_table(metrics))
    classify_dir = os.path.dirname(classifier_path(cfg.run_dir))
    export = args.export or os.path.join(classify_dir, "backbone.pt")
    synth = cfg.synth
    meta = export_backbone(
        classifier_path(cfg.run_dir),
        export,
        {
            "trained_on": (
                f"image-level labels only (no boxes or masks) of {synth.num_train} synthetic "
                f"'shapes' images of seed {synth.seed} ({synth.image_size} px, "
                f"{synth.min_instances}-{synth.max_instances} instances; "
                f"{cfg.classifier.val_fraction:.0%} of them held out for validation), "
                "a seed no dataset config uses"
            ),
            "synth_config": to_dict(synth),
            "initialised_from": provenance(resolve_weights(cfg.classifier)),
            "pool_test_map": metrics.get("cls_map"),
            "pool_test_ap": metrics.get("cls_ap"),
            "pool_test_images": metrics.get("test_images"),
            "final_val_map": metrics.get("final_val_map"),
            "train_seconds": metrics.get("train_seconds"),
            "command": " ".join(
                ["python -m ray_jobs.pretrain_classifier --config", str(args.config)]
                + [f"--set {o}" for o in args.overrides]
                + ["--export", export]
            ),
        },
    )
    stem = os.path.splitext(export)[0]
    write_summary(meta, stem + ".json")
    plot_history(
        meta["history"],
        stem + "_training.png",
        f"{meta['backbone']} width {meta['width']} at {meta['input_size']} px, "
        f"{synth.num_train} pool images (seed {synth.seed}), labels only",
    )
    print(
        f"\nexported {export} ({meta['bytes'] / 2**20:.2f} MiB, {meta['parameters']} "
        f"parameters, epoch {meta['epoch']}); pool test mAP {metrics.get('cls_map'):.4f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
