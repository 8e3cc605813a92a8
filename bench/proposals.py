"""Our SAM prompting engine vs the reference way of doing the same work, in one run.

Reference (as WeakSAM's code does it): segment-anything's ``SamAutomaticMaskGenerator`` with
WeakSAM's settings (32×32 grid, 64 points per batch, predicted-IoU and stability thresholds
0.3, box NMS 0.3, no crops) for the grid, then one ``SamPredictor.predict`` call per peak point
and per class (multimask, keeping ``masks[1:]``), all after one ``set_image``. Ours:
``SamPromptEngine.generate`` with the same settings from one encoder pass.

    python bench/proposals.py [--images 8] [--checkpoint builtin] [--points-per-side 32]
        [--threads 1] [--rounds 1] [--out docs/bench_proposals.json]
    # on a CUDA machine, a randomly initialised vit_h on 500-px images (weights do not change
    # the cost; thresholds at 0 so every mask survives, the worst case for post-processing):
    python bench/proposals.py --device cuda --model vit_h --checkpoint "" --size 500 \
        --thresholds 0

Prompts: the peak points of a run's points table when ``--points`` is given, else, as a stand-in
for timing only, ``--k`` points per image sampled inside ground-truth masks (class = the
object's class). Reports images/s of each path, the ratio, peak RSS of each path (measured in a
fresh subprocess each) and whether the outputs agree (same number of boxes, each within 1 px).
On a shared machine, wall-clock seconds follow the load; the CPU seconds of each path (process
time) follow it much less, and ``--rounds N`` alternates the two paths N times and pools their
per-image times so both see the same load.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from typing import Any

import numpy as np


def _load_images(n: int, seed: int, k: int, size: int) -> list[dict[str, Any]]:
    from weaksam.config import SynthConfig
    from weaksam.data.synth.scene import image_rng, render_shapes_image

    cfg = SynthConfig(image_size=size)
    out = []
    for i in range(n):
        s = render_shapes_image(image_rng(seed, "bench", i), cfg)
        rng = np.random.default_rng(i)
        pts, cls = [], []
        for m, c in zip(s.masks, s.classes, strict=True):
            ys, xs = np.nonzero(m)
            pick = rng.integers(0, xs.size, size=min(k, xs.size))
            pts += [(xs[j] + 0.5, ys[j] + 0.5) for j in pick]
            cls += [int(c)] * len(pick)
        out.append(
            {"image": s.image, "points": np.asarray(pts, np.float32), "classes": np.asarray(cls)}
        )
    return out


def _reference(sam: Any, item: dict[str, Any], args: argparse.Namespace) -> np.ndarray:
    from segment_anything import SamAutomaticMaskGenerator, SamPredictor

    amg = SamAutomaticMaskGenerator(
        sam,
        points_per_side=args.points_per_side,
        points_per_batch=64,
        pred_iou_thresh=args.thresholds,
        stability_score_thresh=args.thresholds,
        stability_score_offset=1.0,
        box_nms_thresh=0.3,
        crop_n_layers=0,
        min_mask_region_area=0,
    )
    # empty masks (area 0) are no proposals: the engine drops them (keep_empty=False), as it
    # drops empty point masks below; AMG keeps them only when the stability filter is off
    boxes = [np.asarray(m["bbox"], np.float32) for m in amg.generate(item["image"]) if m["area"]]
    grid = np.asarray(boxes, np.float32).reshape(-1, 4)
    grid[:, 2:] += grid[:, :2] + 1  # XYWH (inclusive) -> continuous XYXY
    pred = SamPredictor(sam)
    pred.set_image(item["image"])
    out = [grid]
    for p in item["points"]:
        masks, _, _ = pred.predict(
            point_coords=p[None], point_labels=np.ones(1), multimask_output=True
        )
        out.append(_mask_boxes(masks[1:]))
    for c in np.unique(item["classes"]):
        pts = item["points"][item["classes"] == c]
        masks, _, _ = pred.predict(
            point_coords=pts, point_labels=np.ones(len(pts)), multimask_output=True
        )
        out.append(_mask_boxes(masks[1:]))
    return np.concatenate(out)


def _mask_boxes(masks: np.ndarray) -> np.ndarray:
    from weaksam.geometry.boxes import mask_to_box

    boxes = np.stack([mask_to_box(m) for m in masks])
    return boxes[(boxes[:, 2] > boxes[:, 0])]


def _ours(engine: Any, item: dict[str, Any]) -> np.ndarray:
    res = engine.generate(
        item["image"],
        points=item["points"],
        point_classes=item["classes"],
        point_kinds=["peak"] * len(item["points"]),
    )
    return np.asarray(res.boxes, np.float32)


def _run_path(path: str, args: argparse.Namespace) -> dict[str, Any]:
    import resource

    import torch

    from weaksam.sam.build import SamConfig, build_sam
    from weaksam.sam.engine import EngineConfig, SamPromptEngine

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)  # the same random weights in both paths when --checkpoint ""
    cuda = args.device == "cuda"
    scfg = SamConfig(model_type=args.model, checkpoint=args.checkpoint, device=args.device)
    sam = build_sam(scfg)
    items = _load_images(args.images, args.seed, args.k, args.size)
    ecfg = EngineConfig(
        points_per_side=args.points_per_side,
        pred_iou_thresh=args.thresholds,
        stability_score_thresh=args.thresholds,
    )
    engine = SamPromptEngine(sam, ecfg)
    fn = (
        (lambda it: _reference(sam, it, args))
        if path == "reference"
        else (lambda it: _ours(engine, it))
    )
    fn(items[0])  # warm-up
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times, cpu_times, boxes = [], [], []
    for it in items:
        t0, c0 = time.perf_counter(), time.process_time()
        b = fn(it)
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        cpu_times.append(time.process_time() - c0)
        boxes.append(b.tolist())
    return {
        "seconds_per_image": times,
        "cpu_seconds_per_image": cpu_times,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
        "device": torch.cuda.get_device_name(0) if cuda else "CPU",
        "boxes": boxes,
    }


def _agree(a: list[list[float]], b: list[list[float]]) -> bool:
    x, y = np.asarray(a, np.float32).reshape(-1, 4), np.asarray(b, np.float32).reshape(-1, 4)
    if len(x) != len(y):
        return False
    key = lambda z: np.lexsort(z.T[::-1])  # noqa: E731 - order-free comparison
    return bool(np.all(np.abs(x[key(x)] - y[key(y)]) <= 1.0))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", type=int, default=8)
    p.add_argument("--checkpoint", default="builtin")
    p.add_argument("--points-per-side", type=int, default=32)
    p.add_argument("--k", type=int, default=2, help="stand-in peak points per object")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--model", default="demo", help="demo | vit_b | vit_l | vit_h")
    p.add_argument("--device", default="cpu", help="cpu | cuda")
    p.add_argument("--size", type=int, default=256, help="image side (shapes images)")
    p.add_argument("--thresholds", type=float, default=0.3, help="pred-IoU and stability")
    p.add_argument("--rounds", type=int, default=1, help="alternate the two paths this often")
    p.add_argument("--out", default="")
    p.add_argument("--path", choices=("ours", "reference"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.path:  # child process: one path, result on stdout
        print(json.dumps(_run_path(args.path, args)))
        return 0
    load_start = os.getloadavg()[0]
    runs: dict[str, list[dict[str, Any]]] = {"reference": [], "ours": []}
    for _ in range(args.rounds):
        for path in ("reference", "ours"):
            cmd = [sys.executable, __file__, "--path", path, *sys.argv[1:]]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            runs[path].append(json.loads(out.strip().splitlines()[-1]))
    ref, ours = runs["reference"][0], runs["ours"][0]

    def median(path: str, key: str) -> float:
        return statistics.median(t for r in runs[path] for t in r[key])

    med_ref = median("reference", "seconds_per_image")
    med_ours = median("ours", "seconds_per_image")
    cpu_ref = median("reference", "cpu_seconds_per_image")
    cpu_ours = median("ours", "cpu_seconds_per_image")
    agree = [
        _agree(a, b)
        for r, o in zip(runs["reference"], runs["ours"], strict=True)
        for a, b in zip(r["boxes"], o["boxes"], strict=True)
    ]
    summary = {
        "machine": (
            f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, CPU only"
            if args.device == "cpu"
            else ours["device"]
        ),
        "model": args.model,
        "image_side": args.size,
        "threads": args.threads,
        "images": args.images,
        "rounds": args.rounds,
        "load_average_1min_start_end": [round(load_start, 1), round(os.getloadavg()[0], 1)],
        "points_per_side": args.points_per_side,
        "checkpoint": args.checkpoint,
        "reference_s_per_image_median": round(med_ref, 4),
        "ours_s_per_image_median": round(med_ours, 4),
        "reference_images_per_s": round(1 / med_ref, 3),
        "ours_images_per_s": round(1 / med_ours, 3),
        "speedup": round(med_ref / med_ours, 2),
        "reference_cpu_s_per_image_median": round(cpu_ref, 4),
        "ours_cpu_s_per_image_median": round(cpu_ours, 4),
        "speedup_cpu_time": round(cpu_ref / cpu_ours, 2),
        "reference_peak_rss_mb": round(max(r["peak_rss_mb"] for r in runs["reference"])),
        "ours_peak_rss_mb": round(max(r["peak_rss_mb"] for r in runs["ours"])),
        "reference_peak_gpu_mb": ref["peak_gpu_mb"] and round(ref["peak_gpu_mb"]),
        "ours_peak_gpu_mb": ours["peak_gpu_mb"] and round(ours["peak_gpu_mb"]),
        "proposals_per_image_ours": round(float(np.mean([len(b) for b in ours["boxes"]])), 1),
        "outputs_agree": f"{sum(agree)}/{len(agree)} images"
        + (f" ({args.rounds} rounds)" if args.rounds > 1 else ""),
    }
    from weaksam.eval.table import format_table

    print(format_table([[k, v] for k, v in summary.items()], ["proposals benchmark", "value"]))
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(summary, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
