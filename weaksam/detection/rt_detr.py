"""RT-DETR for the ``retrain`` stage: transformers' ``RTDetrForObjectDetection`` behind
torchvision's detection-model contract.

:func:`build_rt_detr` builds transformers' model from :class:`RTDetrConfig` with random init
(nothing is downloaded: its own backbone is built as a tiny placeholder and replaced by our
trunk, :func:`weaksam.detection.backbones.build_trunk`, before any weights are loaded) and wraps
it in :class:`RTDetrDetector`, which owns the pre/post-processing:

* train: ``model(images, targets) -> {"loss_vfl", "loss_bbox", "loss_giou"}`` (each summed over
  the decoder layers, the encoder's top-k and the denoising groups, already weighted);
* eval: ``model(images) -> [{"boxes", "labels", "scores"}]`` in original pixels, labels
  ``1..C``.

Images are resized (one short side drawn per image from ``min_size`` in training, ``test_size``
at inference, long side capped at ``max_size``), ImageNet-normalised and zero-padded to a
common canvas (a multiple of ``size_divisor``). Boxes are normalised by the CANVAS, not the
image: the anchors and the predicted boxes live in the padded frame the network sees.

transformers normalises the DETR losses by the number of target boxes of its own batch; under
DDP the wrapper rescales them to DETR's normalisation by the mean number of boxes over the
workers (one all-reduce of a scalar per step), so a worker with few boxes does not weigh more.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models._utils import IntermediateLayerGetter
from transformers import RTDetrConfig as HFRTDetrConfig
from transformers import RTDetrForObjectDetection, RTDetrResNetConfig

from weaksam.detection.backbones import build_trunk, load_checked, read_state
from weaksam.detection.config import DetectorModelConfig
from weaksam.detection.resize import IMAGENET_MEAN, IMAGENET_STD, resized_hw

log = logging.getLogger(__name__)

FEATURE_STRIDES = (8, 16, 32)
# Parameters whose shape depends on the number of classes: re-initialised, never loaded from
# detector_weights (matched as prefixes of the wrapper's state-dict keys).
CLASS_HEADS = (
    "detr.model.denoising_class_embed.",
    "detr.model.enc_score_head.",
    "detr.model.decoder.class_embed.",
)
LOSS_NAMES = ("loss_vfl", "loss_bbox", "loss_giou")


# --------------------------------------------------------------------------- pure functions


def to_detr_target(
    boxes: torch.Tensor, labels: torch.Tensor, canvas_hw: tuple[int, int]
) -> dict[str, torch.Tensor]:
    """transformers' label dict of one image.

    Args:
        boxes: ``Gx4`` float XYXY pixels of the network input (after resizing).
        labels: ``G`` int64 in ``1..C`` (0 is background, never given).
        canvas_hw: the padded batch canvas ``(H, W)`` the boxes are normalised by.

    Returns ``{"class_labels": G int64 in 0..C-1, "boxes": Gx4 float normalised cxcywh}``.
    """
    h, w = canvas_hw
    b = boxes.reshape(-1, 4).float()
    cxcywh = torch.stack(
        [(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2, b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]],
        dim=1,
    )
    scale = torch.tensor([w, h, w, h], dtype=cxcywh.dtype, device=cxcywh.device)
    return {"class_labels": labels.reshape(-1).long() - 1, "boxes": cxcywh / scale}


def detr_detections(
    logits: torch.Tensor,
    pred_boxes: torch.Tensor,
    canvas_hw: tuple[int, int],
    resize: tuple[float, float],
    image_hw: tuple[int, int],
    score_thresh: float,
    detections_per_img: int,
) -> dict[str, torch.Tensor]:
    """One image's detections from RT-DETR's outputs (transformers' post-processing, plus a
    score floor and a cap).

    Args:
        logits: ``QxC`` class logits (sigmoid focal scores, no background class).
        pred_boxes: ``Qx4`` normalised cxcywh in the canvas.
        canvas_hw: the padded canvas ``(H, W)`` the boxes are normalised by.
        resize: ``(sy, sx)`` network-input pixels per original pixel.
        image_hw: the original image's ``(h, w)``; boxes are clipped to it.
        score_thresh / detections_per_img: floor and cap.

    Returns ``boxes`` ``Nx4`` float XYXY original pixels, ``labels`` ``N`` int64 ``1..C``,
    ``scores`` ``N`` float, best first: the top ``detections_per_img`` (query, class) pairs
    scoring ``>= score_thresh`` (a query may give several classes, as in RT-DETR).
    """
    q, c = logits.shape
    scores = logits.float().sigmoid().reshape(-1)
    k = min(int(detections_per_img), q * c)
    top, index = torch.topk(scores, k)
    keep = top >= score_thresh
    top, index = top[keep], index[keep]
    query, label = index // c, index % c
    cx, cy, bw, bh = pred_boxes.float()[query].unbind(-1)
    h, w = canvas_hw
    sy, sx = resize
    boxes = torch.stack(
        [
            (cx - bw / 2) * w / sx,
            (cy - bh / 2) * h / sy,
            (cx + bw / 2) * w / sx,
            (cy + bh / 2) * h / sy,
        ],
        dim=-1,
    ).reshape(-1, 4)
    ih, iw = image_hw
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, iw)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, ih)
    return {"boxes": boxes, "labels": label.long() + 1, "scores": top}


def canvas_hw(sizes: Sequence[tuple[int, int]], divisor: int, num_queries: int) -> tuple[int, int]:
    """The padded batch canvas: the largest height and width, rounded up to ``divisor``, grown
    (shorter side first) until the three feature maps (strides 8, 16, 32) hold at least
    ``num_queries`` positions (the encoder's top-k needs that many)."""
    h = max(s[0] for s in sizes)
    w = max(s[1] for s in sizes)
    h, w = math.ceil(h / divisor) * divisor, math.ceil(w / divisor) * divisor

    def positions(hh: int, ww: int) -> int:
        return sum(math.ceil(hh / s) * math.ceil(ww / s) for s in FEATURE_STRIDES)

    while positions(h, w) < num_queries:
        if h <= w:
            h += divisor
        else:
            w += divisor
    return h, w


# --------------------------------------------------------------------------- modules


class TrunkEncoder(nn.Module):
    """Our trunk in place of transformers' ``RTDetrConvEncoder``: ``forward(pixel_values,
    pixel_mask)`` returns ``[(feature, mask)]`` at strides 8, 16, 32 (``layer2..4``)."""

    def __init__(self, trunk: nn.Module, channels: Sequence[int]) -> None:
        super().__init__()
        self.body = IntermediateLayerGetter(
            trunk, return_layers={"layer2": "0", "layer3": "1", "layer4": "2"}
        )
        self.intermediate_channel_sizes = list(channels)

    def forward(
        self, pixel_values: torch.Tensor, pixel_mask: torch.Tensor
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        out = []
        for feature in self.body(pixel_values).values():
            mask = F.interpolate(pixel_mask[None].float(), size=feature.shape[-2:])[0]
            out.append((feature, mask.to(torch.bool)))
        return out


def hf_config(
    cfg: DetectorModelConfig, num_classes: int, channels: Sequence[int]
) -> HFRTDetrConfig:
    """transformers' ``RTDetrConfig`` of ``cfg.rt_detr`` for ``num_classes`` classes; its
    backbone is a tiny random placeholder with our trunk's channels (replaced at once;
    transformers 5.23 builds a ``backbone_config`` with random weights, never downloading)."""
    r = cfg.rt_detr
    backbone: dict[str, Any] = {
        "embedding_size": 8,
        "hidden_sizes": [8, *channels],
        "depths": [1, 1, 1, 1],
        "layer_type": "bottleneck",
        "out_features": ["stage2", "stage3", "stage4"],
    }
    kwargs: dict[str, Any] = {
        "backbone_config": RTDetrResNetConfig(**backbone),
        "num_labels": num_classes,
    }
    return HFRTDetrConfig(
        **kwargs,
        encoder_in_channels=list(channels),
        feat_strides=list(FEATURE_STRIDES),
        encoder_hidden_dim=r.encoder_hidden_dim,
        encoder_layers=r.encoder_layers,
        encoder_ffn_dim=r.encoder_ffn_dim,
        encoder_attention_heads=r.encoder_attention_heads,
        hidden_expansion=r.hidden_expansion,
        d_model=r.d_model,
        decoder_in_channels=[r.encoder_hidden_dim] * 3,
        decoder_layers=r.decoder_layers,
        decoder_ffn_dim=r.decoder_ffn_dim,
        decoder_attention_heads=r.decoder_attention_heads,
        decoder_n_points=r.decoder_n_points,
        num_queries=r.num_queries,
        num_denoising=r.num_denoising,
        label_noise_ratio=r.label_noise_ratio,
        box_noise_scale=r.box_noise_scale,
        # transformers 5.23 crashes with True (RTDetrModel tiles the nn.Embedding itself, not
        # its weight); the config rejects it
        learn_initial_query=False,
        dropout=r.dropout,
        weight_loss_vfl=r.weight_loss_vfl,
        weight_loss_bbox=r.weight_loss_bbox,
        weight_loss_giou=r.weight_loss_giou,
        matcher_class_cost=r.matcher_class_cost,
        matcher_bbox_cost=r.matcher_bbox_cost,
        matcher_giou_cost=r.matcher_giou_cost,
        focal_loss_alpha=r.focal_loss_alpha,
        focal_loss_gamma=r.focal_loss_gamma,
        auxiliary_loss=r.auxiliary_loss,
        anchor_image_size=None,  # anchors per input size (images vary in size)
    )


class RTDetrDetector(nn.Module):
    """RT-DETR with torchvision's detection contract (see the module docstring).

    Attributes:
        detr: transformers' ``RTDetrForObjectDetection`` (its ``model.backbone`` is a
            :class:`TrunkEncoder`).
        num_classes: ``C``. masks: always ``False`` (boxes only).
        min_size / max_size / test_size: resizing. score_thresh / detections_per_img:
            inference floor and cap (the service changes them per batch).
    """

    masks = False
    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, detr: RTDetrForObjectDetection, cfg: DetectorModelConfig, num_classes: int):
        super().__init__()
        self.detr = detr
        self.num_classes = int(num_classes)
        self.min_size = tuple(int(s) for s in cfg.min_size)
        self.max_size = int(cfg.max_size)
        self.test_size = int(cfg.test_size)
        self.score_thresh = float(cfg.score_thresh)
        self.detections_per_img = int(cfg.detections_per_img)
        self.size_divisor = int(cfg.rt_detr.size_divisor)
        self.num_queries = int(cfg.rt_detr.num_queries)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(3, 1, 1), persistent=False)

    @property
    def trunk(self) -> nn.Module:
        """The trunk (torchvision ResNet / ``plainconv`` stages), for its lr factor."""
        encoder = self.detr.model.backbone
        if not isinstance(encoder, TrunkEncoder):
            raise TypeError("the RT-DETR backbone must be a TrunkEncoder")
        return encoder.body

    def _batch(
        self, images: Sequence[torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, list[tuple[float, float]]]:
        """``(pixel_values Bx3xHxW normalised, pixel_mask BxHxW, [(sy, sx)] per image)``."""
        sizes, resized = [], []
        for img in images:
            h, w = int(img.shape[-2]), int(img.shape[-1])
            if self.training:
                side = self.min_size[int(torch.randint(len(self.min_size), ()).item())]
            else:
                side = self.test_size
            rh, rw = resized_hw(h, w, side, self.max_size)
            x = F.interpolate(
                img[None].float(), size=(rh, rw), mode="bilinear", align_corners=False
            )
            resized.append((x[0] - self.mean) / self.std)
            sizes.append((rh, rw, rh / h, rw / w))
        ch, cw = canvas_hw([(s[0], s[1]) for s in sizes], self.size_divisor, self.num_queries)
        pixels = resized[0].new_zeros((len(images), 3, ch, cw))
        mask = torch.zeros((len(images), ch, cw), dtype=torch.long, device=pixels.device)
        for i, x in enumerate(resized):
            pixels[i, :, : x.shape[1], : x.shape[2]] = x
            mask[i, : x.shape[1], : x.shape[2]] = 1
        return pixels, mask, [(s[2], s[3]) for s in sizes]

    def forward(
        self,
        images: Sequence[torch.Tensor],
        targets: Sequence[Mapping[str, torch.Tensor]] | None = None,
    ) -> dict[str, torch.Tensor] | list[dict[str, torch.Tensor]]:
        """Train: ``images`` (``3xHixWi`` float RGB in ``[0, 1]``) and ``targets`` (``boxes``
        ``Gix4`` XYXY pixels, ``labels`` ``Gi`` int64 ``1..C``) -> the three weighted losses.
        Eval: ``images`` -> per image ``boxes`` ``Nx4`` XYXY original pixels, ``labels`` ``N``
        int64 ``1..C``, ``scores`` ``N``."""
        if not images:
            raise ValueError("no images")
        pixels, mask, resize = self._batch(images)
        canvas = (int(pixels.shape[-2]), int(pixels.shape[-1]))
        if self.training:
            if targets is None:
                raise ValueError("targets are required in training mode")
            labels = [
                to_detr_target(
                    t["boxes"].to(pixels) * torch.tensor([sx, sy, sx, sy]).to(pixels),
                    t["labels"].to(pixels.device),
                    canvas,
                )
                for t, (sy, sx) in zip(targets, resize, strict=True)
            ]
            out = self.detr(pixel_values=pixels, pixel_mask=mask, labels=labels)
            factor = self._loss_factor(sum(len(t["class_labels"]) for t in labels), pixels.device)
            grouped = {name: pixels.new_zeros(()) for name in LOSS_NAMES}
            for key, value in out.loss_dict.items():
                base = key.split("_aux")[0].split("_dn")[0]
                grouped[base] = grouped[base] + value * factor
            return grouped
        out = self.detr(pixel_values=pixels, pixel_mask=mask)
        return [
            detr_detections(
                out.logits[i],
                out.pred_boxes[i],
                canvas,
                resize[i],
                (int(img.shape[-2]), int(img.shape[-1])),
                self.score_thresh,
                self.detections_per_img,
            )
            for i, img in enumerate(images)
        ]

    @staticmethod
    def _loss_factor(boxes: int, device: torch.device) -> float:
        """transformers divides by ``max(local boxes, 1)``; DETR divides by ``max(mean boxes
        over the workers, 1)``: the ratio (1 without a process group)."""
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            return 1.0
        world = torch.distributed.get_world_size()
        if world == 1:
            return 1.0
        total = torch.tensor([float(boxes)], device=device)
        torch.distributed.all_reduce(total)
        return max(boxes, 1) / max(float(total.item()) / world, 1.0)


def load_detector_weights(model: RTDetrDetector, path: str) -> list[str]:
    """Load a COCO-pretrained RT-DETR state dict of this wrapper's layout (``detr.*`` keys; a
    bare transformers state dict's ``model.*`` keys get the ``detr.`` prefix) from ``path``
    (``weights_only=True``). Every key but the class-dependent heads (:data:`CLASS_HEADS`) must
    be present with its shape; those heads keep their fresh initialisation. Returns (and logs)
    the re-initialised keys; raises ``ValueError`` on missing/unexpected keys or shapes."""
    state = read_state(path)
    if not any(k.startswith("detr.") for k in state):
        state = {f"detr.{k}": v for k, v in state.items()}

    def head(key: str) -> bool:
        return key.startswith(CLASS_HEADS)

    own = load_checked(model, state, head, "RT-DETR model", path)
    reinit = sorted(k for k in own if head(k))
    log.info("%s: loaded; class-dependent heads re-initialised: %s", path, reinit)
    return reinit


def build_rt_detr(cfg: DetectorModelConfig, num_classes: int) -> RTDetrDetector:
    """RT-DETR for ``num_classes`` foreground classes from ``cfg`` (``family: rt_detr``):
    random init, our trunk (``cfg.rt_detr.trunk`` with ``cfg.weights``), then
    ``cfg.rt_detr.detector_weights`` if given."""
    if num_classes < 1:
        raise ValueError("num_classes must be >= 1")
    trunk, channels = build_trunk(cfg.rt_detr.trunk, cfg)
    detr = RTDetrForObjectDetection(hf_config(cfg, num_classes, channels))
    detr.model.backbone = TrunkEncoder(trunk, channels)
    model = RTDetrDetector(detr, cfg, num_classes)
    if cfg.rt_detr.detector_weights:
        load_detector_weights(model, cfg.rt_detr.detector_weights)
    return model
