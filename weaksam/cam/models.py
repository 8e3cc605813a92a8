"""The multi-label CAM classifier: a backbone giving a feature map, and a linear class head.

Backbones (one builder, :func:`build_classifier`, and the name table :data:`BACKBONES`):

* ``plainconv`` / ``plainconv16`` — a small plain convolutional net (3x3 conv + BN + ReLU,
  output stride 8; or 16 with a 4x4 stride-4 patchify stem) for the CPU demo; not a published
  architecture.
* ``resnet18`` / ``resnet50`` — torchvision ResNets with the last stage at stride 1 (output
  stride 16, as CAM methods do; ``resnet50`` dilates it, ``resnet18``'s basic blocks cannot,
  so its stride is simply removed). Parameter names are torchvision's.
* ``vit_micro`` / ``deit_tiny`` / ``vit_b_16`` — torchvision ``VisionTransformer`` (patch 8,
  4 layers, dim 128 / DeiT-Ti dims / ViT-B/16). Patch tokens form the feature map; the last
  block's head-averaged patch-to-patch attention is returned as the affinity of the
  ``refined`` map. Position embeddings are interpolated for other input sizes.

The head is WeakSAM/CAM's: ``logits = W · GAP(features) + b`` and ``cam = W · features``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import ResNet, resnet18, resnet50
from torchvision.models.vision_transformer import VisionTransformer, vit_b_16

from weaksam import storage
from weaksam.cam.config import POOLINGS, ClassifierConfig
from weaksam.train.checkpoint import torch_load

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class Features:
    """A backbone's output for a batch.

    Attributes:
        maps: ``BxDxhxw`` float feature map (``h = H / stride``).
        attention: ``Bx(hw)x(hw)`` row-stochastic patch affinity (ViTs) or ``None`` (CNNs).
    """

    maps: torch.Tensor
    attention: torch.Tensor | None = None


class Backbone(nn.Module):
    """A feature extractor: ``forward(Bx3xHxW) -> Features`` with ``out_dim`` channels at
    ``1 / stride`` resolution.

    ``offset`` places the cells on the input: the receptive field of cell ``(i, j)`` is centred
    on the continuous input point ``(stride * j + offset, stride * i + offset)`` (pixel ``(r, c)``
    spans ``[c, c + 1) x [r, r + 1)``). A stride-2 3x3 convolution with padding 1 centres output
    ``j`` on input pixel ``2j``, so a stack of them gives ``offset = 0.5``, not the
    ``stride / 2`` that ``F.interpolate(align_corners=False)`` assumes: at stride 8 that is a
    3.5-px shift of every map (down and right; measured +10 px on 256-px images before it was
    corrected, see :func:`weaksam.cam.maps.upsample_aligned`).
    """

    out_dim: int
    stride: int
    offset: float

    def forward(self, x: torch.Tensor) -> Features:
        raise NotImplementedError


def _conv_bn(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class PlainConvBackbone(Backbone):
    """``plainconv``: 7 conv-BN-ReLU layers, widths ``w, w, 2w, 2w, 4w, 4w, 4w``, stride 8.

    ``patch_stem`` replaces the first 3x3 stride-2 conv by a 4x4 stride-4 "patchify" conv
    (``plainconv16``, output stride 16): the same cost on a twice larger input.
    """

    def __init__(self, width: int = 32, patch_stem: bool = False) -> None:
        super().__init__()
        w = width
        stem = (
            nn.Sequential(nn.Conv2d(3, w, 4, 4, bias=False), nn.BatchNorm2d(w), nn.ReLU(True))
            if patch_stem
            else _conv_bn(3, w, 2)
        )
        self.body = nn.Sequential(
            stem,
            _conv_bn(w, w),
            _conv_bn(w, 2 * w, 2),
            _conv_bn(2 * w, 2 * w),
            _conv_bn(2 * w, 4 * w, 2),
            _conv_bn(4 * w, 4 * w),
            _conv_bn(4 * w, 4 * w, dilation=2),
        )
        self.out_dim = 4 * w
        self.stride = 16 if patch_stem else 8
        # 3x3 stride-2 stem: cell i on input pixel 8i; 4x4 stride-4 stem: on pixels 16i..16i+3
        self.offset = 2.0 if patch_stem else 0.5

    def forward(self, x: torch.Tensor) -> Features:
        return Features(self.body(x))


class ResNetBackbone(Backbone):
    """A torchvision ResNet without its pooling and ``fc``; output stride 16."""

    stride = 16
    offset = 0.5  # conv1 (7x7, s2, p3), maxpool (3x3, s2, p1), 3x3/1x1 s2 convs: cell i on 16i

    def __init__(self, net: ResNet, out_dim: int) -> None:
        super().__init__()
        self.net = net
        self.out_dim = out_dim

    def forward(self, x: torch.Tensor) -> Features:
        n = self.net
        x = n.maxpool(n.relu(n.bn1(n.conv1(x))))
        x = n.layer4(n.layer3(n.layer2(n.layer1(x))))
        return Features(x)


def resize_pos_embedding(pos: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """``1x(1+n*n)xD`` ViT position embedding (class token first) resized to an ``h x w`` grid."""
    n = int(math.sqrt(pos.shape[1] - 1))
    if n == h == w:
        return pos
    grid = pos[:, 1:].reshape(1, n, n, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(h, w), mode="bicubic", align_corners=False)
    return torch.cat([pos[:, :1], grid.flatten(2).transpose(1, 2)], dim=1)


class ViTBackbone(Backbone):
    """A torchvision ``VisionTransformer``'s patch tokens as a map, plus last-block attention."""

    def __init__(self, vit: VisionTransformer) -> None:
        super().__init__()
        self.vit = vit
        self.stride = vit.patch_size
        self.offset = vit.patch_size / 2  # a token covers its patch: centred on it
        self.out_dim = vit.hidden_dim

    def forward(self, x: torch.Tensor) -> Features:
        vit = self.vit
        b, _, hh, ww = x.shape
        h, w = hh // self.stride, ww // self.stride
        tokens = vit.conv_proj(x[:, :, : h * self.stride, : w * self.stride])
        tokens = tokens.flatten(2).transpose(1, 2)
        tokens = torch.cat([vit.class_token.expand(b, -1, -1), tokens], dim=1)
        enc = vit.encoder
        tokens = enc.dropout(tokens + resize_pos_embedding(enc.pos_embedding, h, w))
        blocks = list(enc.layers)
        for block in blocks[:-1]:
            tokens = block(tokens)
        last = blocks[-1]
        # The last EncoderBlock unrolled to also return its (head-averaged) attention weights.
        y = last.ln_1(tokens)
        y, attn = last.self_attention(y, y, y, need_weights=True, average_attn_weights=True)
        tokens = tokens + last.dropout(y)
        tokens = tokens + last.mlp(last.ln_2(tokens))
        tokens = enc.ln(tokens)
        maps = tokens[:, 1:].transpose(1, 2).reshape(b, -1, h, w)
        pp = attn[:, 1:, 1:]  # patch -> patch, renormalised without the class token
        pp = pp / pp.sum(-1, keepdim=True).clamp_min(1e-8)
        return Features(maps, pp)


