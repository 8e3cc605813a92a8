"""Backbone name table, CAM head, pooling and ImageNet weight loading (tiny inputs)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torchvision.models import resnet18
from torchvision.models.vision_transformer import VisionTransformer

from weaksam.cam.config import ClassifierConfig
from weaksam.cam.models import BACKBONES, build_classifier, load_backbone_weights


def test_unknown_backbone_lists_known_names() -> None:
    with pytest.raises(ValueError, match=r"plainconv.*resnet18"):
        build_classifier(ClassifierConfig(backbone="vgg16"), 3)
    with pytest.raises(ValueError, match="pooling"):
        build_classifier(ClassifierConfig(backbone="plainconv", pooling="median"), 3)


@pytest.mark.parametrize(
    ("name", "size", "grid", "has_attention"),
    [("plainconv", 32, 4, False), ("resnet18", 32, 2, False), ("vit_micro", 32, 4, True)],
)
def test_backbones_give_maps_and_logits(
    name: str, size: int, grid: int, has_attention: bool
) -> None:
    torch.manual_seed(0)
    model = build_classifier(ClassifierConfig(backbone=name, width=4, input_size=size), 5).eval()
    with torch.no_grad():
        logits, cams, feats = model.forward_maps(torch.randn(2, 3, size, size))
        assert logits.shape == (2, 5) and cams.shape == (2, 5, grid, grid)
        assert (feats.attention is not None) == has_attention
        if feats.attention is not None:
            torch.testing.assert_close(feats.attention.sum(-1), torch.ones(2, grid * grid))
        # other input sizes work (ViT position embeddings are interpolated)
        assert model(torch.randn(1, 3, size + 16, size + 16)).shape == (1, 5)


def test_cam_head_matches_gap_logits() -> None:
    model = build_classifier(ClassifierConfig(backbone="plainconv", width=4), 3).eval()
    with torch.no_grad():
        logits, cams, feats = model.forward_maps(torch.randn(1, 3, 32, 32))
        gap = model.head(feats.maps.mean(dim=(2, 3)))
    torch.testing.assert_close(logits, gap, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(cams.mean(dim=(2, 3)) + model.head.bias, logits)


@pytest.mark.parametrize("pooling", ["max", "lse"])
def test_pooling_between_mean_and_max(pooling: str) -> None:
    model = build_classifier(ClassifierConfig(backbone="plainconv", width=4, pooling=pooling), 3)
    cams = torch.randn(2, 3, 4, 4)
    pooled = model._pool(cams)
    assert torch.all(pooled <= cams.flatten(2).amax(-1) + 1e-6)
    assert torch.all(pooled >= cams.flatten(2).mean(-1) - 1e-6)


def test_torchvision_name_table_is_explicit() -> None:
    assert {"plainconv", "resnet18", "resnet50", "vit_micro", "deit_tiny", "vit_b_16"} <= set(
        BACKBONES
    )


def test_imagenet_weights_strict_except_head(tmp_path: Any) -> None:
    net = resnet18(weights=None)  # ImageNet-shaped: a 1000-class fc that is left out
    path = str(tmp_path / "r18.pth")
    torch.save(net.state_dict(), path)
    model = build_classifier(ClassifierConfig(backbone="resnet18", weights=path), 4)
    torch.testing.assert_close(model.backbone.net.conv1.weight, net.conv1.weight)  # type: ignore[union-attr]
    with pytest.raises(FileNotFoundError):
        build_classifier(ClassifierConfig(backbone="resnet18", weights=str(tmp_path / "no")), 4)


def test_imagenet_weights_reject_missing_and_unexpected_keys(tmp_path: Any) -> None:
    src = VisionTransformer(32, 8, 4, 4, 128, 256, num_classes=1000)
    state = src.state_dict()
    del state["encoder.layers.encoder_layer_0.ln_1.weight"]
    state["extra.bias"] = torch.zeros(1)
    path = str(tmp_path / "vit.pth")
    torch.save(state, path)
    with pytest.raises(
        ValueError, match=r"missing \['encoder.layers.encoder_layer_0.ln_1.weight'\]"
    ):
        build_classifier(ClassifierConfig(backbone="vit_micro", input_size=32, weights=path), 4)


def test_vit_weights_with_other_image_size(tmp_path: Any) -> None:
    src = VisionTransformer(64, 8, 4, 4, 128, 256, num_classes=1000)  # trained at 64 px
    path = str(tmp_path / "vit.pth")
    torch.save(src.state_dict(), path)
    dst = VisionTransformer(32, 8, 4, 4, 128, 256)
    load_backbone_weights(dst, path)
    assert dst.encoder.pos_embedding.shape == (1, 1 + 16, 128)
    torch.testing.assert_close(dst.conv_proj.weight, src.conv_proj.weight)
