"""Time WeakSAM's prompt load on a CUDA GPU with a randomly initialised SAM (default vit_h).

Weights do not change the cost, so no checkpoint is needed. Per image: one encoder pass, the
32×32 grid through the decoder in chunks, plus ``--points`` single-point and ``--classes``
class-wise prompts (WeakSAM's peak prompts), in fp32 and bf16 autocast. Thresholds are set to
0 so every grid mask survives the filters (the worst case for post-processing).

    python bench/gpu_proposals.py [--model vit_h] [--images 20] [--points 40] [--classes 3]

Prints images/s per GPU for each precision and the peak GPU memory; writes JSON with --out.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch

from weaksam.sam.build import build_sam_model
from weaksam.sam.engine import EngineConfig, SamPromptEngine


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="vit_h")
    p.add_argument("--images", type=int, default=20)
    p.add_argument("--size", type=int, default=500, help="image side (VOC images are ~500 px)")
    p.add_argument("--points", type=int, default=40, help="peak points per image")
    p.add_argument("--classes", type=int, default=3, help="classes per image (class-wise prompts)")
    p.add_argument("--points-per-batch", type=int, default=256)
    p.add_argument("--out", default="")
    args = p.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: this benchmark needs a GPU")
        return 2
    torch.backends.cuda.matmul.allow_tf32 = True
    rng = np.random.default_rng(0)
    images = [
        rng.integers(0, 255, (args.size, args.size, 3), dtype=np.uint8) for _ in range(args.images)
    ]
    pts = [rng.uniform(0, args.size, (args.points, 2)).astype(np.float32) for _ in images]
    cls = [rng.integers(0, args.classes, args.points) for _ in images]
    model = build_sam_model(args.model).cuda().eval()
    cfg = EngineConfig(
        points_per_batch=args.points_per_batch, pred_iou_thresh=0.0, stability_score_thresh=0.0
    )
    results = {"model": args.model, "gpu": torch.cuda.get_device_name(0), "size": args.size}
    for dtype in ("none", "bf16"):
        engine = SamPromptEngine(model, cfg, autocast_dtype=dtype)
        engine.generate(images[0], pts[0], cls[0], ["fine"] * args.points)  # warm-up
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        times, counts = [], []
        for img, pt, c in zip(images, pts, cls, strict=True):
            t0 = time.perf_counter()
            res = engine.generate(img, pt, c, ["fine"] * args.points)
            torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
            counts.append(len(res))
        name = "fp32" if dtype == "none" else dtype
        results[name] = {
            "s_per_image_median": round(statistics.median(times), 4),
            "images_per_s": round(1 / statistics.median(times), 2),
            "proposals_per_image": round(float(np.mean(counts)), 1),
            "peak_gpu_mem_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2),
        }
        print(name, results[name])
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(results, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
