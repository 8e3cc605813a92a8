"""``bench/gpu_proposals.py`` — the prepared script for the lent GPU — runs end to end on CPU
with a tiny model, so a device run does not fail on the script itself."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_proposals_smoke_on_cpu(tmp_path: Path) -> None:
    out = tmp_path / "gpu.json"
    cmd = [
        sys.executable,
        str(ROOT / "bench" / "gpu_proposals.py"),
        "--device", "cpu", "--models", "demo", "--sizes", "64", "96", "--thresholds", "0.3",
        "--images", "3", "--points", "3", "--reference-images", "1", "--points-per-side", "4",
        "--encoder-batch", "2", "--no-compile", "--fast-dtypes", "fp16", "bf16",
        "--out", str(out),
    ]  # fmt: skip
    subprocess.run(cmd, check=True, cwd=ROOT, capture_output=True, timeout=600)
    report = json.loads(out.read_text())
    assert report["device"] == "CPU"
    assert [(r["size"], r["thresholds"]) for r in report["runs"]] == [(64, 0.3), (96, 0.3)]
    assert "reference" in report["runs"][0] and "reference" not in report["runs"][1]
    for row in report["runs"]:
        for path in ("exact", "fast_fp16", "fast_bf16"):
            assert row[path]["images_per_s"] > 0 and row[path]["proposals_per_image"] > 0
        assert row["fast_fp16"]["agreement"]["total"] > 0
    assert report["runs"][0]["fast_bf16"]["over_reference"] > 0
