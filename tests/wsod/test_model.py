"""The WSOD model: heads per method, forward shapes, views and original-image coordinates."""

from __future__ import annotations

import pytest
import torch

from weaksam.geometry.box_coder import encode_boxes
from weaksam.wsod.backbones import BACKBONES, build_backbone, load_backbone_weights
from weaksam.wsod.config import WSODModelConfig
from weaksam.wsod.model import build_wsod_model
from weaksam.wsod.transforms import boxes_from_view, boxes_to_view, make_view, view_size

CFG = WSODModelConfig(backbone="small", width=8, hidden=32, refine_branches=3)
PROPS = torch.tensor([[0.0, 0.0, 40.0, 30.0], [10.0, 20.0, 90.0, 60.0], [50.0, 5.0, 70.0, 45.0]])


@pytest.mark.parametrize(
    ("method", "k", "mil", "reg"),
    [("wsddn", 0, True, False), ("oicr", 3, True, False), ("mist", 3, True, True),
     ("supervised", 1, False, True)],
)  # fmt: skip
def test_forward_shapes_per_method(method: str, k: int, mil: bool, reg: bool) -> None:
    torch.manual_seed(0)
    model = build_wsod_model(CFG, 5, method)
    images = [torch.rand(3, 80, 100) * 255, torch.rand(3, 64, 64) * 255]
    props = [PROPS, PROPS[:2]]
    out = model(images, props, scale=48, max_side=200, flips=[False, True])
    assert out.counts == [3, 2]
    assert out.refine_logits.shape == (k, 5, 6)
    assert (out.cls_logits is not None) == mil and (out.det_logits is not None) == mil
    if mil:
        assert out.cls_logits is not None and out.cls_logits.shape == (5, 5)
    assert (out.bbox_deltas is not None) == reg
    if out.bbox_deltas is not None:
        assert out.bbox_deltas.shape == (k, 5, 6, 4)
    assert [s.stop - s.start for s in out.slices] == [3, 2]


def test_head_init_is_small_normal() -> None:
    torch.manual_seed(0)
    model = build_wsod_model(WSODModelConfig(backbone="small", width=8, hidden=256), 20, "mist")
    w = model.heads.refine[0].weight
    assert abs(float(w.detach().std()) - 0.001) < 2e-4
    assert float(model.heads.refine[0].bias.detach().abs().sum()) == 0


def test_views_round_trip_and_sizes() -> None:
    assert view_size(375, 500, 480, 2000) == (480, 640)
    assert view_size(100, 1000, 480, 2000) == (200, 2000)  # longer side capped
    view = make_view(375, 500, 480, 2000, flip=True)
    b = boxes_to_view(PROPS, view)
    # flipped: x1' = W' - x2 * sx
    assert torch.allclose(b[0], torch.tensor([640 - 40 * 1.28, 0.0, 640.0, 30 * 1.28]))
    torch.testing.assert_close(boxes_from_view(b, view), PROPS)


def test_predict_boxes_are_in_original_coordinates() -> None:
    """Box deltas fixed at 'shift right by 10 % of the RoI width' in the network's frame: an
    unflipped pass at any scale moves each proposal right in original pixels, a flipped pass
    moves it left (the view is mirrored), and the two averaged give the proposal back."""
    from weaksam.wsod.postprocess import roi_scores_and_boxes

    torch.manual_seed(0)
    model = build_wsod_model(CFG, 2, "mist").eval()
    shift = torch.tensor([[0.1, 0.0, 0.1, 0.0]]) * (PROPS[:, 2:3] - PROPS[:, 0:1])
    target = encode_boxes(PROPS + shift, PROPS)[0]  # same dx for every RoI: 0.1 * wx = 1.0
    assert torch.allclose(target, torch.tensor([1.0, 0.0, 0.0, 0.0]), atol=1e-5)
    for head in model.heads.bbox:
        head.weight.data.zero_()
        head.bias.data = target.repeat(3)
    image = torch.rand(3, 60, 100) * 255
    for scales in ([60], [48, 90]):
        scores, boxes = model.predict(image, PROPS, scales, max_side=300, flip=False)
        assert scores.shape == (3, 2) and boxes.shape == (3, 2, 4)
        assert torch.all((scores >= 0) & (scores <= 1))
        for c in range(2):
            torch.testing.assert_close(boxes[:, c], PROPS + shift, atol=1e-3, rtol=0)
    with torch.no_grad():
        out = model([image], [PROPS], 75, 300, [True])
    _, flipped = roi_scores_and_boxes(out, PROPS)
    torch.testing.assert_close(flipped[:, 1], PROPS - shift, atol=1e-3, rtol=0)
    _, both = model.predict(image, PROPS, [60], max_side=300, flip=True)
    torch.testing.assert_close(both[:, 0], PROPS, atol=1e-3, rtol=0)