class CAMClassifier(nn.Module):
    """Backbone + linear class head. Input: ``Bx3xHxW`` normalised images.

    ``cam = W · features`` (``BxCxhxw``, before ReLU) and ``logits = pool(cam) + b``: with
    ``avg`` pooling this is CAM's ``W · GAP(features) + b``; ``max`` is global max pooling and
    ``lse`` the log-sum-exp ``log(mean(exp(r · cam))) / r`` between the two, which keeps the
    gradient of small objects from being diluted by the background.
    """

    def __init__(
        self, backbone: Backbone, num_classes: int, pooling: str = "avg", lse_r: float = 5.0
    ) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {pooling!r}; known: {list(POOLINGS)}")
        self.backbone = backbone
        self.head = nn.Linear(backbone.out_dim, num_classes)
        self.stride = backbone.stride
        self.offset = backbone.offset
        self.pooling = pooling
        self.lse_r = lse_r

    def _pool(self, cams: torch.Tensor) -> torch.Tensor:
        flat = cams.flatten(2)
        if self.pooling == "max":
            return flat.amax(-1)
        if self.pooling == "lse":
            r = self.lse_r
            return (torch.logsumexp(r * flat, dim=-1) - math.log(flat.shape[-1])) / r
        return flat.mean(-1)

    def forward_maps(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, Features]:
        """(``BxC`` logits, ``BxCxhxw`` raw class activations, the backbone's features)."""
        feats = self.backbone(x)
        cams = torch.einsum("cd,bdhw->bchw", self.head.weight, feats.maps)
        return self._pool(cams) + self.head.bias, cams, feats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_maps(x)[0]


