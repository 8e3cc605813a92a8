"""Ray Train: a tiny Mask2Former trained by two workers (DDP over gloo) on PGT masks, resumed
from its checkpoint by a rerun of the same name, exported and reloaded with a key check."""

from __future__ import annotations

import os

import pytest
import torch
from tiny_models import TINY_M2F

from weaksam.detection.config import DetectorTrainConfig, RoIDropConfig
from weaksam.detection.inference import export_checkpoint, load_detector
from weaksam.detection.mask2former import Mask2FormerDetector
from weaksam.detection.training import TrainJob, loop_config, train_loop_per_worker
from weaksam.runs import manifest_path
from weaksam.train.reporting import STATE_FILE


def _state(result) -> dict:  # type: ignore[no-untyped-def]
    with result.checkpoint.as_directory() as d:
        return torch.load(os.path.join(d, STATE_FILE), weights_only=True)


@pytest.mark.ray
@pytest.mark.slow  # two TorchTrainer runs: ~60 s alone, 145 s on 2 busy cores
def test_two_worker_mask2former_resume_export_reload(
    ray_local: None, det_run: str, tmp_path
) -> None:
    from ray_jobs._ray import run_torch_trainer

    job = TrainJob(
        "pgt",
        True,
        6,
        tuple("abcdef"),
        manifest_path(det_run),
        os.path.join(det_run, "pgt", "pgt.parquet"),
        "pgt",
        "train",
    )
    drop = RoIDropConfig(enabled=False)
    kwargs = {"name": "wsis-m2f-test", "storage_path": str(tmp_path), "num_workers": 2}

    def train(steps: int) -> dict:  # type: ignore[type-arg]
        cfg = DetectorTrainConfig(
            steps=steps,
            images_per_step=2,
            num_workers=2,
            optimizer="adamw",
            lr=1e-4,
            trunk_lr_factor=0.1,
            warmup_steps=0,
            lr_steps=(),
            checkpoint_every=2,
            log_every=1,
        )
        result = run_torch_trainer(
            train_loop_per_worker, loop_config(TINY_M2F, cfg, drop, job), use_gpu=False, **kwargs
        )
        return _state(result)

    first = train(2)
    assert first["step"] == 2 and [h["step"] for h in first["history"]] == [1, 2]
    assert all(h["rois_dropped"] == 0 for h in first["history"])
    assert first["model_config"]["family"] == "mask2former"
    # the same name again: Ray Train restores the step-2 checkpoint and the run goes on
    second = train(3)
    assert second["step"] == 3 and second["resumed_from"] == 2
    assert [h["step"] for h in second["history"]] == [1, 2, 3]
    path = export_checkpoint(second, str(tmp_path / "model.pt"))
    model, meta = load_detector(path)  # strict keys
    assert isinstance(model, Mask2FormerDetector) and meta["variant"] == "pgt"
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, second["model"][k], msg=k)
    with torch.no_grad():
        out = model([torch.rand(3, 96, 96)])[0]
    assert out["masks"].shape[1:] == (1, 96, 96)
