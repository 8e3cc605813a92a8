"""The per-image tables each stage declares for the runner's coverage check (``Stage.covers``)."""

from __future__ import annotations

from pathlib import Path

from weaksam.config import load_config
from weaksam.pipeline.stages import STAGES

CONFIG = str(Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml")
RUN = "s3://bucket/runs/tiny"


def _covers(overrides: tuple[str, ...] = ()) -> dict[str, list[tuple[str, tuple[str, ...]]]]:
    cfg = load_config(CONFIG, overrides)
    return {s.name: s.covers(cfg, RUN) for s in STAGES}


def test_every_per_image_stage_declares_its_tables() -> None:
    covers = _covers()
    assert covers["proposals"] and covers["peaks"] and covers["baseline"]
    assert covers["wsod"] == [
        (f"{RUN}/wsod/detections_train.parquet", ("train",)),
        (f"{RUN}/wsod/detections_test.parquet", ("test",)),
    ]
    assert covers["pgt"] == [(f"{RUN}/pgt/pgt.parquet", ("train",))]
    # stages without per-image outputs declare nothing
    assert covers["classify"] == [] and covers["ingest"] == []


def test_detector_stages_declare_every_variant() -> None:
    both = _covers(
        (
            "retrain.compare_no_drop=true",
            "retrain.upper_bound=true",
            "wsis.upper_bound=true",
        )
    )
    assert both["retrain"] == [
        (f"{RUN}/retrain/detections_test.parquet", ("test",)),
        (f"{RUN}/retrain/compare/no_drop/detections_test.parquet", ("test",)),
        (f"{RUN}/retrain/compare/upper_bound/detections_test.parquet", ("test",)),
    ]
    assert both["wsis"] == [
        (f"{RUN}/wsis/detections_test.parquet", ("test",)),
        (f"{RUN}/wsis/compare/upper_bound/detections_test.parquet", ("test",)),
    ]
    plain = _covers(("retrain.compare_no_drop=false", "retrain.upper_bound=false"))
    assert [p for p, _ in plain["retrain"]] == [f"{RUN}/retrain/detections_test.parquet"]