def _no_stride(layer: nn.Module) -> None:
    """Set the stride of a ResNet stage's first block (conv and shortcut) to 1."""
    block = layer[0]  # type: ignore[index]
    for m in (getattr(block, "conv1", None), getattr(block, "conv2", None)):
        if isinstance(m, nn.Conv2d) and m.stride == (2, 2):
            m.stride = (1, 1)
    if block.downsample is not None:
        block.downsample[0].stride = (1, 1)


def _resnet18(cfg: ClassifierConfig) -> tuple[nn.Module, Backbone, int]:
    net = resnet18(weights=None)
    _no_stride(net.layer4)
    return net, ResNetBackbone(net, 512), 16


def _resnet50(cfg: ClassifierConfig) -> tuple[nn.Module, Backbone, int]:
    net = resnet50(weights=None, replace_stride_with_dilation=[False, False, True])
    return net, ResNetBackbone(net, 2048), 16


def _vit(
    patch: int, layers: int, heads: int, dim: int, mlp: int
) -> Callable[[ClassifierConfig], tuple[nn.Module, Backbone, int]]:
    def build(cfg: ClassifierConfig) -> tuple[nn.Module, Backbone, int]:
        size = max(patch, cfg.input_size // patch * patch)
        vit = VisionTransformer(size, patch, layers, heads, dim, mlp)
        return vit, ViTBackbone(vit), patch

    return build


def _vit_b_16(cfg: ClassifierConfig) -> tuple[nn.Module, Backbone, int]:
    vit = vit_b_16(weights=None, image_size=max(16, cfg.input_size // 16 * 16))
    return vit, ViTBackbone(vit), 16


def _plainconv(cfg: ClassifierConfig) -> tuple[nn.Module, Backbone, int]:
    body = PlainConvBackbone(cfg.width)
    return body, body, 8


def _plainconv16(cfg: ClassifierConfig) -> tuple[nn.Module, Backbone, int]:
    body = PlainConvBackbone(cfg.width, patch_stem=True)
    return body, body, 16


# name -> builder returning (module that ImageNet weights load into, backbone, stride)
BACKBONES: dict[str, Callable[[ClassifierConfig], tuple[nn.Module, Backbone, int]]] = {
    "plainconv": _plainconv,
    "plainconv16": _plainconv16,
    "resnet18": _resnet18,
    "resnet50": _resnet50,
    "vit_micro": _vit(8, 4, 4, 128, 256),
    "deit_tiny": _vit(16, 12, 3, 192, 768),
    "vit_b_16": _vit_b_16,
}

# classifier heads left out of the strict key check of backbone weights (torchvision's)
_HEAD_PREFIXES = ("fc.", "heads.")

BUILTIN = "builtin"
"""``weights: builtin`` names the committed demo backbone, :data:`DEMO_BACKBONE`."""
DEMO_BACKBONE = os.path.join(
    os.path.dirname(os.path.dirname(__file__)), "assets", "demo_backbone.pt"
)
"""``plainconv`` pre-trained on image-level labels of a separate pool of synthetic ``shapes``
images (``configs/demo_backbone{,_hires}.yaml``): the demo's stand-in for ImageNet weights."""


def resolve_weights(cfg: ClassifierConfig) -> str:
    """The backbone weights file of ``cfg`` (``""``: random init; ``builtin``: the committed
    demo backbone, :data:`DEMO_BACKBONE`), absolute: a relative path is taken from the current
    directory, so resolve in the driver (Ray workers run in other directories)."""
    if cfg.weights == BUILTIN:
        return DEMO_BACKBONE
    return storage.absolute(cfg.weights) if cfg.weights else ""


def read_backbone_file(path: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state dict, metadata) of a backbone weights file, loaded with ``weights_only=True``.

    Accepted: a bare state dict (torchvision's ImageNet files), or a dict holding it under
    ``model`` (the metadata is then the rest of that dict, e.g. :func:`export_backbone`'s
    ``backbone`` and ``width``).
    """
    if not storage.is_file(path):
        raise FileNotFoundError(f"backbone weights not found: {path}")
    blob = torch_load(path)  # a local path, file:// or s3://
    if not isinstance(blob, dict):
        raise ValueError(f"weights {path}: expected a state dict, got {type(blob).__name__}")
    if "model" in blob and isinstance(blob["model"], dict):
        return dict(blob["model"]), {k: v for k, v in blob.items() if k != "model"}
    return dict(blob), {}


def load_backbone_weights(
    module: nn.Module, path: str, cfg: ClassifierConfig | None = None
) -> None:
    """Load backbone weights from ``path`` into ``module`` (the first value of a
    :data:`BACKBONES` builder: the torchvision net, or the ``plainconv`` backbone itself).

    ``torch.load(weights_only=True)``; every key and shape must match except the classifier
    head (``fc.*`` / ``heads.*``), which is never loaded. A ViT's position embedding is
    interpolated when the file was trained at another image size. When the file names its
    ``backbone`` / ``width`` (as :func:`export_backbone` writes) and ``cfg`` is given, they must
    match ``cfg``. Raises ``ValueError`` naming the offending keys or settings.
    """
    state, meta = read_backbone_file(path)
    if cfg is not None:
        for key in ("backbone", "width"):
            if key in meta and meta[key] != getattr(cfg, key):
                raise ValueError(
                    f"weights {path} are for {key}={meta[key]!r}, the config has "
                    f"{key}={getattr(cfg, key)!r}"
                )
    state = {k: v for k, v in state.items() if not k.startswith(_HEAD_PREFIXES)}
    own = {k: v for k, v in module.state_dict().items() if not k.startswith(_HEAD_PREFIXES)}
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise ValueError(
            f"weights {path} do not match the backbone: missing {missing[:8]}, "
            f"unexpected {unexpected[:8]}"
        )
    pos_key = "encoder.pos_embedding"
    if pos_key in state and state[pos_key].shape != own[pos_key].shape:
        n = int(math.sqrt(own[pos_key].shape[1] - 1))
        state[pos_key] = resize_pos_embedding(state[pos_key], n, n)
    bad = [k for k in own if own[k].shape != state[k].shape]
    if bad:
        raise ValueError(f"weights {path}: shape mismatch for {bad[:8]}")
    module.load_state_dict(state, strict=False)


def backbone_state(model: CAMClassifier, cfg: ClassifierConfig) -> dict[str, torch.Tensor]:
    """``model``'s backbone weights under the key names :func:`load_backbone_weights` expects
    (those of the module ImageNet weights load into), without the class head."""
    weights_into, backbone, _ = BACKBONES[cfg.backbone](cfg)
    backbone.load_state_dict(model.backbone.state_dict(), strict=True)
    return {k: v.detach().clone() for k, v in weights_into.state_dict().items()}


def build_classifier(cfg: ClassifierConfig, num_classes: int) -> CAMClassifier:
    """The :class:`CAMClassifier` named by ``cfg.backbone``: random init, or the backbone
    weights of ``cfg.weights`` (see :func:`resolve_weights`); the class head is always new.

    Raises ``ValueError`` listing the known backbones for an unknown name.
    """
    try:
        builder = BACKBONES[cfg.backbone]
    except KeyError:
        raise ValueError(f"unknown backbone {cfg.backbone!r}; known: {sorted(BACKBONES)}") from None
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    weights_into, backbone, _ = builder(cfg)
    if cfg.weights:
        load_backbone_weights(weights_into, resolve_weights(cfg), cfg)
    return CAMClassifier(backbone, num_classes, cfg.pooling, cfg.lse_r)
