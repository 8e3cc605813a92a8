"""Mask2Former behind the detection contract: golden conversions and post-processing, a tiny
random model's forward/backward (also without targets), eval outputs at the original size,
the trunk and detector weight loaders, export/reload, config checks, and fit with AdamW."""

from __future__ import annotations

import math
import os
from dataclasses import replace
from typing import Any

import pytest
import torch
from tiny_models import TINY_M2F
from torchvision.models import resnet18

from weaksam.configlib import ConfigError, FieldError, from_dict, to_dict
from weaksam.detection.config import (
    DetectorModelConfig,
    DetectorTrainConfig,
    Mask2FormerConfig,
    WSISConfig,
)
from weaksam.detection.data import Sampler, read_pgt_samples
from weaksam.detection.inference import export_detector, load_detector
from weaksam.detection.mask2former import (
    CLASS_KEYS,
    Mask2FormerDetector,
    convert_target,
    instance_results,
    load_detector_weights,
    masks_to_boxes,
    select_queries,
)
from weaksam.detection.model import build_detector, set_inference_size
from weaksam.detection.resize import resized_hw
from weaksam.detection.training import TrainJob, build_optimizer, fit


def _model(cfg: DetectorModelConfig = TINY_M2F, classes: int = 3) -> Mask2FormerDetector:
    torch.manual_seed(0)
    model = build_detector(cfg, classes, masks=True)
    assert isinstance(model, Mask2FormerDetector)
    return model


def _targets(h: int, w: int, g: int) -> dict[str, torch.Tensor]:
    masks = torch.zeros((g, h, w), dtype=torch.uint8)
    for i in range(g):
        masks[i, 4 * i : 4 * i + 12, 5 : 5 + 10 * (i + 1)] = 1
    return {
        "boxes": masks_to_boxes(masks.bool()),
        "labels": torch.arange(1, g + 1, dtype=torch.int64),
        "masks": masks,
    }


# --------------------------------------------------------------------------- pure functions


def test_resized_size_short_side_then_cap() -> None:
    assert resized_hw(100, 200, 50, 1000) == (50, 100)
    assert resized_hw(100, 200, 50, 80) == (40, 80)  # scale min(0.5, 0.4)


def test_convert_target_golden() -> None:
    masks = torch.tensor([[[1, 0], [0, 0]], [[0, 0], [0, 1]]], dtype=torch.uint8)
    m, c = convert_target(masks, torch.tensor([1, 3]), (4, 4), (4, 6))
    want = torch.zeros((2, 4, 6))
    want[0, :2, :2] = 1  # nearest x2, then zero padding to the right
    want[1, 2:4, 2:4] = 1
    torch.testing.assert_close(m, want)
    assert c.tolist() == [0, 2] and c.dtype == torch.int64
    empty_m, empty_c = convert_target(
        torch.zeros((0, 3, 3), dtype=torch.uint8), torch.zeros(0, dtype=torch.int64), (3, 3), (4, 4)
    )
    assert empty_m.shape == (0, 4, 4) and empty_c.shape == (0,)


def test_masks_to_boxes_golden() -> None:
    masks = torch.zeros((2, 5, 6), dtype=torch.bool)
    masks[0, 1:3, 2:5] = True  # rows 1..2, columns 2..4
    boxes = masks_to_boxes(masks)
    torch.testing.assert_close(boxes, torch.tensor([[2.0, 1.0, 5.0, 3.0], [0.0, 0.0, 0.0, 0.0]]))
    assert masks_to_boxes(torch.zeros((0, 4, 4), dtype=torch.bool)).shape == (0, 4)


def test_instance_inference_golden() -> None:
    probs = torch.tensor([[0.6, 0.3, 0.1], [0.1, 0.2, 0.7]])  # 2 queries, C = 2 + "no object"
    scores, labels, queries = select_queries(probs.log(), topk=3)
    torch.testing.assert_close(scores, torch.tensor([0.6, 0.3, 0.2]))
    assert labels.tolist() == [0, 1, 1] and queries.tolist() == [0, 0, 1]
    # query 0: one pixel inside (sigmoid 0.75); query 1: two inside (sigmoid 0.5+, 0.9)
    q0 = torch.tensor([[math.log(3.0), -1.0]])
    q1 = torch.tensor([[1e-6, math.log(9.0)]])
    logits = torch.stack([q0, q0, q1])  # 3x1x2, one per selected pair
    out = instance_results(scores, labels, logits, score_thresh=0.2, limit=10)
    # 0.6 x 0.75 = 0.45, 0.3 x 0.75 = 0.225, 0.2 x 0.7 = 0.14 (< 0.2: dropped)
    torch.testing.assert_close(out["scores"], torch.tensor([0.45, 0.225]))
    assert out["labels"].tolist() == [1, 2]  # 1..C
    torch.testing.assert_close(out["boxes"], torch.tensor([[0.0, 0.0, 1.0, 1.0]] * 2))
    assert out["masks"].shape == (2, 1, 1, 2)
    torch.testing.assert_close(out["masks"][0, 0, 0, 0], torch.tensor(0.75))
    capped = instance_results(scores, labels, logits, score_thresh=0.0, limit=1)
    assert capped["scores"].tolist() == pytest.approx([0.45])


