"""Sweep ``peaks.bilateral`` (colour bandwidth x power) on held-out images: point precision.

Tune on images no dataset config uses: the demo backbone's pre-training pool (seed 1000) has
ground-truth masks that no weakly supervised run reads, so its run folder (classifier with its
own head, manifest) is the tuning set and the demo / bench images stay the check.

    python bench/tune_bilateral.py --run runs/demo_backbone_hires --images 120 \\
        [--config configs/demo.yaml] [--sigma-color 0.03 0.05 0.07 0.1] [--power 3 5 8 12]

The first ``--images`` images of the run's ``train`` split (with their labels) and of its
``test`` split (with the classifier's predicted classes, as the peaks stage does) are mapped
once, without the refinement; each setting then refines the same maps and extracts points
with the config's peak rules. Prints one row per setting (per-class and pooled precision,
points) and the unrefined row; writes JSON with ``--out``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from collections import defaultdict
from typing import Any

import numpy as np
import torch

from weaksam.cam.bilateral import bilateral_kernel, bilateral_refine
from weaksam.cam.extractor import points_from_maps
from weaksam.cam.maps import ClassMaps, compute_class_maps
from weaksam.cam.metrics import point_hits
from weaksam.cam.training import load_classifier
from weaksam.config import load_config
from weaksam.data.imageio import load_image
from weaksam.eval.table import format_table
from weaksam.io.rle import decode_masks
from weaksam.io.tables import read_table

Setting = tuple[float, float] | None  # (sigma_color, power); None: no refinement


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run", required=True, help="run folder with classify/ and ingest/")
    p.add_argument("--config", default="configs/demo.yaml", help="peak rules and bilateral side")
    p.add_argument("--images", type=int, default=120, help="per split")
    p.add_argument("--sigma-color", type=float, nargs="+", default=[0.03, 0.05, 0.07, 0.1])
    p.add_argument("--power", type=float, nargs="+", default=[3.0, 5.0, 8.0, 12.0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    model, ccfg, names = load_classifier(os.path.join(a.run, "classify", "classifier.pt"))
    peaks = load_config(a.config).peaks
    bil = peaks.bilateral
    plain = dataclasses.replace(peaks, bilateral=dataclasses.replace(bil, enabled=False))
    table = read_table(os.path.join(a.run, "ingest", "manifest.parquet"), "manifest")
    rows = [r for r in table.to_pylist() if r["error"] is None]
    rows = [r for s in ("train", "test") for r in [r for r in rows if r["split"] == s][: a.images]]
    settings: list[Setting] = [None] + [(c, g) for c in a.sigma_color for g in a.power]
    hits: dict[tuple[Setting, str], list[int]] = defaultdict(lambda: [0, 0])
    t0 = time.perf_counter()
    for i, r in enumerate(rows):
        image = load_image(str(r["path"]))
        h, w = image.shape[:2]
        classes = r["labels"] if r["split"] == "train" else None
        maps = compute_class_maps(model, image, ccfg.input_size, plain, classes)
        masks = decode_masks(r["gt_masks"] or [], h, w)
        kernels: dict[float, tuple[torch.Tensor, tuple[int, int]]] = {}
        for s in settings:
            refined = maps.maps
            if s is not None:
                if s[0] not in kernels:
                    kernels[s[0]] = bilateral_kernel(image, bil.side, s[0], bil.sigma_space)
                k, grid = kernels[s[0]]
                refined = {kind: bilateral_refine(m, k, grid, s[1]) for kind, m in refined.items()}
            pts = points_from_maps(ClassMaps(maps.classes, refined, maps.probs), plain, h, w)
            xy = np.asarray(pts["points"], np.float32).reshape(-1, 2)
            pc = np.asarray(pts["point_classes"], np.int64)
            hit, _ = point_hits(xy, pc, masks, r["gt_classes"] or [])
            for c, ok in zip(pc.tolist(), hit.tolist(), strict=True):
                for key in (names[c], r["split"], "all"):
                    hits[(s, key)][0] += int(ok)
                    hits[(s, key)][1] += 1
        if (i + 1) % 20 == 0:
            print(f"{i + 1}/{len(rows)} images, {time.perf_counter() - t0:.0f} s", flush=True)

    def prec(s: Setting, key: str) -> float:
        n_hit, n = hits[(s, key)]
        return n_hit / n if n else float("nan")

    cols = [*names, "train", "test", "all"]
    out: list[dict[str, Any]] = []
    for s in settings:
        row = {"sigma_color": s[0] if s else None, "power": s[1] if s else None}
        row.update({k: prec(s, k) for k in cols} | {"points": hits[(s, "all")][1]})
        out.append(row)
    title = (
        f"point precision, {len(rows)} images of {a.run} (sigma_space {bil.sigma_space}, "
        f"side {bil.side}; {time.perf_counter() - t0:.0f} s)"
    )
    print(format_table([list(r.values()) for r in out], list(out[0]), title=title))
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"run": a.run, "images": len(rows), "rows": out}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
