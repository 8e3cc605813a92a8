"""Retraining in plain Python: samples (no GT read), flips, exact resume, RoI-drop logging."""

from __future__ import annotations

import copy
import os
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from weaksam.detection.config import DetectorModelConfig, DetectorTrainConfig, RoIDropConfig
from weaksam.detection.data import Sampler, read_pgt_samples, to_model_inputs
from weaksam.detection.model import build_detector
from weaksam.detection.training import TrainJob, fit
from weaksam.detection.upper_bound import read_gt_samples
from weaksam.train.schedule import step_decay_schedule

TRAIN = DetectorTrainConfig(
    steps=4,
    images_per_step=2,
    num_workers=1,
    lr=0.01,
    warmup_steps=2,
    lr_steps=(3,),
    checkpoint_every=2,
    log_every=1,
)


def _job(run: str, masks: bool = False) -> TrainJob:
    return TrainJob(
        "drop",
        masks,
        6,
        tuple("abcdef"),
        os.path.join(run, "ingest", "manifest.parquet"),
        os.path.join(run, "pgt", "pgt.parquet"),
        "pgt",
        "train",
    )


def test_pgt_samples_never_read_ground_truth(det_run: str, monkeypatch) -> None:
    seen: list[Any] = []
    real = pq.read_table

    def spy(path, *args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append((str(path), kwargs.get("columns")))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(pq, "read_table", spy)
    samples, left_out = read_pgt_samples(
        os.path.join(det_run, "ingest", "manifest.parquet"),
        os.path.join(det_run, "pgt", "pgt.parquet"),
        "train",
    )
    assert len(samples) == 5 and left_out == 1  # the error row
    manifest_reads = [cols for path, cols in seen if "manifest" in path]
    assert manifest_reads and all(
        cols is not None and not any(c.startswith("gt_") for c in cols) for cols in manifest_reads
    )
    gt, _ = read_gt_samples(os.path.join(det_run, "ingest", "manifest.parquet"), "train", True)
    assert len(gt) == 6 and gt[0].masks is not None


def test_flip_moves_boxes_and_masks(det_run: str) -> None:
    samples, _ = read_pgt_samples(
        os.path.join(det_run, "ingest", "manifest.parquet"),
        os.path.join(det_run, "pgt", "pgt.parquet"),
        "train",
    )
    s = samples[0]
    (img, img_f), (t, t_f) = (
        to_model_inputs([(s, False), (s, True)], with_masks=True)[0],
        to_model_inputs([(s, False), (s, True)], with_masks=True)[1],
    )
    torch.testing.assert_close(img_f, img.flip(-1))
    w = img.shape[-1]
    torch.testing.assert_close(t_f["boxes"][:, 0], w - t["boxes"][:, 2])
    torch.testing.assert_close(t_f["masks"], t["masks"].flip(-1))
    assert t["labels"].min() >= 1  # background is 0 in torchvision


def test_sampler_is_a_function_of_seed_rank_step(det_run: str) -> None:
    samples, _ = read_pgt_samples(
        os.path.join(det_run, "ingest", "manifest.parquet"),
        os.path.join(det_run, "pgt", "pgt.parquet"),
        "train",
    )
    a, b = Sampler(samples, 2, 0, 0, 2), Sampler(samples, 2, 0, 1, 2)
    assert {s.image_id for s in a.samples}.isdisjoint({s.image_id for s in b.samples})

    def drawn(sampler: Sampler, step: int) -> list[tuple[str, bool]]:
        return [(s.image_id, flip) for s, flip in sampler.draw(step)]

    first = drawn(a, 3)
    for other_step in (0, 7):  # other steps drawn in between: no state carries over
        drawn(a, other_step)
    assert drawn(a, 3) == first == drawn(Sampler(samples, 2, 0, 0, 2), 3)
    assert any(drawn(a, s) != first for s in range(10))  # the step matters
    assert any(drawn(Sampler(samples, 2, 1, 0, 2), s) != drawn(a, s) for s in range(10))  # seed


def test_lr_schedule() -> None:
    lr_factor = step_decay_schedule(TRAIN)
    assert lr_factor(0) == pytest.approx(1e-3)
    assert lr_factor(2) == 1.0 and lr_factor(3) == pytest.approx(0.1)


def _fit(cfg: DetectorModelConfig, run: str, drop: RoIDropConfig, **kwargs: Any) -> dict[str, Any]:
    torch.manual_seed(0)
    model = build_detector(cfg, 6, drop=drop)
    samples, _ = read_pgt_samples(_job(run).manifest, _job(run).targets, "train")
    return fit(model, Sampler(samples, 2, 0), TRAIN, _job(run), **kwargs)


def test_resume_repeats_the_uninterrupted_run(
    tiny_model: DetectorModelConfig, det_run: str
) -> None:
    drop = RoIDropConfig(operate_iter=2)
    full = copy.deepcopy(_fit(tiny_model, det_run, drop, reporter=lambda m, s: None))
    saved: list[dict[str, Any]] = []
    _fit(
        tiny_model,
        det_run,
        drop,
        reporter=lambda m, s: saved.append(copy.deepcopy(s)),
        stop_after=2,
    )
    assert saved[-1]["step"] == 2  # the "killed" run's last checkpoint
    resumed = _fit(tiny_model, det_run, drop, resume=saved[-1], reporter=lambda m, s: None)
    assert resumed["step"] == full["step"] == 4
    assert [h["step"] for h in resumed["history"]] == [1, 2, 3, 4]
    for k, v in full["model"].items():
        torch.testing.assert_close(resumed["model"][k], v, msg=k)


def test_dropped_rois_are_logged_from_operate_iter(
    tiny_model: DetectorModelConfig, det_run: str
) -> None:
    drop = RoIDropConfig(thresh_cls=0.0, thresh_reg=0.0, operate_iter=2)
    state = _fit(tiny_model, det_run, drop, reporter=lambda m, s: None)
    dropped = [h["rois_dropped"] for h in state["history"]]
    fg = [h["rois_foreground"] for h in state["history"]]
    assert dropped[:2] == [0, 0] and all(d > 0 for d in dropped[2:])
    assert np.all(np.asarray(dropped) <= np.asarray(fg))
    # thresholds 0: every foreground RoI is over both, before and after the switch-on step;
    # while drop is on, the RoIs over both are exactly the ones dropped
    assert [h["rois_over_both"] for h in state["history"]] == fg
    assert [h["rois_over_both_active"] for h in state["history"]] == dropped
    assert [h["rois_foreground_active"] for h in state["history"]] == [0, 0, *fg[2:]]