# --------------------------------------------------------------------------- the model


def test_build_detector_dispatch_trunk_and_test_size() -> None:
    model = _model()
    assert model.has_mask() and model.num_classes == 3
    assert set(model.trunk.state_dict()) <= {
        k.removeprefix("net.model.pixel_level_module.encoder.body.")
        for k in model.state_dict()
        if ".encoder.body." in k
    }
    encoder = [k for k in model.state_dict() if ".pixel_level_module.encoder." in k]
    assert encoder and all(".encoder.body." in k for k in encoder)  # the stand-in is gone
    assert set_inference_size(model, 48) is model and model.test_size == 48 and not model.training


def test_train_forward_backward_and_empty_targets() -> None:
    model = _model().train()
    images = [torch.rand(3, 48, 64), torch.rand(3, 40, 40)]
    losses = model(images, [_targets(48, 64, 2), _targets(40, 40, 0)])
    assert set(losses) == {"loss_classifier", "loss_mask", "loss_dice"}
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    grad = model.net.class_predictor.weight.grad
    assert grad is not None and grad.abs().sum() > 0
    model.zero_grad()
    # no targets in the whole batch: every query learns "no object"; no crash
    losses = model(images, [_targets(48, 64, 0), _targets(40, 40, 0)])
    assert losses["loss_mask"] == 0 and torch.isfinite(losses["loss_classifier"])
    sum(losses.values()).backward()
    with pytest.raises(ValueError, match="targets"):
        model(images)


def test_eval_outputs_at_the_original_size() -> None:
    model = set_inference_size(_model(), 64)
    images = [torch.rand(3, 50, 70), torch.rand(3, 90, 40)]
    with torch.no_grad():
        outs = model(images)
    for img, out in zip(images, outs, strict=True):
        h, w = img.shape[1:]
        n = out["boxes"].shape[0]
        assert 0 < n <= TINY_M2F.detections_per_img
        assert out["masks"].shape == (n, 1, h, w)
        assert out["masks"].min() >= 0 and out["masks"].max() <= 1
        assert out["labels"].dtype == torch.int64
        assert out["labels"].min() >= 1 and out["labels"].max() <= 3
        assert (out["scores"][:-1] >= out["scores"][1:]).all()
        assert (out["boxes"][:, 2] <= w).all() and (out["boxes"][:, 3] <= h).all()
    model.score_thresh, model.detections_per_img = 1.1, 5  # the service sets these
    with torch.no_grad():
        assert model(images[:1])[0]["scores"].numel() == 0


def test_resnet_trunk_weights_strict_and_frozen(tmp_path) -> None:
    path = str(tmp_path / "r18.pt")
    torch.save(resnet18(weights=None).state_dict(), path)
    cfg = replace(
        TINY_M2F,
        weights=path,
        trainable_layers=2,
        mask2former=replace(TINY_M2F.mask2former, trunk="resnet18"),
    )
    model = _model(cfg)
    trains = {n.split(".")[0]: p.requires_grad for n, p in model.trunk.named_parameters()}
    assert trains["layer4"] and trains["layer3"] and not trains["layer1"] and not trains["conv1"]
    ref = torch.load(path, weights_only=True)
    torch.testing.assert_close(
        model.trunk.state_dict()["layer1.0.conv1.weight"], ref["layer1.0.conv1.weight"]
    )
    bad = {k: v for k, v in ref.items() if k != "layer2.0.conv1.weight"}
    torch.save(bad, path)
    with pytest.raises(ValueError, match="missing"):
        _model(cfg)


def test_detector_weights_strict_except_class_heads(tmp_path, caplog) -> None:
    coco = _model(classes=5)
    path = str(tmp_path / "m2f_coco.pt")
    torch.save({"model": coco.state_dict()}, path)
    cfg = replace(TINY_M2F, mask2former=replace(TINY_M2F.mask2former, detector_weights=path))
    with caplog.at_level("INFO", logger="weaksam.detection.mask2former"):
        model = _model(cfg, classes=3)
    assert "re-initialised" in caplog.text and "class_predictor" in caplog.text
    mine, theirs = model.state_dict(), coco.state_dict()
    for k in theirs:
        if k not in CLASS_KEYS:
            torch.testing.assert_close(mine[k], theirs[k], msg=k)
    assert mine["net.class_predictor.weight"].shape[0] == 4  # 3 classes + "no object"
    torch.save({**coco.state_dict(), "net.extra.weight": torch.zeros(1)}, path)
    with pytest.raises(ValueError, match="unexpected"):
        _model(cfg)
    torch.save(coco.state_dict(), path)  # a bare state dict, same classes: heads still fresh
    assert load_detector_weights(_model(classes=5), path) == list(CLASS_KEYS)


