"""Model files of the service at object-store locations (moto S3): a run folder or a
checkpoint named by an ``s3://`` URI is found and checked through weaksam.storage, and the
detector loader the service uses reads it."""

from __future__ import annotations

from pathlib import Path

import pytest
from serve_helpers import make_config, save_small_detector

from serve.config import check_model_files, detector_checkpoint, project_path
from weaksam import storage
from weaksam.detection.inference import load_detector
from weaksam.runs import model_path


def test_detector_of_an_s3_run_and_checkpoint(s3_bucket: str, tmp_path: Path) -> None:
    local = save_small_detector(tmp_path / "model.pt", masks=False)
    run = storage.join(s3_bucket, "runs", "demo")
    storage.upload_file(local, model_path(run, "retrain"))
    assert project_path(run) == run  # a URI is not joined to the project root

    cfg = make_config("detector.kind=run", f"detector.run={run}")
    assert detector_checkpoint(cfg.detector) == model_path(run, "retrain")
    check_model_files(cfg)
    _, meta = load_detector(detector_checkpoint(cfg.detector))
    assert meta["variant"] == "random" and not meta["masks"]

    by_file = make_config(
        "detector.kind=retrain", f"detector.checkpoint={model_path(run, 'retrain')}"
    )
    assert detector_checkpoint(by_file.detector) == model_path(run, "retrain")

    missing = make_config("detector.kind=run", f"detector.run={storage.join(s3_bucket, 'none')}")
    with pytest.raises(FileNotFoundError, match="no trained detector in s3://"):
        check_model_files(missing)
    gone = make_config("detector.kind=retrain", f"detector.checkpoint={s3_bucket}/x/model.pt")
    with pytest.raises(FileNotFoundError, match="detector checkpoint not found: s3://"):
        detector_checkpoint(gone.detector)