def test_oicr_boxes_are_the_proposals_and_wsddn_scores_are_phi() -> None:
    torch.manual_seed(0)
    image = torch.rand(3, 64, 96) * 255
    oicr = build_wsod_model(CFG, 4, "oicr").eval()
    _, boxes = oicr.predict(image, PROPS, [64], max_side=200, flip=True)
    torch.testing.assert_close(boxes, PROPS[:, None].expand(3, 4, 4))
    wsddn = build_wsod_model(CFG, 4, "wsddn").eval()
    scores, _ = wsddn.predict(image, PROPS, [64], max_side=200, flip=False)
    # phi sums to at most 1 over RoIs for each class (class softmax <= 1, RoI softmax sums to 1)
    assert torch.all(scores.sum(0) <= 1 + 1e-5)


def test_backbone_table_and_strict_weights(tmp_path) -> None:
    with pytest.raises(ValueError, match="known: \\['plainconv', 'resnet18', 'sam_demo'"):
        build_backbone("alexnet")
    assert set(BACKBONES) == {"vgg16", "resnet18", "small", "sam_demo", "plainconv"}
    r18 = build_backbone("resnet18")
    x = torch.rand(1, 3, 64, 96) * 255
    assert r18(x).shape == (1, 256, 8, 12) and r18.stride == 8
    from torchvision.models import resnet18

    full = resnet18(weights=None).state_dict()
    rest = load_backbone_weights(r18, "resnet18", full)
    assert set(rest) == {k for k in full if k.startswith(("layer4.", "fc."))}
    broken = {k: v for k, v in full.items() if not k.startswith("layer2.0.conv1")}
    with pytest.raises(ValueError, match="missing"):
        load_backbone_weights(r18, "resnet18", broken)
    # the model builder loads a weights file with weights_only=True
    path = tmp_path / "r18.pth"
    torch.save(full, path)
    cfg = WSODModelConfig(backbone="resnet18", weights=str(path), hidden=16)
    model = build_wsod_model(cfg, 3, "oicr")
    torch.testing.assert_close(model.backbone.body[0].weight, full["conv1.weight"])


def test_vgg16_stride8_variant() -> None:
    vgg = build_backbone("vgg16")
    assert vgg(torch.rand(1, 3, 64, 64) * 255).shape == (1, 512, 8, 8)
    frozen = [n for n, p in vgg.named_parameters() if not p.requires_grad]
    assert frozen == [f"body.{i}.{w}" for i in (0, 2, 5, 7) for w in ("weight", "bias")]


def test_sam_demo_backbone_any_size_frozen_and_strict(tmp_path) -> None:
    from weaksam.sam.build import build_sam_model, save_sam_checkpoint

    torch.manual_seed(0)
    sam = build_sam_model("demo")
    path = str(tmp_path / "sam.pt")
    save_sam_checkpoint(sam, path, {"model_type": "demo"})
    cfg = WSODModelConfig(
        backbone="sam_demo", weights=path, freeze_backbone=True, roi_op="align", hidden=16
    )
    model = build_wsod_model(cfg, 3, "oicr")
    torch.testing.assert_close(
        model.backbone.body.encoder.pos_embed,
        sam.image_encoder.pos_embed,  # type: ignore[union-attr]
    )
    assert model.backbone.stride == 16 and model.backbone.out_channels == 64
    feats = model.backbone(torch.rand(1, 3, 160, 224) * 255)  # not the encoder's 256 x 256
    assert feats.shape == (1, 64, 10, 14) and not feats.requires_grad
    model.train()
    assert not model.backbone.training and model.roi_head.training
    assert all(not p.requires_grad for p in model.backbone.parameters())
    out = model([torch.rand(3, 160, 224) * 255], [PROPS], 160, 400)
    out.refine_logits.sum().backward()  # gradients reach the heads only
    assert model.heads.refine[0].weight.grad is not None
    bad = {k: v for k, v in sam.state_dict().items() if not k.startswith("image_encoder.neck")}
    torch.save({"model": bad}, tmp_path / "bad.pt")
    with pytest.raises(ValueError):
        build_wsod_model(
            WSODModelConfig(backbone="sam_demo", weights=str(tmp_path / "bad.pt"), hidden=16),
            3,
            "oicr",
        )


