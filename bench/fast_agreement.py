"""The engine's fast path against its exact path on the benchmark's test images (CPU).

Renders the test split of ``configs/bench.yaml``'s synthetic dataset (the images ``make bench``
evaluates on), prompts the committed demo SAM with the grid plus ``--k`` points per object
(a stand-in for the peak points, sampled inside the ground-truth masks: this compares two
engines on the same prompts, it is not a weakly-supervised figure) and reports, per engine:
proposal recall@0.5 against the ground-truth boxes (greedy one-to-one, as the pipeline's
recall), proposals per image, seconds per image, and the box agreement with the exact path
(matched IoU >= 0.9, one to one within each proposal source; :func:`weaksam.sam.fast
.box_agreement`). Engines: ``exact`` (float32, the default), ``fast`` in float32 (SDPA,
batched encoder, fixed chunk shapes: the fast path as it runs on CPU) and ``fast`` in bf16
and in fp16 (the GPU's dtypes, computed on CPU: numerically what a GPU computes, up to
kernel order). Agreement is also given per proposal source (the grid's NMS is where low
precision flips choices between near-equal masks).

    python bench/fast_agreement.py [--images 120] [--k 2] [--out docs/fast_agreement.json]
    # a real SAM on a GPU (any config key with --set):
    python bench/fast_agreement.py --device cuda --set sam.model_type=vit_h \
        --set sam.checkpoint=/ckpt/sam_vit_h_4b8939.pth

Issue 20's bar: agreement >= 0.98 and recall@0.5 within 0.005 of the exact path's.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from weaksam.config import load_config
from weaksam.data.synth.scene import image_rng, render_shapes_image
from weaksam.eval.recall import greedy_match_ious
from weaksam.eval.table import format_table
from weaksam.geometry.boxes import box_iou, mask_to_box
from weaksam.sam.build import SamConfig, build_sam
from weaksam.sam.engine import SamPromptEngine, prompt_embedding
from weaksam.sam.fast import agreement_summary, box_agreement


def _test_images(cfg: Any, n: int, k: int) -> list[dict[str, Any]]:
    out = []
    for i in range(min(n, cfg.synth.num_test)):
        s = render_shapes_image(image_rng(cfg.synth.seed, "test", i), cfg.synth)
        rng = np.random.default_rng(i)
        pts, cls = [], []
        for m, c in zip(s.masks, s.classes, strict=True):
            ys, xs = np.nonzero(m)
            pick = rng.integers(0, xs.size, size=min(k, xs.size))
            pts += [(xs[j] + 0.5, ys[j] + 0.5) for j in pick]
            cls += [int(c)] * len(pick)
        gt = np.stack([mask_to_box(m) for m in s.masks]).astype(np.float32)
        out.append(
            {
                "image": s.image,
                "points": np.asarray(pts, np.float32).reshape(-1, 2),
                "classes": np.asarray(cls, np.int64),
                "gt": gt,
            }
        )
    return out


def run(engine: SamPromptEngine, items: list[dict[str, Any]], batch: int) -> dict[str, Any]:
    results, t0 = [], time.process_time()
    for s in range(0, len(items), batch):
        chunk = items[s : s + batch]
        embs = engine.embed_images([it["image"] for it in chunk])
        for emb, it in zip(embs, chunk, strict=True):
            kinds = ["fine"] * len(it["points"])
            results.append(prompt_embedding(engine, emb, it["points"], it["classes"], kinds))
    cpu = time.process_time() - t0
    matched = np.concatenate(
        [
            greedy_match_ious(box_iou(it["gt"], r.boxes))
            for it, r in zip(items, results, strict=True)
        ]
    )
    return {
        "recall50": float((matched >= np.float32(0.5)).mean()),
        "proposals_per_image": float(np.mean([len(r) for r in results])),
        "cpu_s_per_image": cpu / len(items),
        "results": results,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    p.add_argument("--config", default="configs/bench.yaml")
    p.add_argument("--images", type=int, default=120)
    p.add_argument("--k", type=int, default=2, help="stand-in points per object")
    p.add_argument("--encoder-batch", type=int, default=4)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu", help="cpu | cuda")
    p.add_argument("--set", action="append", default=[], help="config override key=value")
    p.add_argument("--out", default="")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    cfg = load_config(a.config, a.set)
    items = _test_images(cfg, a.images, a.k)
    ecfg = cfg.proposals.engine
    fast_cfg = replace(ecfg, precision="fast", encoder_batch=a.encoder_batch)
    sam_cfg = SamConfig(
        model_type=cfg.sam.model_type, checkpoint=cfg.sam.checkpoint, device=a.device
    )
    engines = {
        "exact": (SamPromptEngine(build_sam(sam_cfg), ecfg), 1),
        "fast fp32": (SamPromptEngine(build_sam(sam_cfg), fast_cfg), a.encoder_batch),
        "fast bf16": (
            SamPromptEngine(build_sam(sam_cfg), fast_cfg, compute_dtype=torch.bfloat16),
            a.encoder_batch,
        ),
        "fast fp16": (
            SamPromptEngine(build_sam(sam_cfg), fast_cfg, compute_dtype=torch.float16),
            a.encoder_batch,
        ),
    }
    out: dict[str, Any] = {"config": a.config, "images": len(items), "k": a.k, "engines": {}}
    ref = None
    rows = []
    for name, (engine, batch) in engines.items():
        res = run(engine, items, batch)
        results = res.pop("results")
        if ref is None:
            ref = results
        pairs = list(zip(ref, results, strict=True))
        res["agreement"] = agreement_summary(
            [box_agreement(r.boxes, f.boxes, r.sources, f.sources) for r, f in pairs]
        )
        sources = sorted({s for r, f in pairs for s in (*r.sources, *f.sources)})
        res["agreement_by_source"] = {
            src: agreement_summary(
                [
                    box_agreement(
                        r.boxes[np.asarray(r.sources) == src], f.boxes[np.asarray(f.sources) == src]
                    )
                    for r, f in pairs
                ]
            )["agreement"]
            for src in sources
        }
        out["engines"][name] = res
        rows.append(
            [
                name,
                f"{res['recall50']:.4f}",
                f"{res['recall50'] - out['engines']['exact']['recall50']:+.4f}",
                f"{res['proposals_per_image']:.1f}",
                f"{res['agreement']['agreement']:.4f}",
                f"{res['agreement_by_source'].get('grid', float('nan')):.4f}",
                f"{res['cpu_s_per_image']:.2f}",
            ]
        )
        print(json.dumps({name: res}), flush=True)
    print(
        format_table(
            rows,
            ["engine", "recall@0.5", "vs exact", "props/img", "agreement", "grid", "CPU s/img"],
            title=f"bench test split, first {len(items)} images, {a.k} points per object",
        )
    )
    if a.out:
        with open(a.out, "w") as f:
            json.dump(out, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
