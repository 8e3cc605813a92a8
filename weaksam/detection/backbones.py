"""FPN backbones for the retrained detectors, from torchvision's classes.

``BACKBONES`` maps a name to a builder; each returns a torchvision ``BackboneWithFPN`` whose
``out_channels`` is ``fpn_channels`` and whose outputs are five levels ``"0"..."3"`` (strides
4, 8, 16, 32) and ``"pool"`` (stride 64), the layout torchvision's Faster/Mask R-CNN expect:

============= ===================================================================
name          what
============= ===================================================================
resnet50_fpn  torchvision's ResNet-50 FPN (the method's R50-FPN)
resnet18_fpn  the same with ResNet-18
small_fpn     plain 3x3 conv + GroupNorm trunk (widths w, 2w, 4w, 8w) for CPUs
plainconv_fpn the CAM classifier's ``plainconv`` trunk (strides 4, 8) + two new stride-2
              GroupNorm stages (16, 32), for CPUs; ``weights: builtin`` loads the committed
              demo backbone (the demo's stand-in for ImageNet weights)
============= ===================================================================

ResNets follow torchvision's detection builders: with ImageNet weights (a local classification
state dict, ``torch.load(weights_only=True)``, every trunk key required, ``fc.*`` ignored) the
batch norms are frozen and only the last ``trainable_layers`` stages train; with random init
the batch norms are ordinary and everything trains — so ``resnet50_fpn`` with no weights is
``fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None)``'s backbone.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torchvision.models import resnet18, resnet50
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool
from torchvision.ops.misc import FrozenBatchNorm2d

from weaksam.detection.config import DetectorModelConfig
from weaksam.train.checkpoint import torch_load

RESNET_STAGES = ("layer4", "layer3", "layer2", "layer1", "conv1")
_RETURN_LAYERS = {"layer1": "0", "layer2": "1", "layer3": "2", "layer4": "3"}


def read_state(path: str) -> dict[str, torch.Tensor]:
    """The state dict at ``path`` (``weights_only=True``; a local path, file:// or s3://;
    ``{"model": ...}`` accepted)."""
    state = torch_load(path)
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    return dict(state)


def load_checked(
    module: nn.Module,
    state: dict[str, torch.Tensor],
    ignore: Callable[[str], bool],
    what: str,
    path: str,
) -> dict[str, torch.Tensor]:
    """Load ``state`` (read from ``path``) into ``module``: every key of either side that
    ``ignore`` does not name must be on both sides with the same shape; the ignored ones are
    left as they are. Raises ``ValueError`` (naming ``what`` and ``path``) on missing/unexpected
    keys or shapes; returns ``module``'s state dict as it was before loading."""
    before = module.state_dict()
    state = {k: v for k, v in state.items() if not ignore(k)}
    own = {k: v for k, v in before.items() if not ignore(k)}
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise ValueError(
            f"{path}: weights do not fit the {what} (missing {missing[:5]}, "
            f"unexpected {unexpected[:5]})"
        )
    bad = [k for k in own if own[k].shape != state[k].shape]
    if bad:
        raise ValueError(f"{path}: shape mismatch for {bad[:5]}")
    # strict=False only for the ignored keys; everything else was checked above
    module.load_state_dict(state, strict=False)
    return before


def load_imagenet_weights(module: nn.Module, path: str) -> None:
    """Load a torchvision classification state dict into ``module`` (the trunk): every trunk
    key must be present with its shape; the classifier (``fc.*``) and batch-norm counters
    (``num_batches_tracked``, absent from frozen batch norms) are ignored. Raises
    ``ValueError`` on missing/unexpected keys or shapes."""

    def ignored(key: str) -> bool:
        return key.startswith("fc.") or key.endswith("num_batches_tracked")

    load_checked(module, read_state(path), ignored, "backbone", path)


