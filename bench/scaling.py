"""Scaling, in one run on this machine: SAM proposals with 1 and 2 actors, and the peak memory
of each training worker (classifier, WSOD, retraining) at 1x and 4x the bench's image count.

    python bench/scaling.py [--base 360] [--factor 4] [--sam-images 120]
        [--work /tmp/weaksam_scaling] [--out docs/bench_scaling.json]

*Proposals*: the demo SAM (``sam.checkpoint: builtin``) and the demo's engine settings on the
first ``--sam-images`` training images of the 1x dataset, once with one actor and once with
two (same images, fresh output folders, Ray started with the machine's CPUs); images/s counts
the whole job (actor start-up included), and the ratio is 2-actor / 1-actor.

*Memory*: the pipeline's own stages (``weaksam.pipeline.core.run_stages``, the runner that
``make demo`` uses) on ``configs/demo.yaml`` with ``--base`` and ``factor x --base`` training
images (40 test images), short schedules of the same number of steps at both sizes (the
classifier: ``2 x factor`` epochs at 1x, 2 at ``factor`` x), image caches off (the
configuration that bounds memory), WSOD on the plumbing grid proposals (no SAM needed), PGT
without masks, no WSIS. Each stage's
``metrics.json`` records the largest peak RSS of one ``RayTrainWorker`` process
(:mod:`weaksam.pipeline.memory`); the table shows it at 1x and 4x and the growth.

Wall times and RSS are this machine's (2 CPU cores here); the figures are a record of one run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

STAGES = ("data", "ingest", "classify", "wsod", "pgt", "retrain")
TRAINED = ("classify", "wsod", "retrain")


def _overrides(work: str, name: str, n_train: int, epochs: int) -> list[str]:
    return [
        f"run_root={work}",
        f"name={name}",
        f"synth.num_train={n_train}",
        "synth.num_test=40",
        f"classifier.epochs={epochs}",
        f"classifier.checkpoint_every={epochs}",
        "classifier.cache_images=false",
        "wsod.proposals=grid",
        "wsod.compare=[]",
        "wsod.train.steps=40",
        "wsod.train.checkpoint_every=40",
        "wsod.data.cache_images=false",
        "wsod.test.flip=false",
        "pgt.masks=false",
        "retrain.train.steps=40",
        "retrain.train.checkpoint_every=40",
        "retrain.train.cache_images=false",
        "retrain.compare_no_drop=false",
        "retrain.upper_bound=false",
        "wsis.enabled=false",
    ]


def run_memory(work: str, n_train: int, epochs: int) -> dict[str, Any]:
    """Run :data:`STAGES` on ``n_train`` training images (the classifier for ``epochs``);
    each trained stage's worker peak."""
    from ray_jobs._ray import init_ray
    from weaksam.config import load_config
    from weaksam.pipeline.core import run_stages
    from weaksam.pipeline.stages import STAGES as ALL

    cfg = load_config("configs/demo.yaml", _overrides(work, f"scale_{n_train}", n_train, epochs))
    t0 = time.time()
    reports = run_stages(cfg, ALL, ray_init=init_ray, only=list(STAGES))
    out: dict[str, Any] = {
        "train_images": n_train,
        "classifier_epochs": epochs,
        "seconds": round(time.time() - t0, 1),
    }
    for r in reports:
        if r.name in TRAINED:
            peaks = r.metrics.get("memory", {}).get("worker_peak_rss_mb", {})
            out[r.name] = {
                "action": r.action,
                "train_worker_peak_mb": peaks.get("RayTrainWorker"),
                "driver_peak_mb": round(r.peak_rss_mb, 1),
            }
    return out


def run_proposals(work: str, manifest: str, n_images: int, actors: int) -> dict[str, Any]:
    """The proposals job on the first ``n_images`` training images with ``actors`` actors."""
    from weaksam.config import load_config
    from weaksam.io.tables import read_classes, read_table, write_table
    from weaksam.proposals.job import generate_proposals

    rows = [r for r in read_table(manifest, "manifest").to_pylist() if r["split"] == "train"]
    subset = os.path.join(work, "sam_subset", "manifest.parquet")
    write_table(rows[:n_images], subset, "manifest", read_classes(manifest))
    cfg = load_config(
        "configs/demo.yaml",
        [
            f"proposals.num_actors={actors}",
            f"proposals.max_actors={actors}",
            "proposals.cpus_per_actor=0.5",  # two actors and the decode tasks fit 2 cores
            "proposals.use_gpu=false",
            "proposals.use_points=false",
        ],
    )
    out_dir = os.path.join(work, f"sam_{actors}")
    shutil.rmtree(out_dir, ignore_errors=True)
    t0 = time.time()
    stats = generate_proposals(subset, out_dir, cfg.sam, cfg.proposals)
    seconds = time.time() - t0
    return {
        "actors": actors,
        "images": stats.submitted,
        "seconds": round(seconds, 1),
        "images_per_s": round(stats.submitted / seconds, 3),
    }


def _mib(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base", type=int, default=360, help="training images at 1x (bench: 360)")
    p.add_argument("--factor", type=int, default=4)
    p.add_argument("--sam-images", type=int, default=120)
    p.add_argument("--work", default="/tmp/weaksam_scaling")
    p.add_argument("--out", default="")
    args = p.parse_args(argv)
    os.chdir(Path(__file__).resolve().parents[1])
    from ray_jobs._ray import init_ray
    from weaksam.runs import manifest_path

    init_ray()
    # the same number of training steps at both sizes (WSOD and retraining count steps; the
    # classifier counts epochs: factor x more of them at 1x): a process's heap also grows
    # with the steps it has run, which is not what is measured here
    memory = [
        run_memory(args.work, args.base, 2 * args.factor),
        run_memory(args.work, args.factor * args.base, 2),
    ]
    manifest = manifest_path(os.path.join(args.work, f"scale_{args.base}"))
    sam = [run_proposals(args.work, manifest, args.sam_images, k) for k in (1, 2)]
    ratio = sam[1]["images_per_s"] / sam[0]["images_per_s"]
    rows = []
    for stage in TRAINED:
        lo, hi = (m[stage]["train_worker_peak_mb"] for m in memory)
        growth = f"{(hi / lo - 1) * 100:+.1f} %" if lo and hi else "-"
        rows.append((stage, _mib(lo), _mib(hi), growth))
    from weaksam.eval.table import format_table

    print(
        format_table(
            rows,
            ["stage", f"{args.base} images MiB", f"{args.factor * args.base} images MiB", "growth"],
            title="peak RSS of one training worker (RayTrainWorker)",
        )
    )
    print(
        format_table(
            [
                (s["actors"], s["images"], f"{s['seconds']:.1f}", f"{s['images_per_s']:.3f}")
                for s in sam
            ],
            ["SAM actors", "images", "seconds", "images/s"],
            title=f"proposals, demo SAM on CPU (2 actors / 1 actor = {ratio:.2f}x)",
        )
    )
    import ray

    result = {
        "machine": f"{platform.node()} {os.cpu_count()} CPU cores, {platform.machine()}",
        "ray_cpus": ray.cluster_resources().get("CPU"),
        "memory": memory,
        "proposals": sam,
        "proposals_ratio_2_to_1": round(ratio, 3),
    }
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
