"""The detector stages' variants: names, sources and RoI drop per family."""

from __future__ import annotations

from pathlib import Path

from weaksam.config import load_run_config
from weaksam.detection.stage import main_retrain_variant, retrain_variants, wsis_variants

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_rcnn_retrain_variants() -> None:
    cfg = load_run_config(str(CONFIGS / "bench.yaml"))
    got = [(v.name, v.source, v.drop.enabled) for v in retrain_variants(cfg)]
    assert got == [("drop", "pgt", True), ("no_drop", "pgt", False), ("upper_bound", "gt", False)]
    assert main_retrain_variant(cfg) == "drop"


def test_rt_detr_main_variant_is_named_for_its_source() -> None:
    """RT-DETR has no RoI drop: its PGT-trained detector is ``pgt``, not ``drop``."""
    cfg = load_run_config(str(CONFIGS / "bench_transformers.yaml"))
    got = [(v.name, v.source, v.drop.enabled) for v in retrain_variants(cfg)]
    assert got == [("pgt", "pgt", False), ("upper_bound", "gt", False)]
    assert main_retrain_variant(cfg) == "pgt"
    assert [(v.name, v.source) for v in wsis_variants(cfg)] == [
        ("pgt", "pgt"),
        ("upper_bound", "gt"),
    ]
