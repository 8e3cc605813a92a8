"""WeakSAM's prompt load on one GPU: the reference path, the exact engine and the fast engine.

One prepared run for the lent GPU (issue 20). Models are randomly initialised (weights do not
change the cost, so no checkpoint is needed): SAM ``vit_h`` and SAM 2.1 ``sam2.1_hiera_l`` by
default. Per image: one encoder pass, the 32×32 grid through the decoder in chunks of
``--points-per-batch``, ``--points`` single-point and ``--classes`` class-wise prompts.

Paths, on the same images and GPU:

- ``reference``: what WeakSAM's code does — the package's automatic mask generator
  (``SamAutomaticMaskGenerator`` / ``SAM2AutomaticMaskGenerator``, 64 points per batch, no
  crops) for the grid, then one ``SamPredictor.predict`` / ``SAM2ImagePredictor.predict`` per
  point and per class (multimask) after one ``set_image``;
- ``exact``: ``SamPromptEngine`` / ``Sam2PromptEngine`` with ``precision: exact`` (float32);
- ``fast``: ``precision: fast`` in fp16 (bf16 too with ``--fast-dtypes fp16 bf16``),
  ``encoder_batch`` images per encoder pass and, unless ``--no-compile``, ``torch.compile``
  (its warm-up is not timed). On the benchmark's test images with the demo SAM, bf16 agrees
  with the exact path on 0.954 of the proposals and fp16 on 0.993
  (``bench/fast_agreement.py``), hence fp16.

The reference path is slow (25.7 s per image for vit_h at threshold 0 on an H200): it is timed
on ``--reference-images`` images in each model's first setting only, unless
``--reference-all``.

Settings, in this order (the most wanted first; the run stops starting new ones after
``--budget-s`` seconds and writes the JSON after each one): per model, image size and
thresholds (WeakSAM's 0.3/0.3, and 0 — every grid mask survives, the worst case for
post-processing). Reports images/s per GPU (images / wall time of the whole set, after a
warm-up), the median seconds per image, proposals per image, peak GPU memory, and the fast
path's box agreement with the exact one (:func:`weaksam.sam.fast.box_agreement`; random
weights, so a check of the arithmetic, not of mask quality).

    python bench/gpu_proposals.py --out $OUT/gpu_proposals.json        # on the GPU machine
    python bench/gpu_proposals.py --device cpu --models demo --sizes 64 --images 2 \\
        --points 3 --reference-images 1 --points-per-side 4 --no-compile   # smoke test
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from weaksam.sam.build import SAM2_MODEL_TYPES, build_sam_model
from weaksam.sam.engine import EngineConfig, SamPromptEngine, prompt_embedding
from weaksam.sam.fast import agreement_summary, box_agreement

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}
Inputs = list[tuple[np.ndarray, np.ndarray, np.ndarray]]


def _inputs(n: int, size: int, points: int, classes: int, seed: int = 0) -> Inputs:
    rng = np.random.default_rng(seed)
    return [
        (
            rng.integers(0, 255, (size, size, 3), dtype=np.uint8),
            rng.uniform(0, size, (points, 2)).astype(np.float32),
            rng.integers(0, classes, points),
        )
        for _ in range(n)
    ]


def _build(model_type: str, device: str) -> Any:
    """A randomly initialised model, built directly on ``device`` (initialising vit_h's 636 M
    parameters on the CPU first would cost the GPU machine's minutes)."""
    torch.manual_seed(0)
    with torch.device(device):
        if model_type in SAM2_MODEL_TYPES:
            from weaksam.sam.sam2_build import build_sam2_model

            return build_sam2_model(model_type).eval()
        return build_sam_model(model_type).eval()


def _engine(model_type: str, model: Any, cfg: EngineConfig, dtype: torch.dtype | None) -> Any:
    if model_type in SAM2_MODEL_TYPES:
        from weaksam.sam.sam2_engine import Sam2PromptEngine

        autocast = {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, "none")
        return Sam2PromptEngine(model, cfg, autocast_dtype=autocast)
    return SamPromptEngine(model, cfg, compute_dtype=dtype)


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _reset_peak(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def _peak_gb(device: str) -> float | None:
    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if device == "cuda" else None


def run_engine(engine: Any, inputs: Inputs, device: str, batch: int) -> dict[str, Any]:
    """Time the engine on ``inputs`` (after one untimed warm-up batch): encoder passes of
    ``batch`` images (``embed_images``), then every image's prompts."""
    kinds = lambda p: ["fine"] * len(p)  # noqa: E731

    def one_batch(items: Inputs) -> list[Any]:
        embs = engine.embed_images([im for im, _, _ in items])
        return [
            prompt_embedding(engine, e, p, c, kinds(p))
            for e, (_, p, c) in zip(embs, items, strict=True)
        ]

    one_batch(inputs[:batch])  # warm-up (compiles on the fast path)
    _reset_peak(device)
    times, results = [], []
    t_all = time.perf_counter()
    for s in range(0, len(inputs), batch):
        t0 = time.perf_counter()
        out = one_batch(inputs[s : s + batch])
        _sync(device)
        dt = time.perf_counter() - t0
        times += [dt / len(out)] * len(out)
        results += out
    wall = time.perf_counter() - t_all
    return {
        "images_per_s": round(len(inputs) / wall, 3),
        "s_per_image_median": round(statistics.median(times), 4),
        "proposals_per_image": round(float(np.mean([len(r) for r in results])), 1),
        "peak_gpu_mem_gb": _peak_gb(device),
        "results": results,
    }


def run_reference(
    model_type: str, model: Any, inputs: Inputs, cfg: EngineConfig, device: str
) -> dict[str, Any]:
    """The reference way: the package's AMG for the grid, one predictor call per point and
    per class (``masks[1:]`` kept, as WeakSAM's code)."""
    generator: Any
    predictor: Any
    if model_type in SAM2_MODEL_TYPES:
        from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator as generator
        from sam2.sam2_image_predictor import SAM2ImagePredictor as predictor
    else:
        from segment_anything import SamAutomaticMaskGenerator as generator
        from segment_anything import SamPredictor as predictor
    amg = generator(
        model,
        points_per_side=cfg.points_per_side,
        points_per_batch=64,
        pred_iou_thresh=cfg.pred_iou_thresh,
        stability_score_thresh=cfg.stability_score_thresh,
        box_nms_thresh=cfg.box_nms_thresh,
        crop_n_layers=0,
        min_mask_region_area=0,
    )
    pred = predictor(model)

    def one(item: tuple[np.ndarray, np.ndarray, np.ndarray]) -> int:
        img, pts, cls = item
        n = len(amg.generate(img))
        pred.set_image(img)
        for p in pts:
            masks, _, _ = pred.predict(
                point_coords=p[None], point_labels=np.ones(1), multimask_output=True
            )
            n += len(masks) - 1
        for c in np.unique(cls):
            sel = pts[cls == c]
            masks, _, _ = pred.predict(
                point_coords=sel, point_labels=np.ones(len(sel)), multimask_output=True
            )
            n += len(masks) - 1
        return n

    with torch.inference_mode():
        one(inputs[0])  # warm-up
        _reset_peak(device)
        times, counts = [], []
        t_all = time.perf_counter()
        for item in inputs:
            t0 = time.perf_counter()
            counts.append(one(item))
            _sync(device)
            times.append(time.perf_counter() - t0)
        wall = time.perf_counter() - t_all
    return {
        "images_per_s": round(len(inputs) / wall, 3),
        "s_per_image_median": round(statistics.median(times), 4),
        "proposals_per_image": round(float(np.mean(counts)), 1),
        "peak_gpu_mem_gb": _peak_gb(device),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", default=["vit_h", "sam2.1_hiera_l"])
    p.add_argument("--sizes", nargs="+", type=int, default=[500, 1024])
    p.add_argument("--thresholds", nargs="+", type=float, default=[0.3, 0.0])
    p.add_argument("--images", type=int, default=32)
    p.add_argument("--reference-images", type=int, default=3, help="reference path (slow)")
    p.add_argument(
        "--reference-all",
        action="store_true",
        help="time the reference path in every setting (default: each model's first only)",
    )
    p.add_argument("--points", type=int, default=40, help="peak points per image")
    p.add_argument("--classes", type=int, default=3, help="classes per image")
    p.add_argument("--points-per-side", type=int, default=32)
    p.add_argument("--points-per-batch", type=int, default=256)
    p.add_argument("--encoder-batch", type=int, default=8)
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--fast-dtypes", nargs="+", choices=sorted(DTYPES), default=["fp16"])
    p.add_argument("--device", default="cuda")
    p.add_argument("--budget-s", type=float, default=480.0, help="start no setting after this")
    p.add_argument("--out", default="")
    args = p.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: run with --device cpu for a smoke test")
        return 2
    if args.device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    start = time.perf_counter()
    gpu = torch.cuda.get_device_name(0) if args.device == "cuda" else "CPU"
    report: dict[str, Any] = {"device": gpu, "args": vars(args), "runs": []}

    def save() -> None:
        if args.out:
            Path(args.out).write_text(json.dumps(report, indent=2))

    for model_type in args.models:
        exact_model = _build(model_type, args.device)
        base = EngineConfig(
            points_per_side=args.points_per_side, points_per_batch=args.points_per_batch
        )
        fast_cfg = replace(
            base, precision="fast", encoder_batch=args.encoder_batch, compile=not args.no_compile
        )
        exact = _engine(model_type, exact_model, base, None)
        fasts = {
            name: _engine(model_type, _build(model_type, args.device), fast_cfg, DTYPES[name])
            for name in args.fast_dtypes
        }
        for size in args.sizes:
            for thr in args.thresholds:
                if time.perf_counter() - start > args.budget_s:
                    report["stopped"] = f"budget of {args.budget_s:.0f} s spent"
                    save()
                    return 0
                inputs = _inputs(args.images, size, args.points, args.classes)
                t = {"pred_iou_thresh": thr, "stability_score_thresh": thr}
                exact.cfg = replace(base, **t)
                row: dict[str, Any] = {"model": model_type, "size": size, "thresholds": thr}
                first = size == args.sizes[0] and thr == args.thresholds[0]
                if first or args.reference_all:
                    row["reference"] = run_reference(
                        model_type,
                        exact_model,
                        inputs[: args.reference_images],
                        exact.cfg,
                        args.device,
                    )
                ex = run_engine(exact, inputs, args.device, 1)
                ex_results = ex.pop("results")
                row["exact"] = ex
                ref_ips = row["reference"]["images_per_s"] if "reference" in row else float("nan")
                row["exact_over_reference"] = round(ex["images_per_s"] / ref_ips, 2)
                for name, fast in fasts.items():
                    fast.cfg = replace(fast_cfg, **t)
                    fa = run_engine(fast, inputs, args.device, args.encoder_batch)
                    fa["agreement"] = agreement_summary(
                        [
                            box_agreement(a.boxes, b.boxes, a.sources, b.sources)
                            for a, b in zip(ex_results, fa.pop("results"), strict=True)
                        ]
                    )
                    fa["over_reference"] = round(fa["images_per_s"] / ref_ips, 2)
                    fa["over_exact"] = round(fa["images_per_s"] / ex["images_per_s"], 2)
                    row[f"fast_{name}"] = fa
                report["runs"].append(row)
                fast_txt = "  ".join(
                    f"fast {n} {row[f'fast_{n}']['images_per_s']:7.2f} "
                    f"({row[f'fast_{n}']['over_reference']}x ref, "
                    f"agree {row[f'fast_{n}']['agreement']['agreement']:.3f}, "
                    f"{row[f'fast_{n}']['peak_gpu_mem_gb']} GB)"
                    for n in fasts
                )
                print(
                    f"{model_type:>15} {size:>5}px thr {thr:<4} img/s: "
                    f"ref {ref_ips:7.2f}  exact {ex['images_per_s']:7.2f} "
                    f"({ex['peak_gpu_mem_gb']} GB)  {fast_txt}  "
                    f"props {ex['proposals_per_image']}  [{time.perf_counter() - start:.0f} s]",
                    flush=True,
                )
                save()
        del exact, fasts, exact_model
        if args.device == "cuda":
            torch.cuda.empty_cache()
    save()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