def resnet_trunk(factory: Callable[..., nn.Module], cfg: DetectorModelConfig) -> nn.Module:
    """A torchvision ResNet (``resnet50``/``resnet18``) as a detection trunk: with ``cfg.weights``
    (ImageNet, :func:`load_imagenet_weights`) frozen batch norms and only the top
    ``cfg.trainable_layers`` stages trained; with random init ordinary batch norms, all
    trained."""
    pretrained = bool(cfg.weights)
    trunk = factory(weights=None, norm_layer=FrozenBatchNorm2d if pretrained else nn.BatchNorm2d)
    if pretrained:
        load_imagenet_weights(trunk, cfg.weights)
    layers = cfg.trainable_layers if pretrained else 5
    train = list(RESNET_STAGES[:layers]) + (["bn1"] if layers == 5 else [])
    for name, p in trunk.named_parameters():
        if all(not name.startswith(t) for t in train):
            p.requires_grad_(False)
    return trunk


def _resnet_fpn(
    factory: Callable[..., nn.Module], cfg: DetectorModelConfig, in_channels: list[int]
) -> BackboneWithFPN:
    trunk = resnet_trunk(factory, cfg)
    return BackboneWithFPN(
        trunk,
        return_layers=dict(_RETURN_LAYERS),
        in_channels_list=in_channels,
        out_channels=cfg.fpn_channels,
        extra_blocks=LastLevelMaxPool(),
    )


def build_resnet50_fpn(cfg: DetectorModelConfig) -> BackboneWithFPN:
    return _resnet_fpn(resnet50, cfg, [256, 512, 1024, 2048])


def build_resnet18_fpn(cfg: DetectorModelConfig) -> BackboneWithFPN:
    return _resnet_fpn(resnet18, cfg, [64, 128, 256, 512])


def _conv(cin: int, cout: int, stride: int) -> list[nn.Module]:
    groups = 8 if cout % 8 == 0 else 1
    return [
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.GroupNorm(groups, cout),
        nn.ReLU(inplace=True),
    ]


class SmallTrunk(nn.Module):
    """Plain conv trunk: stem at stride 2, then stages at strides 4, 8, 16, 32 (widths w, 2w,
    4w, 8w), two 3x3 convs each. Outputs are taken by ``BackboneWithFPN`` (``layer1..4``)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        w = width
        self.stem = nn.Sequential(*_conv(3, w, 2))
        self.layer1 = nn.Sequential(*_conv(w, w, 2), *_conv(w, w, 1))
        self.layer2 = nn.Sequential(*_conv(w, 2 * w, 2), *_conv(2 * w, 2 * w, 1))
        self.layer3 = nn.Sequential(*_conv(2 * w, 4 * w, 2), *_conv(4 * w, 4 * w, 1))
        self.layer4 = nn.Sequential(*_conv(4 * w, 8 * w, 2), *_conv(8 * w, 8 * w, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - via FPN getter
        out: torch.Tensor = self.layer4(self.layer3(self.layer2(self.layer1(self.stem(x)))))
        return out


def build_small_fpn(cfg: DetectorModelConfig) -> BackboneWithFPN:
    if cfg.weights:
        raise ValueError("small_fpn has no ImageNet weights; leave model.weights empty")
    w = cfg.width
    return BackboneWithFPN(
        SmallTrunk(w),
        return_layers=dict(_RETURN_LAYERS),
        in_channels_list=[w, 2 * w, 4 * w, 8 * w],
        out_channels=cfg.fpn_channels,
        extra_blocks=LastLevelMaxPool(),
    )


def frozen_batch_norms(module: nn.Module) -> nn.Module:
    """Replace every ``BatchNorm2d`` below ``module`` by a ``FrozenBatchNorm2d`` with its
    statistics and affine parameters (torchvision's treatment of pre-trained trunks: batches of
    two images cannot estimate batch statistics)."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps)
            frozen.weight.copy_(child.weight.detach())
            frozen.bias.copy_(child.bias.detach())
            assert child.running_mean is not None and child.running_var is not None
            frozen.running_mean.copy_(child.running_mean)
            frozen.running_var.copy_(child.running_var)
            setattr(module, name, frozen)
        else:
            frozen_batch_norms(child)
    return module


