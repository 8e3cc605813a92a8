"""Convolutional backbones for the WSOD detector, from torchvision's classes.

``BACKBONES`` maps a name to a builder; every builder returns a :class:`Backbone`, which
normalises ``Bx3xHxW`` RGB images in ``[0, 255]`` and returns a ``BxDx(H/s)x(W/s)`` feature map
(``D = out_channels``, ``s = stride``):

========= ====== === ==============================================================
name      stride D   what
========= ====== === ==============================================================
vgg16     8      512 the method's VGG16: no pool4, no pool5, conv5 dilated x2, conv1-2 frozen
resnet18  8      256 conv1 .. layer3; layer3 at stride 1 with its 3x3 convs dilated x2
small     8      4w  plain 3x3 conv + BatchNorm, 4 stages (w = ``width``); for CPUs
plainconv 8      4w  the CAM classifier's ``plainconv`` trunk (w = ``width``); for CPUs
sam_demo  16     64  the demo SAM's image encoder (ViT + neck), any input size; for CPUs
========= ====== === ==============================================================

ImageNet weights come only from a local file (``torch.load(weights_only=True)``, a torchvision
state dict); every backbone key must be present (strict), keys of the parts we drop (VGG's
classifier, ResNet's layer4/fc) are ignored. ``sam_demo`` instead takes a SAM checkpoint
(``builtin`` = the committed demo SAM), loaded strictly by :mod:`weaksam.sam.build`: a
class-agnostic encoder trained on the ``blobs`` set, never on the benchmark's classes, which
stands in for ImageNet pre-training where no ImageNet weights exist (CPU demo).
``plainconv`` takes a backbone file of :mod:`weaksam.cam.models` (``builtin`` = the committed
demo backbone, pre-trained on image-level labels of a separate pool of synthetic images: the
demo's other stand-in for ImageNet weights). The normalisation is ImageNet's RGB mean/std for
all backbones (SAM uses the same numbers; the method's VGG used Caffe BGR means, but with
torchvision weights RGB is right).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import resnet18
from torchvision.models.vgg import cfgs, make_layers

IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)


class Backbone(nn.Module):
    """A feature extractor with its input normalisation.

    Attributes:
        body: the trunk. out_channels: ``D``. stride: ``s``.
        offset: cell ``i`` is centred on the continuous input coordinate ``s * i + offset``
            (default ``s / 2``, where pooling / patch stems put it; stride-2 3x3 convolutions
            with padding 1 put it at ``0.5``: see :class:`weaksam.cam.models.Backbone`).
            RoIAlign reads it (:meth:`weaksam.wsod.model.WSODModel._pool`).
        frozen: set by :func:`freeze`: no gradients, normalisation layers in eval mode.
    """

    def __init__(
        self, body: nn.Module, out_channels: int, stride: int, offset: float | None = None
    ) -> None:
        super().__init__()
        self.body = body
        self.out_channels = out_channels
        self.stride = stride
        self.offset = stride / 2 if offset is None else offset
        self.frozen = False
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), False)

    def train(self, mode: bool = True) -> Backbone:
        super().train(mode and not self.frozen)  # a frozen backbone stays in eval mode
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``Bx3xHxW`` float RGB in ``[0, 255]`` → ``BxDx(H/s)x(W/s)``."""
        mean: torch.Tensor = self.mean  # type: ignore[assignment]
        std: torch.Tensor = self.std  # type: ignore[assignment]
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            out: torch.Tensor = self.body((images - mean) / std)
        return out


