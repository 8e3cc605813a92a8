"""``bench/roi_drop_seeds.py``: its per-seed overrides make a valid linked run, and its summary
of paired differences is right on hand-computed values."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from weaksam.config import load_run_config

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def mod(bench_script: Any) -> object:
    return bench_script("roi_drop_seeds")


def test_seed_overrides_make_a_linked_retrain_only_run(mod: object) -> None:
    over = mod.seed_overrides("bench", "runs/bench", 3)  # type: ignore[attr-defined]
    cfg = load_run_config(str(ROOT / "configs" / "bench.yaml"), over)
    assert cfg.name == "bench_roidrop_s3" and cfg.upstream == "runs/bench"
    assert cfg.retrain.train.seed == 3 and cfg.retrain.compare_no_drop
    assert not cfg.retrain.upper_bound and not cfg.wsis.enabled
    assert cfg.retrain.roi_drop.enabled  # the bench's own thresholds, not changed here
    assert mod.UP_TO_RETRAIN[-1] == "retrain" and "wsis" not in mod.UP_TO_RETRAIN  # type: ignore[attr-defined]


def test_summary_and_table(mod: object) -> None:
    metrics = {
        "variants": {
            "drop": {"ap50_voc07": 0.72, "ap50_voc": 0.74, "rois_dropped": 10},
            "no_drop": {"ap50_voc07": 0.70, "ap50_voc": 0.71},
        }
    }
    rows = [
        mod.pair_row(0, metrics, "up"),  # type: ignore[attr-defined]
        {**mod.pair_row(1, metrics, "s1"), "drop_ap50": 0.69, "diff": -0.01},  # type: ignore[attr-defined]
        {**mod.pair_row(2, metrics, "s2"), "drop_ap50": 0.73, "diff": 0.03},  # type: ignore[attr-defined]
    ]
    assert rows[0]["diff"] == pytest.approx(0.02)
    s = mod.summary(rows)  # type: ignore[attr-defined]
    assert s["seeds"] == 3 and s["drop_wins"] == 2 and s["ties"] == 0
    assert s["mean_diff"] == pytest.approx(0.04 / 3)
    assert s["median_diff"] == pytest.approx(0.02)
    assert s["mean_drop_ap50"] == pytest.approx((0.72 + 0.69 + 0.73) / 3)
    text = mod.seeds_table(rows, "t")  # type: ignore[attr-defined]
    assert "RoI drop ahead in 2 of 3" in text and "median +0.0200" in text
