"""Detector builder: name table, torchvision equivalence, local ImageNet weights, both heads."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torchvision.models import resnet18
from torchvision.models.detection import fasterrcnn_resnet50_fpn
from torchvision.ops.misc import FrozenBatchNorm2d

from weaksam.detection.config import DetectorModelConfig
from weaksam.detection.model import build_detector, set_inference_size
from weaksam.detection.roi_heads import DropRoIHeads


def test_unknown_backbone_lists_known(tiny_model: DetectorModelConfig) -> None:
    with pytest.raises(ValueError, match="resnet18_fpn"):
        build_detector(dataclasses.replace(tiny_model, backbone="vgg"), 3)


def test_resnet50_fpn_matches_torchvision_builder() -> None:
    ours = build_detector(DetectorModelConfig(), 20)
    ref = fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=21)
    a = {k: v.shape for k, v in ours.state_dict().items()}
    b = {k: v.shape for k, v in ref.state_dict().items()}
    assert a == b
    assert isinstance(ours.roi_heads, DropRoIHeads)
    assert ours.roi_heads.fg_bg_sampler.batch_size_per_image == 512


def test_local_imagenet_weights_load_strictly_and_freeze(
    tmp_path, tiny_model: DetectorModelConfig
) -> None:
    trunk = resnet18()
    path = str(tmp_path / "r18.pth")
    torch.save(trunk.state_dict(), path)
    cfg = dataclasses.replace(tiny_model, backbone="resnet18_fpn", weights=path, trainable_layers=2)
    model = build_detector(cfg, 2)
    body = model.backbone.body
    torch.testing.assert_close(body.conv1.weight, trunk.conv1.weight)
    assert isinstance(body.bn1, FrozenBatchNorm2d)
    assert not body.layer2[0].conv1.weight.requires_grad
    assert body.layer3[0].conv1.weight.requires_grad
    bad = str(tmp_path / "bad.pth")
    torch.save({"conv1.weight": torch.zeros(1)}, bad)
    with pytest.raises(ValueError, match="do not fit"):
        build_detector(dataclasses.replace(cfg, weights=bad), 2)


@pytest.mark.parametrize("masks", [False, True])
def test_train_and_eval_outputs(masks: bool, tiny_model: DetectorModelConfig) -> None:
    torch.manual_seed(0)
    model = build_detector(tiny_model, 3, masks=masks)
    images = [torch.rand(3, 64, 80), torch.rand(3, 60, 64)]
    targets = [
        {"boxes": torch.tensor([[5.0, 5.0, 40.0, 30.0]]), "labels": torch.tensor([2])},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)},
    ]
    if masks:
        targets[0]["masks"] = torch.zeros(1, 64, 80, dtype=torch.uint8)
        targets[0]["masks"][0, 5:30, 5:40] = 1
        targets[1]["masks"] = torch.zeros(0, 60, 64, dtype=torch.uint8)
    model.train()
    losses = model(images, targets)
    expected = {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
    assert set(losses) == expected | ({"loss_mask"} if masks else set())
    set_inference_size(model, 64)
    with torch.inference_mode():
        out = model(images)
    assert len(out) == 2 and out[0]["boxes"].shape[1] == 4
    if masks:
        assert out[1]["masks"].shape[1:] == (1, 60, 64)  # original size


def test_plainconv_fpn_loads_a_cam_backbone_and_trains(
    tmp_path, tiny_model: DetectorModelConfig
) -> None:
    from weaksam.cam.models import PlainConvBackbone

    torch.manual_seed(0)
    trunk = PlainConvBackbone(8)
    trunk.body[0][1].running_mean.fill_(0.5)  # BN statistics must come along
    path = str(tmp_path / "bb.pt")
    torch.save({"model": trunk.state_dict(), "backbone": "plainconv", "width": 8}, path)
    cfg = dataclasses.replace(
        tiny_model, backbone="plainconv_fpn", width=8, weights=path, trainable_layers=4
    )
    model = build_detector(cfg, 2)
    body = model.backbone.body
    torch.testing.assert_close(body.layer1[0][0].weight, trunk.body[0][0].weight)
    assert isinstance(body.layer1[0][1], FrozenBatchNorm2d)
    assert torch.all(body.layer1[0][1].running_mean == 0.5)
    model.train()
    losses = model(
        [torch.rand(3, 64, 64)],
        [{"boxes": torch.tensor([[4.0, 4.0, 40.0, 30.0]]), "labels": torch.tensor([1])}],
    )
    sum(losses.values()).backward()
    assert body.layer1[0][0].weight.grad is not None  # the pre-trained convs train
    # trainable_layers 2: the pre-trained stages stay fixed, the new ones train
    fixed = build_detector(dataclasses.replace(cfg, trainable_layers=2), 2).backbone.body
    assert not any(
        p.requires_grad for p in [*fixed.layer1.parameters(), *fixed.layer2.parameters()]
    )
    assert all(p.requires_grad for p in [*fixed.layer3.parameters(), *fixed.layer4.parameters()])
    three = build_detector(dataclasses.replace(cfg, trainable_layers=3), 2).backbone.body
    assert all(p.requires_grad for p in three.layer2.parameters())
    assert not any(p.requires_grad for p in three.layer1.parameters())
    bad = str(tmp_path / "bad.pt")
    torch.save({"model": {"body.0.0.weight": torch.zeros(1)}}, bad)
    with pytest.raises(ValueError):
        build_detector(dataclasses.replace(cfg, weights=bad), 2)


def test_anchor_sizes_reach_the_rpn(tiny_model: DetectorModelConfig) -> None:
    model = build_detector(dataclasses.replace(tiny_model, anchor_sizes=(8, 16, 32, 64, 128)), 2)
    assert model.rpn.anchor_generator.sizes == ((8,), (16,), (32,), (64,), (128,))
    assert model.rpn.head.cls_logits.out_channels == 3  # three aspect ratios per level
    with pytest.raises(ValueError):
        dataclasses.replace(tiny_model, anchor_sizes=(8, 16))