def build_vgg16() -> Backbone:
    """VGG16 conv layers at stride 8 ("VGG16-OICR"): pool4 and pool5 removed, conv5_x dilated
    by 2, conv1_x and conv2_x frozen. Layer indices (and state-dict keys) stay torchvision's."""
    features = make_layers(cfgs["D"], batch_norm=False)  # VGG16's conv part only
    for m in features.modules():
        if isinstance(m, nn.Conv2d) and m.bias is not None:  # torchvision VGG's init
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)
    features[23] = nn.Identity()  # pool4
    features[30] = nn.Identity()  # pool5
    for idx in (24, 26, 28):  # conv5_1..3
        conv = features[idx]
        assert isinstance(conv, nn.Conv2d)
        conv.dilation, conv.padding = (2, 2), (2, 2)
    for idx in (0, 2, 5, 7):  # conv1_1, conv1_2, conv2_1, conv2_2
        for p in features[idx].parameters():
            p.requires_grad_(False)
    return Backbone(features, 512, 8)


def build_resnet18() -> Backbone:
    """ResNet-18 up to layer3 with layer3 at stride 1 and dilation 2 (stride 8, 256 channels).

    torchvision's BasicBlock refuses a dilation argument, so the convs are edited in place.
    """
    net = resnet18(weights=None)
    layer3 = net.layer3
    first = layer3[0]
    first.conv1.stride = (1, 1)
    assert first.downsample is not None
    first.downsample[0].stride = (1, 1)
    for block in layer3:
        for conv in (block.conv1, block.conv2):
            if conv is first.conv1:
                continue  # keep the first conv undilated: the input is still at stride 8
            conv.dilation, conv.padding = (2, 2), (2, 2)
    body = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, layer3)
    return Backbone(body, 256, 8, offset=0.5)  # stride-2 convs with padding: cell i on pixel 8i