class PlainConvTrunk(nn.Module):
    """The ``plainconv`` CAM trunk as FPN stages: ``layer1`` = its first four layers (stride 4,
    ``2w``), ``layer2`` = the other three (stride 8, ``4w``), then two new stride-2 conv +
    GroupNorm stages ``layer3``/``layer4`` (strides 16 and 32, ``4w``).

    With ``weights``, ``trainable_layers`` counts the stages that train from the top, as for
    the ResNets: the new ``layer4`` and ``layer3`` always train, 3 adds ``layer2``, 4 or more
    ``layer1``; 2 or less keeps the pre-trained trunk fixed (its batch norms are frozen in
    every case). Without weights everything trains."""

    def __init__(self, width: int, weights: str = "", trainable_layers: int = 5) -> None:
        super().__init__()
        from weaksam.cam.models import DEMO_BACKBONE, PlainConvBackbone, load_backbone_weights

        net = PlainConvBackbone(width)
        if weights:
            load_backbone_weights(net, DEMO_BACKBONE if weights == "builtin" else weights)
            frozen_batch_norms(net)
        body = list(net.body.children())
        w = 4 * width
        self.layer1 = nn.Sequential(*body[:4])
        self.layer2 = nn.Sequential(*body[4:])
        self.layer3 = nn.Sequential(*_conv(w, w, 2))
        self.layer4 = nn.Sequential(*_conv(w, w, 2))
        if weights:
            for rank, stage in ((3, self.layer2), (4, self.layer1)):
                if trainable_layers < rank:
                    stage.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - via FPN getter
        out: torch.Tensor = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return out


def build_plainconv_fpn(cfg: DetectorModelConfig) -> BackboneWithFPN:
    w = cfg.width
    return BackboneWithFPN(
        PlainConvTrunk(w, cfg.weights, cfg.trainable_layers),
        return_layers=dict(_RETURN_LAYERS),
        in_channels_list=[2 * w, 4 * w, 4 * w, 4 * w],
        out_channels=cfg.fpn_channels,
        extra_blocks=LastLevelMaxPool(),
    )


def build_trunk(name: str, cfg: DetectorModelConfig) -> tuple[nn.Module, tuple[int, ...]]:
    """The trunk ``name`` (``resnet50``, ``resnet18``, ``plainconv``) of a transformer family
    and its channels at strides 8, 16, 32 (its ``layer2``, ``layer3``, ``layer4`` outputs);
    weights and frozen stages from ``cfg.weights`` / ``cfg.trainable_layers`` as for the
    R-CNN backbones."""
    if name == "resnet50":
        return resnet_trunk(resnet50, cfg), (512, 1024, 2048)
    if name == "resnet18":
        return resnet_trunk(resnet18, cfg), (128, 256, 512)
    if name == "plainconv":
        w = cfg.width
        return PlainConvTrunk(w, cfg.weights, cfg.trainable_layers), (4 * w, 4 * w, 4 * w)
    raise ValueError(f"unknown trunk {name!r}; known: ['plainconv', 'resnet18', 'resnet50']")


BACKBONES: dict[str, Callable[[DetectorModelConfig], BackboneWithFPN]] = {
    "plainconv_fpn": build_plainconv_fpn,
    "resnet50_fpn": build_resnet50_fpn,
    "resnet18_fpn": build_resnet18_fpn,
    "small_fpn": build_small_fpn,
}


def build_backbone(cfg: DetectorModelConfig) -> BackboneWithFPN:
    """The backbone named ``cfg.backbone``; unknown names raise ``ValueError``."""
    try:
        builder = BACKBONES[cfg.backbone]
    except KeyError:
        raise ValueError(
            f"unknown detector backbone {cfg.backbone!r}; known: {sorted(BACKBONES)}"
        ) from None
    return builder(cfg)