def test_plainconv_backbone_loads_a_cam_backbone_file(tmp_path) -> None:
    """The CAM classifier's trunk and its exported weights file (``{"model": ..., meta}``)."""
    from weaksam.cam.models import PlainConvBackbone

    torch.manual_seed(0)
    trunk = PlainConvBackbone(8)
    path = tmp_path / "backbone.pt"
    torch.save({"model": trunk.state_dict(), "backbone": "plainconv", "width": 8}, path)
    cfg = WSODModelConfig(backbone="plainconv", width=8, weights=str(path), hidden=16)
    model = build_wsod_model(cfg, 3, "mist")
    torch.testing.assert_close(model.backbone.body[0][0].weight, trunk.body[0][0].weight)
    x = torch.rand(1, 3, 64, 96) * 255
    assert model.backbone(x).shape == (1, 32, 8, 12) and model.backbone.stride == 8
    broken = {k: v for k, v in trunk.state_dict().items() if not k.startswith("body.3.")}
    torch.save({"model": broken}, path)
    with pytest.raises(ValueError, match="missing"):
        build_wsod_model(cfg, 3, "mist")
    with pytest.raises(FileNotFoundError):
        build_wsod_model(
            WSODModelConfig(backbone="plainconv", weights=str(tmp_path / "no")), 3, "mist"
        )


@pytest.mark.parametrize("backbone, offset", [("small", 0.5), ("plainconv", 0.5), ("vgg16", 4.0)])
def test_roi_align_reads_the_backbone_cell_centres(backbone: str, offset: float) -> None:
    """One-cell RoIAligns of 1-px boxes read a lone hot cell ``(3, 5)`` most strongly when
    centred on ``(s * 5 + offset, s * 3 + offset)``, symmetrically on either side."""
    cfg = WSODModelConfig(backbone=backbone, width=8, roi_op="align", roi_size=1)
    model = build_wsod_model(cfg, 2, "oicr")
    assert model.backbone.offset == offset
    feats = torch.zeros(1, 1, 8, 8)
    feats[0, 0, 3, 5] = 1.0  # row 3, column 5
    s = model.backbone.stride
    cx, cy = s * 5 + offset, s * 3 + offset

    def read(dx: float) -> float:
        x = cx + dx
        roi = torch.tensor([[0.0, x - 0.5, cy - 0.5, x + 0.5, cy + 0.5]])
        return float(model._pool(feats, roi).flatten()[0])

    centre = read(0.0)
    assert centre > 0.9
    for d in (1.0, 2.0, 3.0):
        assert read(-d) == pytest.approx(read(d), abs=1e-6) and read(d) < centre - 0.05


def test_mil_background_heads_and_scores() -> None:
    """wetectron's MIST heads: C + 1 WSDDN columns; detections drop the background column."""
    from weaksam.wsod.outputs import HeadOutputs
    from weaksam.wsod.postprocess import roi_scores_and_boxes

    cfg = WSODModelConfig(backbone="small", width=8, hidden=32, mil_background=True)
    model = build_wsod_model(cfg, 5, "mist")
    assert model.heads.cls is not None and model.heads.cls.out_features == 6
    assert model.heads.refine[0].out_features == 6  # refinement: C + 1 as always
    wsddn = build_wsod_model(cfg, 5, "wsddn")
    out = wsddn(
        [torch.rand(3, 64, 64) * 255], [torch.tensor([[0.0, 0.0, 30.0, 30.0]] * 2)], 64, 64, [False]
    )
    assert isinstance(out, HeadOutputs) and out.mil_background
    scores, _ = roi_scores_and_boxes(out, torch.tensor([[0.0, 0.0, 30.0, 30.0]] * 2))
    assert scores.shape == (2, 5)


def test_head_init_std_is_configurable() -> None:
    cfg = WSODModelConfig(backbone="small", width=8, hidden=512, head_init_std=0.01)
    std = float(build_wsod_model(cfg, 20, "oicr").heads.refine[0].weight.detach().std())
    assert 0.008 < std < 0.012
