"""RT-DETR: golden target/output conversions, forward/backward, eval format, empty images,
strict weight loading (trunk and detector weights), config validation, the optimiser."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from tiny_models import TINY_DETR
from torchvision.models import resnet18
from torchvision.ops.misc import FrozenBatchNorm2d

from weaksam.configlib import FieldError
from weaksam.detection.config import (
    DetectorModelConfig,
    DetectorTrainConfig,
    MaskModelConfig,
    RetrainConfig,
    RoIDropConfig,
    RTDetrConfig,
    WSISConfig,
)
from weaksam.detection.model import (
    architecture_name,
    build_detector,
    detector_has_masks,
    detector_num_classes,
    init_detector,
    set_detector_limits,
    set_inference_size,
)
from weaksam.detection.resize import resized_hw
from weaksam.detection.rt_detr import (
    CLASS_HEADS,
    RTDetrDetector,
    canvas_hw,
    detr_detections,
    load_detector_weights,
    to_detr_target,
)
from weaksam.detection.training import build_optimizer


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def test_to_detr_target_golden() -> None:
    boxes = torch.tensor([[10.0, 20.0, 50.0, 60.0], [0.0, 0.0, 100.0, 50.0]])
    out = to_detr_target(boxes, torch.tensor([1, 3]), (100, 200))
    assert out["class_labels"].tolist() == [0, 2]
    torch.testing.assert_close(
        out["boxes"], torch.tensor([[0.15, 0.4, 0.2, 0.4], [0.25, 0.25, 0.5, 0.5]])
    )
    empty = to_detr_target(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), (32, 32))
    assert empty["boxes"].shape == (0, 4) and empty["class_labels"].shape == (0,)


def test_detr_detections_golden() -> None:
    # 2 queries x 2 classes; logits 2, 0 / -1, 1 -> scores .881, .5, .269, .731
    logits = torch.tensor([[2.0, 0.0], [-1.0, 1.0]])
    boxes = torch.tensor([[0.5, 0.5, 0.5, 0.5], [0.25, 0.25, 0.1, 0.2]])
    # canvas 100x200 (h, w); the image was resized x2 (sy = sx = 2) from 40x90
    out = detr_detections(logits, boxes, (100, 200), (2.0, 2.0), (40, 90), 0.4, 3)
    assert out["labels"].tolist() == [1, 2, 2]  # (query, class) pairs (0, 0), (1, 1), (0, 1)
    torch.testing.assert_close(out["scores"], torch.tensor([2.0, 1.0, 0.0]).sigmoid())
    # query 0: cx 100, cy 50, w 100, h 50 on the canvas -> XYXY 50,25,150,75 -> /2, clipped
    torch.testing.assert_close(out["boxes"][0], torch.tensor([25.0, 12.5, 75.0, 37.5]))
    torch.testing.assert_close(out["boxes"][1], torch.tensor([20.0, 7.5, 30.0, 17.5]))
    capped = detr_detections(logits, boxes, (100, 200), (2.0, 2.0), (40, 90), 0.0, 2)
    assert capped["labels"].tolist() == [1, 2]
    clipped = detr_detections(
        logits, torch.tensor([[0.5, 0.5, 1.0, 1.0]] * 2), (100, 200), (1.0, 1.0), (40, 90), 0.85, 5
    )
    torch.testing.assert_close(clipped["boxes"], torch.tensor([[0.0, 0.0, 90.0, 40.0]]))


def test_resize_and_canvas() -> None:
    assert resized_hw(100, 200, 50, 1000) == (50, 100)
    assert resized_hw(100, 400, 50, 120) == (30, 120)  # long side capped
    assert canvas_hw([(50, 100), (70, 40)], 32, 1) == (96, 128)
    # 32x32: 16 + 4 + 1 = 21 positions < 30 queries -> grown to 64x32 (42)
    assert canvas_hw([(20, 20)], 32, 30) == (64, 32)


def test_forward_backward_and_eval_format() -> None:
    torch.manual_seed(0)
    model = build_detector(TINY_DETR, 3)
    assert isinstance(model, RTDetrDetector)
    assert detector_num_classes(model) == 3 and not detector_has_masks(model)
    assert architecture_name(TINY_DETR, False) == "RT-DETR"
    model.train()
    images = [torch.rand(3, 60, 90), torch.rand(3, 70, 50)]
    targets = [
        {"boxes": torch.tensor([[5.0, 5.0, 40.0, 30.0]]), "labels": torch.tensor([2])},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)},
    ]
    losses = model(images, targets)
    assert set(losses) == {"loss_vfl", "loss_bbox", "loss_giou"}
    sum(losses.values()).backward()
    trunk_grads = [p.grad for p in model.trunk.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in trunk_grads)
    set_inference_size(model, 48)
    assert model.test_size == 48 and not model.training
    set_detector_limits(model, 0.0, 7)
    with torch.no_grad():
        outs = model(images)
    for img, out in zip(images, outs, strict=True):
        assert set(out) == {"boxes", "labels", "scores"}
        assert out["boxes"].shape == (7, 4) and out["labels"].dtype == torch.int64
        assert out["labels"].min() >= 1 and out["labels"].max() <= 3
        assert (out["scores"][:-1] >= out["scores"][1:]).all()
        h, w = img.shape[1:]
        assert (out["boxes"][:, 2] <= w).all() and (out["boxes"][:, 3] <= h).all()
    set_detector_limits(model, 0.99, 7)
    with torch.no_grad():
        assert all(len(o["boxes"]) == 0 for o in model(images))  # untrained: all below 0.99


def test_batch_without_boxes_trains() -> None:
    torch.manual_seed(1)
    model = build_detector(TINY_DETR, 2).train()
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}
    losses = model([torch.rand(3, 64, 64)] * 2, [empty, empty])
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    assert float(losses["loss_bbox"].detach()) == 0.0


def test_init_is_seeded_and_rcnn_untouched(tiny_model: DetectorModelConfig) -> None:
    a = init_detector(TINY_DETR, 2, seed=3)
    b = init_detector(TINY_DETR, 2, seed=3)
    for (k, v), w in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        torch.testing.assert_close(v, w, msg=k)
    assert tiny_model.family == "rcnn"
    rcnn = build_detector(tiny_model, 2)
    assert architecture_name(tiny_model, True) == "Mask R-CNN"
    assert detector_num_classes(rcnn) == 2 and not detector_has_masks(rcnn)


def test_resnet_trunk_weights_are_strict_and_frozen(tmp_path) -> None:
    torch.manual_seed(0)
    ref = resnet18()
    path = str(tmp_path / "r18.pt")
    torch.save(ref.state_dict(), path)
    cfg = dataclasses.replace(
        TINY_DETR,
        rt_detr=dataclasses.replace(TINY_DETR.rt_detr, trunk="resnet18"),
        weights=path,
        trainable_layers=2,
    )
    model = build_detector(cfg, 2)
    trunk = dict(model.trunk.named_parameters())
    torch.testing.assert_close(trunk["layer1.0.conv1.weight"], ref.layer1[0].conv1.weight)
    assert not trunk["layer2.0.conv1.weight"].requires_grad
    assert trunk["layer3.0.conv1.weight"].requires_grad
    state = ref.state_dict()
    state.pop("layer4.1.conv2.weight")
    torch.save(state, path)
    with pytest.raises(ValueError, match="missing"):
        build_detector(cfg, 2)


def test_plainconv_trunk_weights(tmp_path) -> None:
    """The CAM trunk loads through backbones.py's loader (as ``plainconv_fpn``; ``builtin`` is
    the committed width-48 file): frozen batch norms, stages below ``trainable_layers`` fixed."""
    from weaksam.cam.models import PlainConvBackbone

    torch.manual_seed(0)
    net = PlainConvBackbone(4)
    path = str(tmp_path / "bb.pt")
    torch.save({"model": net.state_dict(), "backbone": "plainconv", "width": 4}, path)
    cfg = dataclasses.replace(TINY_DETR, weights=path, trainable_layers=3)
    model = build_detector(cfg, 2)
    torch.testing.assert_close(model.trunk.layer1[0][0].weight, net.body[0][0].weight)
    assert isinstance(model.trunk.layer1[0][1], FrozenBatchNorm2d)
    assert not model.trunk.layer1[0][0].weight.requires_grad
    assert model.trunk.layer2[0][0].weight.requires_grad


def test_detector_weights_strict_with_head_reinit(tmp_path) -> None:
    torch.manual_seed(0)
    coco = build_detector(TINY_DETR, 5)  # "pretrained" on 5 classes
    path = str(tmp_path / "coco.pt")
    torch.save(coco.state_dict(), path)
    cfg = dataclasses.replace(
        TINY_DETR, rt_detr=dataclasses.replace(TINY_DETR.rt_detr, detector_weights=path)
    )
    torch.manual_seed(1)
    model = build_detector(cfg, 2)
    ours, theirs = model.state_dict(), coco.state_dict()
    heads = [k for k in ours if k.startswith(CLASS_HEADS)]
    assert heads and all(ours[k].shape != theirs[k].shape for k in heads if k.endswith("weight"))
    for k, v in ours.items():
        if not k.startswith(CLASS_HEADS):
            torch.testing.assert_close(v, theirs[k], msg=k)
    # a transformers-layout file (model.* keys) is accepted too
    torch.save({k.removeprefix("detr."): v for k, v in theirs.items()}, path)
    assert load_detector_weights(model, path) == sorted(heads)
    bad = dict(theirs)
    bad.pop("detr.model.enc_output.0.weight")
    torch.save(bad, path)
    with pytest.raises(ValueError, match="missing"):
        build_detector(cfg, 2)


def test_config_validation() -> None:
    detr = DetectorModelConfig(family="rt_detr")
    assert (
        RetrainConfig(model=detr, roi_drop=RoIDropConfig(enabled=False)).model.family == "rt_detr"
    )
    with pytest.raises(FieldError, match="RoI drop acts on the R-CNN"):
        RetrainConfig(model=detr)
    with pytest.raises(FieldError, match="compare_no_drop"):
        RetrainConfig(model=detr, roi_drop=RoIDropConfig(enabled=False), compare_no_drop=True)
    with pytest.raises(FieldError, match=r"model\.family must be one of rcnn, rt_detr"):
        RetrainConfig(model=DetectorModelConfig(family="mask2former"))
    with pytest.raises(FieldError, match=r"model\.family must be one of rcnn, mask2former"):
        WSISConfig(model=MaskModelConfig(family="rt_detr"))
    with pytest.raises(FieldError, match="family"):
        DetectorModelConfig(family="detr")
    with pytest.raises(FieldError, match="trunk"):
        RTDetrConfig(trunk="vit")
    with pytest.raises(FieldError, match="learn_initial_query"):
        RTDetrConfig(learn_initial_query=True)
    with pytest.raises(FieldError, match="multiple of"):
        RTDetrConfig(d_model=30, decoder_attention_heads=8)
    with pytest.raises(FieldError, match="optimizer"):
        DetectorTrainConfig(optimizer="adam")
    with pytest.raises(FieldError, match="trunk_lr_factor"):
        DetectorTrainConfig(trunk_lr_factor=0.0)
    with pytest.raises(ValueError, match="R-CNN"):
        build_detector(detr, 2, drop=RoIDropConfig())


def test_adamw_with_trunk_lr_factor(tiny_model: DetectorModelConfig) -> None:
    model = build_detector(TINY_DETR, 2)
    opt = build_optimizer(
        model, DetectorTrainConfig(optimizer="adamw", lr=1e-4, trunk_lr_factor=0.1)
    )
    assert isinstance(opt, torch.optim.AdamW)
    trunk = {id(p) for p in model.trunk.parameters()}
    factors = {
        (g.get("lr_factor", 1.0), all(id(p) in trunk for p in g["params"]))
        for g in opt.param_groups
    }
    assert factors == {(1.0, False), (0.1, True)}
    seen = [id(p) for g in opt.param_groups for p in g["params"]]
    assert len(seen) == len(set(seen)) == sum(p.requires_grad for p in model.parameters())
    # R-CNN defaults: SGD, the same two groups as before
    sgd = build_optimizer(build_detector(tiny_model, 2), DetectorTrainConfig())
    assert isinstance(sgd, torch.optim.SGD) and len(sgd.param_groups) == 2
    assert all("lr_factor" not in g for g in sgd.param_groups)
