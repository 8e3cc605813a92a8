"""The RoI-drop audit (weaksam/detection/drop_audit.py): golden counts on hand-made RoIs, PGT
correctness against the ground truth, and RoI sampling on a tiny Faster R-CNN."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from weaksam.detection.config import DetectorModelConfig
from weaksam.detection.data import read_pgt_samples, to_model_inputs
from weaksam.detection.drop_audit import audit_rows, correct_boxes, foreground_rois
from weaksam.detection.model import build_detector
from weaksam.runs import manifest_path


def test_correct_boxes_needs_iou_and_class() -> None:
    gt = [[0, 0, 10, 10], [20, 20, 40, 40]]
    boxes = [[0, 0, 10, 10], [0, 0, 10, 10], [20, 20, 30, 30], [0, 0, 10, 4]]
    # right; wrong class; IoU 0.25 with the second; IoU 0.4 with the first
    assert correct_boxes(boxes, [1, 2, 2, 1], gt, [1, 2]).tolist() == [True, False, False, False]
    assert correct_boxes(boxes, [1, 1, 1, 1], [], []).tolist() == [False] * 4
    assert correct_boxes(np.zeros((0, 4)), [], gt, [1, 2]).shape == (0,)


def test_audit_rows_golden() -> None:
    correct = [True, True, False, False, True, False]
    ce = [5.0, 0.1, 5.0, 5.0, 3.5, 0.2]
    l1 = [5.0, 5.0, 5.0, 0.5, 3.5, 0.1]
    four, three = audit_rows(correct, ce, l1, [(4.0, 4.0), (3.0, 3.0)])
    # 4 / 4: over cls RoIs 0, 2, 3; over reg 0, 1, 2; both 0 (right box) and 2 (wrong box)
    assert four == {
        "thresh_cls": 4.0,
        "thresh_reg": 4.0,
        "foreground": 6,
        "over_cls": 3,
        "over_reg": 3,
        "over_both": 2,
        "removed_wrong": 1,
        "removed_correct": 1,
        "wrong_share": 0.5,
        "base_wrong_share": 0.5,
        "recall_wrong": pytest.approx(1 / 3),
    }
    # 3 / 3 adds RoI 4 (right box): 1 of 3 removed is wrong
    assert three["over_both"] == 3 and three["wrong_share"] == pytest.approx(1 / 3)
    empty = audit_rows([], [], [], [(1.0, 1.0)])[0]
    assert empty["over_both"] == 0 and empty["wrong_share"] is None
    with pytest.raises(ValueError, match="differ in length"):
        audit_rows([True], [1.0, 2.0], [1.0], [(1.0, 1.0)])


def test_foreground_rois_on_a_tiny_detector(det_run: str, tiny_model: DetectorModelConfig) -> None:
    torch.manual_seed(0)
    model = build_detector(tiny_model, 6, masks=False)
    samples, _ = read_pgt_samples(manifest_path(det_run), f"{det_run}/pgt/pgt.parquet", "train")
    images, targets = to_model_inputs([(s, False) for s in samples[:3]], False)
    fg = foreground_rois(model, images, targets)
    n = len(fg.image)
    assert n > 0 and fg.target.shape == fg.ce.shape == fg.l1.shape == (n,)
    assert set(fg.image.tolist()) <= {0, 1, 2}
    for i, t in zip(fg.image, fg.target, strict=True):
        assert 0 <= t < len(samples[i])  # a PGT box of that image
    assert (fg.ce >= 0).all() and (fg.l1 >= 0).all()
    # the PGT boxes themselves are among the proposals, so every image has foreground RoIs
    assert set(fg.image.tolist()) == {0, 1, 2}
    assert not model.training


def test_audit_script_end_to_end(tmp_path: Path, curve_run: str, bench_script: Any) -> None:
    """bench/roi_drop_audit.py on a run with two kept checkpoints: a row per (step, pair), the
    PGT (made from the ground truth in this fixture) all right, so no wrong-box RoI."""
    mod = bench_script("roi_drop_audit")
    out = tmp_path / "audit.json"
    assert mod.main(["--run", curve_run, "--pairs", "4:4", "0:0", "--out", str(out)]) == 0
    saved = json.loads(out.read_text())
    assert [(r["step"], r["thresh_cls"]) for r in saved["rows"]] == [
        (2, 4.0),
        (2, 0.0),
        (4, 4.0),
        (4, 0.0),
    ]
    assert saved["pgt_boxes"] == saved["right"] > 0
    for r in saved["rows"]:
        assert r["foreground"] > 0 and r["removed_wrong"] == 0 and r["base_wrong_share"] == 0.0
    zero = saved["rows"][1]  # thresholds 0 / 0: every RoI with both losses > 0
    assert zero["over_both"] == zero["removed_correct"] > 0
    assert mod.main(["--run", str(tmp_path / "none")]) == 2
