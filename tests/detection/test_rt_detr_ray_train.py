"""RT-DETR under Ray Train: two workers (DDP over gloo) train a tiny model on PGT, the run
resumes from its checkpoint, and the exported model reloads with a strict key check."""

from __future__ import annotations

import copy
import os
from typing import Any

import pytest
import torch
from tiny_models import TINY_DETR

from weaksam.detection.config import DetectorTrainConfig, RoIDropConfig
from weaksam.detection.data import Sampler, read_pgt_samples
from weaksam.detection.inference import export_checkpoint, load_detector
from weaksam.detection.model import build_detector
from weaksam.detection.training import (
    TrainJob,
    checkpoint_meta,
    fit,
    loop_config,
    train_loop_per_worker,
)
from weaksam.runs import manifest_path
from weaksam.train.reporting import STATE_FILE

TRAIN = DetectorTrainConfig(
    steps=2,
    images_per_step=2,
    num_workers=2,
    optimizer="adamw",
    lr=1e-4,
    trunk_lr_factor=0.1,
    grad_clip=0.1,
    checkpoint_every=2,
    log_every=1,
    threads=1,
)
NO_DROP = RoIDropConfig(enabled=False)


def _job(run: str) -> TrainJob:
    return TrainJob(
        "drop",
        False,
        6,
        tuple("abcdef"),
        manifest_path(run),
        os.path.join(run, "pgt", "pgt.parquet"),
        "pgt",
        "train",
    )


def _state(result) -> dict:  # type: ignore[no-untyped-def]
    with result.checkpoint.as_directory() as d:
        return torch.load(os.path.join(d, STATE_FILE), weights_only=True)


@pytest.mark.ray
def test_two_worker_rt_detr_train_export_reload(ray_local: None, det_run: str, tmp_path) -> None:
    from ray_jobs._ray import run_torch_trainer

    job = _job(det_run)
    kwargs = {"name": "detr-test", "storage_path": str(tmp_path), "num_workers": 2}
    result = run_torch_trainer(
        train_loop_per_worker, loop_config(TINY_DETR, TRAIN, NO_DROP, job), use_gpu=False, **kwargs
    )
    state = _state(result)
    assert state["step"] == 2 and [h["step"] for h in state["history"]] == [1, 2]
    assert all(h["rois_dropped"] == 0 == h["rois_foreground"] for h in state["history"])
    assert {"loss_vfl", "loss_bbox", "loss_giou"} <= set(state["history"][-1])
    assert state["model_config"]["family"] == "rt_detr"
    path = export_checkpoint(state, str(tmp_path / "model.pt"))
    model, meta = load_detector(path)
    assert meta["num_classes"] == 6 and not meta["masks"] and not model.training
    for k, v in state["model"].items():
        torch.testing.assert_close(model.state_dict()[k], v, msg=k)
    ckpt = torch.load(path, weights_only=True)
    ckpt["model"]["detr.extra"] = torch.zeros(1)
    torch.save(ckpt, path)
    with pytest.raises(RuntimeError, match="Unexpected key"):
        load_detector(path)


def test_resume_repeats_the_uninterrupted_run(det_run: str) -> None:
    """Plain Python (as for the R-CNNs): stop after step 2 of 3, resume from that checkpoint,
    get the uninterrupted run's weights (denoising noise and train sides come from the
    per-step seed)."""
    cfg = DetectorTrainConfig(
        steps=3,
        images_per_step=2,
        num_workers=1,
        optimizer="adamw",
        lr=1e-4,
        trunk_lr_factor=0.1,
        grad_clip=0.1,
        checkpoint_every=1,
        log_every=1,
    )
    job = _job(det_run)
    samples, _ = read_pgt_samples(job.manifest, job.targets, "train")

    def run(resume: dict[str, Any] | None, stop_after: int | None, saved: list) -> dict:
        torch.manual_seed(0)
        model = build_detector(TINY_DETR, 6)
        return fit(
            model,
            Sampler(samples, 2, 0, 0, 1, True),
            cfg,
            job,
            resume=resume,
            reporter=lambda m, s: saved.append(copy.deepcopy(s)),
            extra_state=checkpoint_meta(job, TINY_DETR, NO_DROP),
            stop_after=stop_after,
        )

    full = copy.deepcopy(run(None, None, []))
    saved: list[dict] = []
    run(None, 2, saved)
    resumed = run(saved[-1], None, [])
    assert resumed["step"] == full["step"] == 3 and resumed["resumed_from"] == 2
    for k, v in full["model"].items():
        torch.testing.assert_close(resumed["model"][k], v, msg=k)
