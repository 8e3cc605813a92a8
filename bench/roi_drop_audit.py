"""Whom RoI drop removes on a finished run: dropped RoIs against the ground truth (diagnostic).

    python bench/roi_drop_audit.py --run runs/bench [--variant drop] [--pairs 4:4 3:3 2:2 1:1]
        [--out docs/roi_drop_audit.json]
    python bench/roi_drop_audit.py --show docs/roi_drop_audit.json

For each kept checkpoint of the retrain stage's variant (the bench keeps its last two), samples
RoIs on every training image against its PGT boxes as a training step does and sets the
foreground RoIs over each threshold pair against whether their PGT box is right (IoU >= 0.5
with a ground-truth box of its class): :mod:`weaksam.detection.drop_audit`. The ground truth is
read here, after training, for this measurement only; nothing chooses a setting from it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from weaksam.config import load_config
from weaksam.detection.curve import checkpoint_states, variant_runs
from weaksam.detection.data import read_pgt_samples, to_model_inputs
from weaksam.detection.drop_audit import audit_rows, correct_boxes, foreground_rois
from weaksam.detection.inference import export_checkpoint, load_detector
from weaksam.detection.model import is_rcnn
from weaksam.eval.table import format_table
from weaksam.io.tables import read_table
from weaksam.runs import manifest_path, pgt_path, resolved_config_path


def parse_pair(text: str) -> tuple[float, float]:
    """``"CLS:REG"`` → ``(CLS, REG)``."""
    cls, sep, reg = text.partition(":")
    if not sep:
        raise argparse.ArgumentTypeError(f"a pair is CLS:REG, got {text!r}")
    return float(cls), float(reg)


def audit_table(rows: Sequence[Mapping[str, Any]], title: str) -> str:
    """One row per (checkpoint step, threshold pair)."""

    def pct(v: float | None) -> str:
        return "-" if v is None else f"{100 * v:.1f} %"

    table = [
        [
            r["step"],
            f"{r['thresh_cls']:g} / {r['thresh_reg']:g}",
            r["foreground"],
            r["over_cls"],
            r["over_reg"],
            r["over_both"],
            pct(r["wrong_share"]),
            pct(r["base_wrong_share"]),
            pct(r["recall_wrong"]),
            r["removed_correct"],
        ]
        for r in rows
    ]
    head = ["step", "cls / reg", "fg RoIs", ">cls", ">reg", ">both"]
    head += [
        "wrong PGT of >both",
        "wrong PGT of all fg",
        "wrong-PGT RoIs caught",
        "correct removed",
    ]
    return format_table(table, head, title=title)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    p.add_argument("--run", default="runs/bench")
    p.add_argument("--variant", default="drop", help="the retrain variant whose checkpoints")
    p.add_argument(
        "--pairs",
        type=parse_pair,
        nargs="+",
        default=[(4.0, 4.0), (3.0, 3.0), (2.0, 2.0), (1.0, 1.0)],
    )
    p.add_argument("--batch", type=int, default=4, help="images per sampling call")
    p.add_argument("--seed", type=int, default=0, help="the RoI sampler's seed")
    p.add_argument("--out", default="")
    p.add_argument("--show", default="", help="print the table of a saved --out file and stop")
    a = p.parse_args(argv)
    if a.show:
        with open(a.show) as f:
            saved = json.load(f)
        print(audit_table(saved["rows"], saved["title"]))
        return 0
    if not os.path.exists(resolved_config_path(a.run)):
        print(f"error: no run at {a.run}", file=sys.stderr)
        return 2
    cfg = load_config(resolved_config_path(a.run))
    split = cfg.data.splits[0]
    manifest = manifest_path(a.run)
    samples, left_out = read_pgt_samples(manifest, pgt_path(a.run), split)
    gt = {
        str(r["image_id"]): r
        for r in read_table(
            manifest, "manifest", columns=["image_id", "split", "gt_boxes", "gt_classes"]
        ).to_pylist()
        if r["split"] == split
    }
    correct = [
        correct_boxes(
            s.boxes, s.classes, gt[s.image_id]["gt_boxes"] or [], gt[s.image_id]["gt_classes"] or []
        )
        for s in samples
    ]
    boxes = sum(len(c) for c in correct)
    right = sum(int(c.sum()) for c in correct)
    print(
        f"{len(samples)} training images with PGT ({left_out} left out): {boxes} PGT boxes, "
        f"{right} right (IoU >= 0.5 with a ground-truth box of their class), {boxes - right} wrong"
    )
    folder = variant_runs(os.path.join(a.run, "retrain"))[a.variant]
    rows: list[dict[str, Any]] = []
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="audit_") as work:
        for step, state_file in checkpoint_states(folder):
            state = torch.load(state_file, map_location="cpu", weights_only=True)
            model, _ = load_detector(export_checkpoint(state, os.path.join(work, "m.pt")))
            if not is_rcnn(model):
                print(f"error: {a.variant} is not an R-CNN (RoI drop is an R-CNN rule)")
                return 2
            torch.manual_seed(a.seed)
            ok, ce, l1 = [], [], []
            for i in range(0, len(samples), a.batch):
                chunk = samples[i : i + a.batch]
                images, targets = to_model_inputs([(s, False) for s in chunk], False)
                fg = foreground_rois(model, images, targets)
                pairs = zip(fg.image, fg.target, strict=True)
                ok.append(np.array([correct[i + j][t] for j, t in pairs], dtype=bool))
                ce.append(fg.ce)
                l1.append(fg.l1)
            found = audit_rows(np.concatenate(ok), np.concatenate(ce), np.concatenate(l1), a.pairs)
            rows.extend({"step": step, **r} for r in found)
            print(f"[{time.time() - t0:5.0f} s] step {step}: {found[0]['foreground']} fg RoIs")
    title = (
        f"RoI drop on {a.run} ({a.variant}'s checkpoints): foreground RoIs of the {split} "
        "split over the thresholds, and their PGT boxes against the ground truth"
    )
    print(audit_table(rows, title))
    if a.out:
        with open(a.out, "w") as f:
            json.dump(
                {"title": title, "rows": rows, "pgt_boxes": boxes, "right": right}, f, indent=1
            )
        print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
