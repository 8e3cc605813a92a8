"""Mask2Former for the ``wsis`` stage: transformers' ``Mask2FormerForUniversalSegmentation``
(instance mode) behind torchvision's detection contract.

:func:`build_mask2former` builds the transformers model from a transformers
``Mask2FormerConfig`` (random init, nothing downloaded) and swaps our trunk in for its
backbone: a torchvision ResNet (ImageNet weights from ``cfg.weights``) or the demo CAM trunk
(``plainconv``, as ``plainconv_fpn`` loads it), returning the strides 4..32 maps its pixel
decoder reads. :class:`Mask2FormerDetector` owns the pre/post-processing:

* train: ``model(images, targets) -> {"loss_classifier", "loss_mask", "loss_dice"}`` (each
  summed over the final and the auxiliary decoder layers, weighted as Mask2Former weights
  them); ``images`` ``3xHxW`` float RGB in ``[0, 1]``; ``targets`` ``boxes`` (``Gx4`` XYXY,
  unused: Mask2Former learns from masks), ``labels`` (``G`` int64, ``1..C``) and ``masks``
  (``GxHxW`` uint8); ``G = 0`` is allowed (every query learns "no object").
* eval: ``model(images) -> [{"boxes", "labels", "scores", "masks"}]``: Mask2Former's instance
  inference (:func:`instance_results`), masks ``Nx1xHxW`` probabilities at the original size,
  boxes their extents (:func:`masks_to_boxes`), labels ``1..C``.

Each image is resized (short side drawn from ``cfg.min_size`` in training, ``test_size`` at
inference, long side capped at ``max_size``), normalised with ImageNet's mean and std and
zero-padded to a multiple of ``size_divisibility``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models import resnet18, resnet50
from torchvision.models._utils import IntermediateLayerGetter

from weaksam.detection.backbones import PlainConvTrunk, load_checked, read_state, resnet_trunk
from weaksam.detection.config import DetectorModelConfig
from weaksam.detection.resize import IMAGENET_MEAN, IMAGENET_STD, resized_hw

log = logging.getLogger(__name__)

_RETURN_LAYERS = {"layer1": "0", "layer2": "1", "layer3": "2", "layer4": "3"}
# The class-dependent entries of a detector state dict: re-initialised when loading weights
# trained on other classes (the class head and the loss's per-class weights).
CLASS_KEYS = (
    "net.class_predictor.weight",
    "net.class_predictor.bias",
    "net.criterion.empty_weight",
)


class TrunkOutput(NamedTuple):
    """What the pixel decoder reads from its backbone: ``feature_maps``, strides 4..32."""

    feature_maps: tuple[Tensor, ...]


class TrunkEncoder(nn.Module):
    """Our trunk in the place of transformers' backbone: ``body`` returns 4 maps (strides 4,
    8, 16, 32) with ``channels`` channels."""

    def __init__(self, body: nn.Module, channels: Sequence[int]) -> None:
        super().__init__()
        self.body = body
        self.channels = list(channels)

    def forward(self, pixel_values: Tensor) -> TrunkOutput:
        return TrunkOutput(tuple(self.body(pixel_values).values()))


def build_trunk(cfg: DetectorModelConfig) -> TrunkEncoder:
    """The trunk named ``cfg.mask2former.trunk`` (``weights`` and ``trainable_layers`` as for
    the R-CNNs' backbones; ``width`` for ``plainconv``)."""
    name = cfg.mask2former.trunk
    trunk: nn.Module
    if name == "resnet50":
        trunk, channels = resnet_trunk(resnet50, cfg), [256, 512, 1024, 2048]
    elif name == "resnet18":
        trunk, channels = resnet_trunk(resnet18, cfg), [64, 128, 256, 512]
    elif name == "plainconv":
        w = cfg.width
        trunk = PlainConvTrunk(w, cfg.weights, cfg.trainable_layers)
        channels = [2 * w, 4 * w, 4 * w, 4 * w]
    else:
        raise ValueError(
            f"unknown Mask2Former trunk {name!r}; known: ['plainconv', 'resnet18', 'resnet50']"
        )
    return TrunkEncoder(IntermediateLayerGetter(trunk, dict(_RETURN_LAYERS)), channels)


def hf_config(cfg: DetectorModelConfig, num_classes: int, channels: Sequence[int]) -> Any:
    """transformers' ``Mask2FormerConfig`` for ``cfg.mask2former``; its backbone is a stand-in
    (a one-block-per-stage transformers ResNet with our trunk's channels, random init, replaced
    by the trunk after construction), so no backbone weights are ever fetched."""
    from transformers import Mask2FormerConfig, ResNetConfig

    m = cfg.mask2former
    backbone: dict[str, Any] = {"out_features": ["stage1", "stage2", "stage3", "stage4"]}
    stand_in = ResNetConfig(
        embedding_size=8,
        hidden_sizes=list(channels),
        depths=[1, 1, 1, 1],
        layer_type="basic",
        **backbone,
    )
    # generic PreTrainedConfig arguments (not in Mask2FormerConfig's signature)
    generic: dict[str, Any] = {"use_pretrained_backbone": False, "num_labels": num_classes}
    return Mask2FormerConfig(
        backbone_config=stand_in,
        **generic,
        feature_size=m.hidden_dim,
        mask_feature_size=m.hidden_dim,
        hidden_dim=m.hidden_dim,
        encoder_feedforward_dim=m.encoder_ffn_dim,
        encoder_layers=m.encoder_layers,
        decoder_layers=m.decoder_layers + 1,  # transformers counts the initial prediction
        num_attention_heads=m.num_heads,
        dim_feedforward=m.decoder_ffn_dim,
        dropout=m.dropout,
        num_queries=m.num_queries,
        no_object_weight=m.no_object_weight,
        class_weight=m.class_weight,
        mask_weight=m.mask_weight,
        dice_weight=m.dice_weight,
        train_num_points=m.train_num_points,
        oversample_ratio=m.oversample_ratio,
        importance_sample_ratio=m.importance_sample_ratio,
        feature_strides=[4, 8, 16, 32],
        use_auxiliary_loss=True,
    )


# --------------------------------------------------------------------------- pure functions


def convert_target(
    masks: Tensor, labels: Tensor, size: tuple[int, int], padded: tuple[int, int]
) -> tuple[Tensor, Tensor]:
    """One image's targets in transformers' form.

    Args:
        masks: ``GxHxW`` uint8/bool instance masks at the original size.
        labels: ``G`` int64 classes ``1..C``.
        size: ``(h, w)`` of the resized image; padded: ``(Hp, Wp)`` of the padded batch.

    Returns ``mask_labels`` (``GxHpxWp`` float32 in {0, 1}: nearest-resized to ``size``,
    zero-padded) and ``class_labels`` (``G`` int64, ``0..C-1``).
    """
    g = int(masks.shape[0])
    out = torch.zeros((g, *padded), dtype=torch.float32, device=masks.device)
    if g:
        small = F.interpolate(masks[:, None].float(), size=size, mode="nearest")[:, 0]
        out[:, : size[0], : size[1]] = small
    return out, labels.to(torch.int64) - 1


def masks_to_boxes(binary: Tensor) -> Tensor:
    """``Nx4`` float32 XYXY boxes (continuous convention: pixel ``i`` spans ``[i, i+1]``)
    around the ``True`` pixels of ``NxHxW`` bool masks; an empty mask gives ``0, 0, 0, 0``."""
    n = int(binary.shape[0])
    boxes = torch.zeros((n, 4), dtype=torch.float32, device=binary.device)
    if n == 0:
        return boxes
    rows, cols = binary.any(dim=2), binary.any(dim=1)  # NxH, NxW
    nonempty = rows.any(dim=1)
    h, w = rows.shape[1], cols.shape[1]
    ar_h = torch.arange(h, device=binary.device)
    ar_w = torch.arange(w, device=binary.device)
    big = max(h, w) + 1
    y1 = torch.where(rows, ar_h, big).amin(dim=1)
    y2 = torch.where(rows, ar_h, -1).amax(dim=1) + 1
    x1 = torch.where(cols, ar_w, big).amin(dim=1)
    x2 = torch.where(cols, ar_w, -1).amax(dim=1) + 1
    found = torch.stack([x1, y1, x2, y2], dim=1).float()
    boxes[nonempty] = found[nonempty]
    return boxes


def select_queries(class_logits: Tensor, topk: int) -> tuple[Tensor, Tensor, Tensor]:
    """Mask2Former's instance inference, first half: the ``topk`` (query, class) pairs by class
    probability. ``class_logits``: ``Qx(C+1)`` (the last is "no object"). Returns ``scores``
    (``K`` probabilities, descending), ``labels`` (``K`` int64, ``0..C-1``), ``queries``
    (``K`` int64)."""
    probs = class_logits.softmax(-1)[:, :-1]  # QxC
    c = probs.shape[1]
    k = min(int(topk), probs.numel())
    scores, flat = probs.flatten().topk(k)
    return scores, flat % c, torch.div(flat, c, rounding_mode="floor")


def instance_results(
    scores: Tensor, labels: Tensor, mask_logits: Tensor, score_thresh: float, limit: int
) -> dict[str, Tensor]:
    """Mask2Former's instance inference, second half: score = class probability x mean mask
    probability inside the mask (``logit > 0``); keep scores ``>= score_thresh``, best first,
    at most ``limit``.

    Args:
        scores / labels: ``K`` from :func:`select_queries`.
        mask_logits: ``KxHxW`` mask logits of those queries at the original size.

    Returns ``boxes`` (``Nx4`` XYXY, :func:`masks_to_boxes`), ``labels`` (``N`` int64,
    ``1..C``), ``scores`` (``N``), ``masks`` (``Nx1xHxW`` float probabilities).
    """
    probs = mask_logits.sigmoid()
    binary = mask_logits > 0
    inside = binary.flatten(1).float()
    mask_score = (probs.flatten(1) * inside).sum(1) / (inside.sum(1) + 1e-6)
    final = scores * mask_score
    keep = torch.nonzero(final >= score_thresh).flatten()
    keep = keep[final[keep].argsort(descending=True, stable=True)][: int(limit)]
    return {
        "boxes": masks_to_boxes(binary[keep]),
        "labels": labels[keep].to(torch.int64) + 1,
        "scores": final[keep],
        "masks": probs[keep][:, None],
    }


# --------------------------------------------------------------------------- the model


class Mask2FormerDetector(nn.Module):
    """transformers' Mask2Former (``net``) with our trunk, resizing, normalisation, padding and
    instance post-processing (see the module docstring for the contract).

    ``score_thresh`` / ``detections_per_img`` / ``test_size`` are plain attributes read at
    every forward (the service sets the first two per batch)."""

    masks = True  # predicts masks (weaksam.detection.model.detector_has_masks)

    def __init__(self, net: nn.Module, cfg: DetectorModelConfig, num_classes: int) -> None:
        super().__init__()
        self.net = net
        self.num_classes = int(num_classes)
        self.min_size = tuple(int(s) for s in cfg.min_size)
        self.max_size = int(cfg.max_size)
        self.test_size = int(cfg.test_size)
        self.score_thresh = float(cfg.score_thresh)
        self.detections_per_img = int(cfg.detections_per_img)
        self.size_divisibility = int(cfg.mask2former.size_divisibility)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN)[:, None, None], persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD)[:, None, None], persistent=False)

    @property
    def trunk(self) -> nn.Module:
        """The trunk (torchvision ResNet or ``plainconv`` stages, as an
        ``IntermediateLayerGetter``)."""
        net: Any = self.net
        body: nn.Module = net.model.pixel_level_module.encoder.body
        return body

    def has_mask(self) -> bool:
        return True

    def _side(self) -> int:
        if not self.training:
            return self.test_size
        i = int(torch.empty(1).uniform_(0.0, float(len(self.min_size))).item())
        return self.min_size[min(i, len(self.min_size) - 1)]

    def preprocess(self, images: Sequence[Tensor]) -> tuple[Tensor, list[tuple[int, int]]]:
        """``Bx3xHpxWp`` normalised, zero-padded batch and each image's resized ``(h, w)``."""
        sizes, resized = [], []
        for img in images:
            h, w = int(img.shape[-2]), int(img.shape[-1])
            size = resized_hw(h, w, self._side(), self.max_size)
            x = F.interpolate(img[None].float(), size=size, mode="bilinear", align_corners=False)
            mean, std = self.get_buffer("mean"), self.get_buffer("std")
            resized.append((x[0] - mean) / std)
            sizes.append(size)
        d = self.size_divisibility
        hp = -(-max(s[0] for s in sizes) // d) * d
        wp = -(-max(s[1] for s in sizes) // d) * d
        batch = resized[0].new_zeros((len(images), 3, hp, wp))
        for i, x in enumerate(resized):
            batch[i, :, : x.shape[1], : x.shape[2]] = x
        return batch, sizes

    def forward(
        self, images: Sequence[Tensor], targets: Sequence[dict[str, Tensor]] | None = None
    ) -> Any:
        if self.training and targets is None:
            raise ValueError("targets are required in training mode")
        batch, sizes = self.preprocess(images)
        net: Any = self.net
        out = net(pixel_values=batch, output_auxiliary_logits=True)
        if self.training:
            assert targets is not None
            padded = (int(batch.shape[2]), int(batch.shape[3]))
            mask_labels, class_labels = [], []
            for t, size in zip(targets, sizes, strict=True):
                if "masks" not in t:
                    raise ValueError("Mask2Former trains on masks: targets need 'masks'")
                m, c = convert_target(t["masks"], t["labels"], size, padded)
                mask_labels.append(m)
                class_labels.append(c)
            losses = net.get_loss_dict(
                out.masks_queries_logits,
                out.class_queries_logits,
                mask_labels,
                class_labels,
                out.auxiliary_logits,
            )
            return {
                name: sum(v for k, v in losses.items() if k.startswith(prefix))
                for name, prefix in (
                    ("loss_classifier", "loss_cross_entropy"),
                    ("loss_mask", "loss_mask"),
                    ("loss_dice", "loss_dice"),
                )
            }
        return [
            self._postprocess(cls, masks, size, (int(img.shape[-2]), int(img.shape[-1])), batch)
            for cls, masks, size, img in zip(
                out.class_queries_logits, out.masks_queries_logits, sizes, images, strict=True
            )
        ]

    def _postprocess(
        self,
        class_logits: Tensor,
        mask_logits: Tensor,
        size: tuple[int, int],
        original: tuple[int, int],
        batch: Tensor,
    ) -> dict[str, Tensor]:
        scores, labels, queries = select_queries(class_logits, self.detections_per_img)
        logits = mask_logits[queries][None]  # 1xKxhxw at stride 4 of the padded batch
        logits = F.interpolate(logits, size=batch.shape[-2:], mode="bilinear", align_corners=False)
        logits = logits[:, :, : size[0], : size[1]]
        logits = F.interpolate(logits, size=original, mode="bilinear", align_corners=False)[0]
        return instance_results(scores, labels, logits, self.score_thresh, self.detections_per_img)


def load_detector_weights(model: nn.Module, path: str) -> list[str]:
    """Load a whole-detector state dict (this wrapper's keys; ``{"model": ...}`` accepted;
    ``weights_only=True``) into ``model``: every key must be present with its shape except
    :data:`CLASS_KEYS`, which keep their fresh initialisation. Raises ``ValueError`` on
    missing/unexpected keys or shapes; returns the re-initialised keys (logged)."""
    own = load_checked(model, read_state(path), lambda k: k in CLASS_KEYS, "Mask2Former", path)
    reinit = [k for k in CLASS_KEYS if k in own]
    log.info("%s: loaded; class-dependent heads re-initialised: %s", path, ", ".join(reinit))
    return reinit


def build_mask2former(cfg: DetectorModelConfig, num_classes: int) -> Mask2FormerDetector:
    """Mask2Former for ``num_classes`` foreground classes (see the module docstring): random
    init, our trunk (with its ImageNet/demo weights when ``cfg.weights`` is set), then the
    detector weights of ``cfg.mask2former.detector_weights`` when set."""
    if num_classes < 1:
        raise ValueError("num_classes must be >= 1")
    from transformers import Mask2FormerForUniversalSegmentation
    from transformers.utils import logging as hf_logging

    encoder = build_trunk(cfg)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # its "backbone resnet is not supported": it is replaced
    try:
        net = Mask2FormerForUniversalSegmentation(hf_config(cfg, num_classes, encoder.channels))
    finally:
        hf_logging.set_verbosity(verbosity)
    net.model.pixel_level_module.encoder = encoder  # the stand-in backbone is dropped
    model = Mask2FormerDetector(net, cfg, num_classes)
    if cfg.mask2former.detector_weights:
        load_detector_weights(model, cfg.mask2former.detector_weights)
    return model
