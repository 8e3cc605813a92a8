"""Learning curves (weaksam/detection/curve.py, bench/learning_curve.py): every kept checkpoint
of a stage's variants, found through metrics.json, scored on the test split as the stage would."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from weaksam.detection.curve import checkpoint_states, stage_curves, variant_runs
from weaksam.detection.inference import DetectorBatchPredictor, export_checkpoint
from weaksam.detection.stage import evaluate_detections
from weaksam.io.tables import read_classes, read_table, write_table
from weaksam.runs import manifest_path, write_metrics

ROOT = Path(__file__).resolve().parents[2]


def test_checkpoint_states_by_step_from_the_state(curve_run: str) -> None:
    states = checkpoint_states(os.path.join(curve_run, "retrain", "ray_train", "drop-abc"))
    assert [s for s, _ in states] == [2, 4]
    assert states[0][1].endswith(os.path.join("checkpoint_b", "state.pt"))


def test_stage_curves_scores_each_checkpoint_as_the_stage(tmp_path: Path, curve_run: str) -> None:
    seen = []
    points = stage_curves(curve_run, "retrain", "test", str(tmp_path / "w"), progress=seen.append)
    assert [(p.variant, p.step) for p in points] == [
        ("drop", 2),
        ("drop", 4),
        ("upper_bound", 2),
        ("upper_bound", 4),
    ]
    assert seen == points
    # the same checkpoint, detected on every test image and evaluated independently
    manifest = manifest_path(curve_run)
    state_file = checkpoint_states(os.path.join(curve_run, "retrain", "ray_train", "drop-abc"))[1][
        1
    ]
    state = torch.load(state_file, weights_only=True)
    ckpt = export_checkpoint(state, str(tmp_path / "m.pt"))
    rows = [r for r in read_table(manifest).to_pylist() if r["split"] == "test"]
    batch = {"image_id": np.asarray([r["image_id"] for r in rows])}
    dets = DetectorBatchPredictor(ckpt, manifest=manifest, split="test")(batch).to_pylist()
    assert len(dets) == len(rows)
    path = str(tmp_path / "d.parquet")
    write_table(dets, path, "detections", read_classes(manifest))
    want = evaluate_detections(manifest, path, "test", masks=False)
    assert points[1].metrics == {"ap50_voc07": want["ap50_voc07"], "ap50_voc": want["ap50_voc"]}
    assert all(0.0 <= v <= 1.0 for p in points for v in p.metrics.values())


def test_stage_curves_errors(tmp_path: Path, curve_run: str) -> None:
    with pytest.raises(ValueError, match="no variant"):
        stage_curves(curve_run, "retrain", "test", str(tmp_path), variants=["nope"])
    stage = os.path.join(curve_run, "retrain")
    write_metrics(stage, {"variants": {"drop": {}}})  # an older stage: the one drop-* folder
    assert variant_runs(stage) == {"drop": os.path.join(stage, "ray_train", "drop-abc")}
    os.makedirs(os.path.join(stage, "ray_train", "drop-def"))
    with pytest.raises(ValueError, match="2 folders match drop-"):
        variant_runs(stage)


def test_curve_table_ratio_and_png(tmp_path: Path, bench_script: Any) -> None:
    mod = bench_script("learning_curve")
    points = [
        {"variant": "drop", "step": 100, "metrics": {"ap50_voc07": 0.3, "ap50_voc": 0.31}},
        {"variant": "drop", "step": 200, "metrics": {"ap50_voc07": 0.45, "ap50_voc": 0.46}},
        {"variant": "upper_bound", "step": 100, "metrics": {"ap50_voc07": 0.5, "ap50_voc": 0.5}},
    ]
    table = mod.curve_table("retrain", points)  # type: ignore[attr-defined]
    lines = [ln for ln in table.splitlines() if ln.strip().startswith(("drop", "upper_bound"))]
    assert len(lines) == 3
    assert lines[0].split() == ["drop", "100", "0.3000", "0.3100", "0.6000"]  # 0.3 / 0.5
    assert lines[1].split() == ["drop", "200", "0.4500", "0.4600", "-"]  # no bound at 200
    assert lines[2].split() == ["upper_bound", "100", "0.5000", "0.5000", "-"]
    png = mod.draw("retrain", points, str(tmp_path / "c.png"), "t")  # type: ignore[attr-defined]
    assert Path(png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_script_refuses_a_missing_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], bench_script: Any
) -> None:
    mod = bench_script("learning_curve")
    assert mod.main(["--run", str(tmp_path / "none")]) == 2  # type: ignore[attr-defined]
    assert "no run at" in capsys.readouterr().err
    saved = tmp_path / "s.json"
    saved.write_text(json.dumps({"stages": {"wsis": [
        {"variant": "pgt", "step": 5, "metrics": {"mask_ap50": 0.25}},
        {"variant": "upper_bound", "step": 5, "metrics": {"mask_ap50": 0.5}},
    ]}}))  # fmt: skip
    assert mod.main(["--show", str(saved)]) == 0  # type: ignore[attr-defined]
    out = capsys.readouterr().out
    assert "wsis: learning curve" in out
    assert ["pgt", "5", "-", "0.2500", "-", "-", "0.5000"] in [
        ln.split() for ln in out.splitlines()
    ]


def test_script_end_to_end(tmp_path: Path, curve_run: str, bench_script: Any) -> None:
    mod = bench_script("learning_curve")
    out = tmp_path / "curve.json"
    args = ["--run", curve_run, "--stage", "retrain", "--out", str(out)]
    assert mod.main([*args, "--png-dir", str(tmp_path)]) == 0  # type: ignore[attr-defined]
    saved = json.loads(out.read_text())
    assert saved["split"] == "test"
    assert [(p["variant"], p["step"]) for p in saved["stages"]["retrain"]] == [
        ("drop", 2),
        ("drop", 4),
        ("upper_bound", 2),
        ("upper_bound", 4),
    ]
    assert (tmp_path / "learning_curve_retrain.png").read_bytes()[:4] == b"\x89PNG"