def _conv_bn(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> list[nn.Module]:
    return [
        nn.Conv2d(cin, cout, 3, stride, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    ]


def build_small(width: int = 32) -> Backbone:
    """Four stages of two 3x3 conv-BN-ReLU: ``w, 2w, 4w`` at strides 2, 4, 8, then two convs
    dilated by 2 at stride 8 (a wider receptive field without losing resolution)."""
    w1, w2, w3 = width, 2 * width, 4 * width
    layers = [
        *_conv_bn(3, w1, 2),
        *_conv_bn(w1, w1),
        *_conv_bn(w1, w2, 2),
        *_conv_bn(w2, w2),
        *_conv_bn(w2, w3, 2),
        *_conv_bn(w3, w3),
        *_conv_bn(w3, w3, dilation=2),
        *_conv_bn(w3, w3, dilation=2),
    ]
    return Backbone(nn.Sequential(*layers), w3, 8, offset=0.5)


class SamEncoderBody(nn.Module):
    """A SAM image encoder (``ImageEncoderViT``: patch embedding, blocks, neck) that accepts any
    input whose sides are multiples of the patch size: the absolute position embedding is
    resized (bicubic) to the token grid; SAM's relative position tables resize themselves."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``Bx3xHxW`` normalised → ``B x D x H/16 x W/16``."""
        enc: Any = self.encoder
        tokens = enc.patch_embed(x)  # B x h x w x C
        pos = enc.pos_embed
        if pos is not None:
            if tuple(pos.shape[1:3]) != tuple(tokens.shape[1:3]):
                pos = F.interpolate(
                    pos.permute(0, 3, 1, 2),
                    size=tuple(tokens.shape[1:3]),
                    mode="bicubic",
                    align_corners=False,
                ).permute(0, 2, 3, 1)
            tokens = tokens + pos
        for blk in enc.blocks:
            tokens = blk(tokens)
        out: torch.Tensor = enc.neck(tokens.permute(0, 3, 1, 2))
        return out


def build_sam_demo() -> Backbone:
    """The demo SAM's image encoder (randomly initialised; see :func:`load_sam_encoder`)."""
    from weaksam.sam.build import build_sam_model

    sam = build_sam_model("demo")
    channels = int(sam.prompt_encoder.embed_dim)
    return Backbone(SamEncoderBody(sam.image_encoder), channels, 16)


def load_sam_encoder(backbone: Backbone, checkpoint: str) -> None:
    """Load a demo-SAM checkpoint (a path, or ``builtin``) into a ``sam_demo`` backbone with
    SAM's own strict, weights-only loader."""
    from weaksam.sam.build import SamConfig, build_sam

    sam = build_sam(SamConfig(model_type="demo", checkpoint=checkpoint, device="cpu"))
    body = backbone.body
    assert isinstance(body, SamEncoderBody)
    body.encoder.load_state_dict(sam.image_encoder.state_dict(), strict=True)


def freeze(backbone: Backbone) -> Backbone:
    """Freeze every parameter and keep normalisation layers in eval mode (see
    :class:`Backbone`'s ``frozen`` flag)."""
    for p in backbone.parameters():
        p.requires_grad_(False)
    backbone.frozen = True
    return backbone


def build_plainconv(width: int = 24) -> Backbone:
    """The CAM classifier's ``plainconv`` trunk (:class:`weaksam.cam.models.PlainConvBackbone`:
    seven conv-BN-ReLU layers, stride 8, ``4 * width`` channels)."""
    from weaksam.cam.models import PlainConvBackbone

    net = PlainConvBackbone(width)
    return Backbone(net.body, net.out_dim, net.stride, net.offset)


def resolve_backbone_file(name: str, weights: str) -> str:
    """The weights file of ``weights`` for backbone ``name`` (``builtin`` names the committed
    demo backbone of ``plainconv``)."""
    if weights == "builtin" and name == "plainconv":
        from weaksam.cam.models import DEMO_BACKBONE

        return DEMO_BACKBONE
    return weights


BACKBONES: dict[str, Callable[[int], Backbone]] = {
    "vgg16": lambda width: build_vgg16(),
    "plainconv": build_plainconv,
    "resnet18": lambda width: build_resnet18(),
    "small": build_small,
    "sam_demo": lambda width: build_sam_demo(),
}

# State-dict prefixes of an ImageNet checkpoint that map onto each backbone's ``body``.
_WEIGHT_KEYS: dict[str, Callable[[str], str | None]] = {
    "vgg16": lambda k: k[len("features.") :] if k.startswith("features.") else None,
    "resnet18": lambda k: _resnet_key(k),
    "plainconv": lambda k: k[len("body.") :] if k.startswith("body.") else None,
}
_RESNET_BODY = {"conv1": "0", "bn1": "1", "layer1": "4", "layer2": "5", "layer3": "6"}


def _resnet_key(key: str) -> str | None:
    head, _, rest = key.partition(".")
    return f"{_RESNET_BODY[head]}.{rest}" if head in _RESNET_BODY else None


def build_backbone(name: str, *, width: int = 32) -> Backbone:
    """The backbone called ``name`` (randomly initialised); ``ValueError`` lists known names."""
    try:
        builder = BACKBONES[name]
    except KeyError:
        raise ValueError(f"unknown backbone {name!r}; known: {sorted(BACKBONES)}") from None
    return builder(width)


def load_backbone_weights(
    backbone: Backbone, name: str, state: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Load an ImageNet state dict into ``backbone.body``, strictly.

    Every key of the body must come from ``state`` with the same shape; keys outside the body
    are returned (e.g. VGG's ``classifier.*`` for the RoI head to use). Raises ``ValueError``.
    """
    if name not in _WEIGHT_KEYS:
        raise ValueError(f"backbone {name!r} has no ImageNet weight mapping")
    mapped: dict[str, torch.Tensor] = {}
    rest: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        target = _WEIGHT_KEYS[name](key)
        if target is None:
            rest[key] = value
        else:
            mapped[target] = value
    own = backbone.body.state_dict()
    missing = sorted(set(own) - set(mapped))
    unexpected = sorted(set(mapped) - set(own))
    if missing or unexpected:
        raise ValueError(
            f"weights do not fit backbone {name!r}: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}"
        )
    bad = [k for k, v in mapped.items() if v.shape != own[k].shape]
    if bad:
        raise ValueError(f"weights for {name!r} have wrong shapes for {bad[:5]}")
    backbone.body.load_state_dict(mapped, strict=True)
    return rest
