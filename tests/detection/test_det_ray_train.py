"""Ray Train: a two-worker (DDP over gloo) retrain on PGT.

Resuming is tested in plain Python (test_det_training.py: a stopped run resumed from its last
checkpoint repeats the uninterrupted run); under Ray Train the same state comes back through
``ray.train.get_checkpoint()`` (weaksam.train.reporting.load_resume_state).
"""

from __future__ import annotations

import os

import pytest
import torch

from weaksam.detection.config import DetectorModelConfig, DetectorTrainConfig, RoIDropConfig
from weaksam.detection.training import TrainJob, loop_config, train_loop_per_worker
from weaksam.runs import manifest_path
from weaksam.train.reporting import STATE_FILE


def _state(result) -> dict:  # type: ignore[no-untyped-def]
    with result.checkpoint.as_directory() as d:
        return torch.load(os.path.join(d, STATE_FILE), weights_only=True)


@pytest.mark.ray
def test_two_worker_retrain(
    ray_local: None, det_run: str, tiny_model: DetectorModelConfig, tmp_path
) -> None:
    from ray_jobs._ray import run_torch_trainer

    job = TrainJob(
        "drop",
        False,
        6,
        tuple("abcdef"),
        manifest_path(det_run),
        os.path.join(det_run, "pgt", "pgt.parquet"),
        "pgt",
        "train",
    )
    train = DetectorTrainConfig(
        steps=2, images_per_step=2, num_workers=2, checkpoint_every=2, log_every=1, lr=0.01
    )
    drop = RoIDropConfig(thresh_cls=0.0, thresh_reg=0.0, operate_iter=1)
    kwargs = {"name": "retrain-test", "storage_path": str(tmp_path), "num_workers": 2}
    result = run_torch_trainer(
        train_loop_per_worker, loop_config(tiny_model, train, drop, job), use_gpu=False, **kwargs
    )
    state = _state(result)
    assert state["step"] == 2 and [h["step"] for h in state["history"]] == [1, 2]
    assert state["history"][0]["rois_dropped"] == 0 < state["history"][1]["rois_dropped"]
    assert state["variant"] == "drop" and state["class_names"] == list("abcdef")