def test_export_and_reload_with_key_check(tmp_path) -> None:
    model = set_inference_size(_model(), 64)
    cfg = replace(TINY_M2F, mask2former=replace(TINY_M2F.mask2former, detector_weights="gone.pt"))
    path = export_detector(model, str(tmp_path / "model.pt"), model_config=cfg, class_names="abc")
    loaded, meta = load_detector(path)  # no detector weights file needed: all in the checkpoint
    assert isinstance(loaded, Mask2FormerDetector) and meta["masks"] is True
    img = [torch.rand(3, 64, 64)]
    with torch.no_grad():
        a, b = model(img)[0], loaded(img)[0]
    torch.testing.assert_close(a["masks"], b["masks"])
    ckpt = torch.load(path, weights_only=True)
    ckpt["model"]["net.extra"] = torch.zeros(1)
    torch.save(ckpt, path)
    with pytest.raises(RuntimeError, match="Unexpected"):
        load_detector(path)


# --------------------------------------------------------------------------- configs


def test_config_checks() -> None:
    d: dict[str, Any] = to_dict(WSISConfig())
    d["model"]["family"] = "mask2former"
    assert from_dict(d, WSISConfig).model.mask2former.decoder_layers == 9
    with pytest.raises(ConfigError, match="RoI drop acts on the R-CNN box head"):
        from_dict({**d, "roi_drop": {**d["roi_drop"], "enabled": True}}, WSISConfig)
    with pytest.raises(ConfigError, match=r"model\.family"):
        from_dict({**d, "model": {**d["model"], "family": "rt_detr"}}, WSISConfig)
    with pytest.raises(FieldError, match="multiple of 32"):
        Mask2FormerConfig(hidden_dim=48)
    with pytest.raises(FieldError, match="trunk"):
        Mask2FormerConfig(trunk="swin")
    with pytest.raises(FieldError, match="optimizer"):
        DetectorTrainConfig(optimizer="adam")
    assert DetectorModelConfig().family == "rcnn" and WSISConfig().model.family == "rcnn"


def test_fit_with_adamw_and_trunk_factor(det_run: str) -> None:
    job = TrainJob(
        "pgt",
        True,
        6,
        tuple("abcdef"),
        os.path.join(det_run, "ingest", "manifest.parquet"),
        os.path.join(det_run, "pgt", "pgt.parquet"),
        "pgt",
        "train",
    )
    train = DetectorTrainConfig(
        steps=2,
        images_per_step=2,
        num_workers=1,
        optimizer="adamw",
        lr=1e-4,
        trunk_lr_factor=0.1,
        weight_decay=0.05,
        grad_clip=0.01,
        warmup_steps=0,
        lr_steps=(),
        checkpoint_every=2,
        log_every=1,
    )
    model = _model(classes=6)
    opt = build_optimizer(model, train)
    assert isinstance(opt, torch.optim.AdamW)
    assert sorted({g.get("lr_factor", 1.0) for g in opt.param_groups}) == [0.1, 1.0]
    samples, _ = read_pgt_samples(job.manifest, job.targets, "train", with_masks=True)
    state = fit(model, Sampler(samples, 2, 0), train, job, reporter=lambda m, s: None)
    assert state["step"] == 2 and [h["rois_dropped"] for h in state["history"]] == [0, 0]
    assert math.isfinite(state["history"][-1]["loss"])


@pytest.mark.parametrize("name", ["voc12_wsis_mask2former", "coco_wsis_mask2former"])
def test_real_mask2former_configs_state_the_recipe(name: str) -> None:
    from pathlib import Path

    from weaksam.config import load_config

    cfg = load_config(str(Path(__file__).resolve().parents[2] / "configs" / f"{name}.yaml"))
    w = cfg.wsis
    assert w.model.family == "mask2former" and w.model.mask2former == Mask2FormerConfig()
    assert (w.train.optimizer, w.train.lr, w.train.trunk_lr_factor) == ("adamw", 1e-4, 0.1)
    assert (w.train.weight_decay, w.train.grad_clip, w.train.images_per_step) == (0.05, 0.01, 16)
    assert w.model.test_size == 800 and not w.roi_drop.enabled
    # Mask2Former's decays at 327778 / 368750 and 355092 / 368750 of the schedule
    s = w.train.steps
    assert [round(x / s, 3) for x in w.train.lr_steps] == [0.889, 0.963]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_train_and_eval_on_cuda() -> None:
    model = _model().cuda().train()
    images = [torch.rand(3, 48, 64, device="cuda"), torch.rand(3, 40, 40, device="cuda")]
    targets = [{k: v.cuda() for k, v in _targets(48, 64, 2).items()}, _targets(40, 40, 0)]
    targets[1] = {k: v.cuda() for k, v in targets[1].items()}
    sum(model(images, targets).values()).backward()
    with torch.no_grad():
        out = set_inference_size(model, 64)(images)[0]
    assert out["masks"].device.type == "cuda" and out["masks"].shape[-2:] == (48, 64)
