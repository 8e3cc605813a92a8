"""Sweep ``peaks.bilateral`` (colour bandwidth x power) on held-out images: point precision.

Tune on images no dataset config uses: the demo backbone's pre-training pool (seed 1000) has
ground-truth masks that no weakly supervised run reads, so its run folder (classifier with its
own head, manifest) is the tuning set and the demo / bench images stay the check.

    python bench/tune_bilateral.py --run runs/demo_backbone_hires --images 120 \\
        [--config configs/demo.yaml] [--sigma-color 0.03 0.05 0.07 0.1] [--power 3 5 8 12]

The first ``--images`` images of the run's ``train`` split (with their labels) and of its
``test`` split (with the classifier's predicted classes, as the peaks stage does) are mapped
once, without the refinement; each setting then refines the same maps and extracts points
with the config's peak rules, scored by the peaks stage's own metric
(:func:`weaksam.cam.stage.evaluate_points`). Prints one row per setting (per-class and pooled
precision, points) and the unrefined row; writes JSON with ``--out``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from typing import Any

import torch

from weaksam.cam.bilateral import bilateral_kernel, bilateral_refine
from weaksam.cam.extractor import points_from_maps
from weaksam.cam.maps import ClassMaps, compute_class_maps
from weaksam.cam.stage import evaluate_points
from weaksam.cam.training import load_classifier
from weaksam.config import load_config
from weaksam.data.imageio import load_image
from weaksam.eval.table import format_table
from weaksam.io.tables import read_table
from weaksam.runs import manifest_path

Setting = tuple[float, float] | None  # (sigma_color, power); None: no refinement
SPLITS = ("train", "test")


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
    manifest = manifest_path(a.run)
    rows = [r for r in read_table(manifest, "manifest").to_pylist() if r["error"] is None]
    rows = [r for s in SPLITS for r in [r for r in rows if r["split"] == s][: a.images]]
    settings: list[Setting] = [None] + [(c, g) for c in a.sigma_color for g in a.power]
    points: dict[Setting, list[dict[str, Any]]] = {s: [] for s in settings}
    t0 = time.perf_counter()
    for i, r in enumerate(rows):
        image = load_image(str(r["path"]))
        h, w = image.shape[:2]
        classes = r["labels"] if r["split"] == "train" else None
        maps = compute_class_maps(model, image, ccfg.input_size, plain, classes)
        kernels: dict[float, tuple[torch.Tensor, tuple[int, int]]] = {}
        for s in settings:
            refined = maps.maps
            if s is not None:
                if s[0] not in kernels:
                    kernels[s[0]] = bilateral_kernel(image, bil.side, s[0], bil.sigma_space)
                k, grid = kernels[s[0]]
                refined = {kind: bilateral_refine(m, k, grid, s[1]) for kind, m in refined.items()}
            pts = points_from_maps(ClassMaps(maps.classes, refined, maps.probs), plain, h, w)
            points[s].append({"image_id": r["image_id"], "error": None, **pts})
        if (i + 1) % 20 == 0:
            print(f"{i + 1}/{len(rows)} images, {time.perf_counter() - t0:.0f} s", flush=True)

    out: list[dict[str, Any]] = []
    for s in settings:  # the peaks stage's own metric (reads the GT masks)
        m = evaluate_points(points[s], manifest, plain.map_kinds)
        row: dict[str, Any] = {"sigma_color": s[0] if s else None, "power": s[1] if s else None}
        row.update({n: m["point_precision_by_class"].get(n, float("nan")) for n in names})
        row.update({sp: m["point_precision_by_split"].get(sp, float("nan")) for sp in SPLITS})
        row["all"] = m["point_precision"]
        row["points"] = sum(len(p["point_classes"]) for p in points[s])
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
