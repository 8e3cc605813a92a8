"""The retrained detectors: one builder per family, dispatched on ``cfg.family``.

* ``rcnn``: torchvision's Faster R-CNN / Mask R-CNN with :class:`DropRoIHeads` (below);
* ``rt_detr``: transformers' RT-DETR (:func:`weaksam.detection.rt_detr.build_rt_detr`);
* ``mask2former``: transformers' Mask2Former
  (:func:`weaksam.detection.mask2former.build_mask2former`).

Every family follows torchvision's detection-model contract (losses in train mode; boxes,
labels, scores and masks in original pixels in eval mode). The transformer families expose
``num_classes``, ``masks``, ``score_thresh``, ``detections_per_img``, ``test_size`` and
``trunk``; the helpers below read them, or the R-CNN's equivalents.

For ``rcnn``, :func:`build_detector` composes a backbone (:mod:`weaksam.detection.backbones`),
torchvision's RPN and heads sized by :class:`DetectorModelConfig`, and swaps in
:class:`DropRoIHeads` (RoI drop in the box losses; inactive when ``drop`` is ``None`` or
disabled). The model owns its pre/post-processing: it takes ``3xHxW`` float RGB images in
``[0, 1]`` at any size and returns boxes (XYXY, original pixels), labels (``1..C``; 0 is
background) and scores, plus ``Nx1xHxW`` mask probabilities for Mask R-CNN.

With ``backbone: resnet50_fpn``, no weights and the torchvision-sized heads (``fpn_channels``
256, ``box_head_dim`` 1024, mask head 256 x 4), the module tree equals
``fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=C + 1)`` (and the
``maskrcnn_*`` one), apart from the RoI heads' class.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torchvision.models.detection import FasterRCNN, MaskRCNN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.rpn import AnchorGenerator
from torchvision.ops import MultiScaleRoIAlign

from weaksam.detection.backbones import build_backbone
from weaksam.detection.config import DetectorModelConfig, RoIDropConfig
from weaksam.detection.roi_heads import DropRoIHeads

ARCHITECTURES = ("faster_rcnn", "mask_rcnn")
# What reports and model cards call each (family, masks).
ARCHITECTURE_NAMES = {
    ("rcnn", False): "Faster R-CNN",
    ("rcnn", True): "Mask R-CNN",
    ("rt_detr", False): "RT-DETR",
    ("mask2former", True): "Mask2Former",
}


def architecture_name(cfg: DetectorModelConfig, masks: bool) -> str:
    """``Faster R-CNN``, ``Mask R-CNN``, ``RT-DETR`` or ``Mask2Former``."""
    try:
        return ARCHITECTURE_NAMES[(cfg.family, bool(masks))]
    except KeyError:
        raise ValueError(
            f"family {cfg.family!r} with masks={masks} is not a detector; known: "
            f"{sorted(ARCHITECTURE_NAMES)}"
        ) from None


def build_detector(
    cfg: DetectorModelConfig,
    num_classes: int,
    *,
    masks: bool = False,
    drop: RoIDropConfig | None = None,
) -> nn.Module:
    """The ``cfg.family`` detector for ``num_classes`` foreground classes: an R-CNN (Faster
    R-CNN, or Mask R-CNN with ``masks``), RT-DETR (boxes only) or Mask2Former (masks only).

    ``drop`` configures RoI drop in the R-CNN box losses (the trainer advances
    ``model.roi_heads.iteration``); ``None`` means never drop. Other families have no RoI
    drop: an enabled ``drop`` raises ``ValueError``.
    """
    if num_classes < 1:
        raise ValueError("num_classes must be >= 1")
    if cfg.family != "rcnn":
        if drop is not None and drop.enabled:
            raise ValueError(f"RoI drop is an R-CNN rule; disable it for family {cfg.family!r}")
        architecture_name(cfg, masks)  # the family/masks pairing must exist
        if cfg.family == "rt_detr":
            from weaksam.detection.rt_detr import build_rt_detr

            return build_rt_detr(cfg, num_classes)
        # imported here: transformers is loaded only by the families that need it
        from weaksam.detection.mask2former import (  # type: ignore[import-not-found, unused-ignore]
            build_mask2former,
        )

        model: nn.Module = build_mask2former(cfg, num_classes)
        return model
    return build_rcnn(cfg, num_classes, masks=masks, drop=drop)


def build_rcnn(
    cfg: DetectorModelConfig,
    num_classes: int,
    *,
    masks: bool = False,
    drop: RoIDropConfig | None = None,
) -> FasterRCNN:
    """A Faster R-CNN (``masks=False``) or Mask R-CNN for ``num_classes`` foreground classes."""
    backbone = build_backbone(cfg)
    ch = cfg.fpn_channels
    levels, ratio = ["0", "1", "2", "3"], cfg.roi_sampling_ratio
    kwargs: dict[str, Any] = {
        "box_roi_pool": MultiScaleRoIAlign(levels, 7, ratio),
        "min_size": tuple(cfg.min_size),
        "max_size": cfg.max_size,
        "rpn_pre_nms_top_n_train": cfg.rpn_pre_nms_train,
        "rpn_post_nms_top_n_train": cfg.rpn_post_nms_train,
        "rpn_pre_nms_top_n_test": cfg.rpn_pre_nms_test,
        "rpn_post_nms_top_n_test": cfg.rpn_post_nms_test,
        "rpn_batch_size_per_image": cfg.rpn_batch_size,
        "rpn_anchor_generator": AnchorGenerator(
            tuple((int(s),) for s in cfg.anchor_sizes), ((0.5, 1.0, 2.0),) * 5
        ),
        "box_head": TwoMLPHead(ch * 7 * 7, cfg.box_head_dim),
        "box_predictor": FastRCNNPredictor(cfg.box_head_dim, num_classes + 1),
        "box_batch_size_per_image": cfg.box_batch_size,
        "box_positive_fraction": cfg.box_positive_fraction,
        "box_score_thresh": cfg.score_thresh,
        "box_nms_thresh": cfg.nms_thresh,
        "box_detections_per_img": cfg.detections_per_img,
    }
    model: FasterRCNN
    if masks:
        mch = cfg.mask_head_channels
        model = MaskRCNN(
            backbone,
            mask_roi_pool=MultiScaleRoIAlign(levels, 14, ratio),
            mask_head=MaskRCNNHeads(ch, [mch] * cfg.mask_head_layers, 1),
            mask_predictor=MaskRCNNPredictor(mch, mch, num_classes + 1),
            **kwargs,
        )
    else:
        model = FasterRCNN(backbone, **kwargs)
    drop = drop if drop is not None else RoIDropConfig(enabled=False)
    model.roi_heads = DropRoIHeads.from_heads(model.roi_heads, drop)
    return model


def init_detector(
    cfg: DetectorModelConfig, num_classes: int, *, masks: bool = False, seed: int = 0
) -> nn.Module:
    """:func:`build_detector` with weights drawn from ``seed`` (the global RNG state is left as
    it was), ready for inference: eval mode, test size set. The same ``cfg`` and ``seed`` give
    the same weights; tests and the service's explicitly ``untrained`` detector use it."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_detector(cfg, num_classes, masks=masks)
    return set_inference_size(model, cfg.test_size)


def is_rcnn(model: nn.Module) -> bool:
    """Whether ``model`` is a torchvision R-CNN (not a transformer family)."""
    return isinstance(model, FasterRCNN)


def set_inference_size(model: nn.Module, test_size: int) -> nn.Module:
    """Resize test images to ``test_size`` on the short side (torchvision uses
    ``min_size[-1]`` in eval mode; the transformer families read ``test_size``); returns
    ``model`` in eval mode."""
    if is_rcnn(model):
        transform: Any = model.transform
        transform.min_size = (int(test_size),)
    else:
        setattr(model, "test_size", int(test_size))  # noqa: B010 - typed as a Module attribute
    return model.eval()


def detector_has_masks(model: nn.Module) -> bool:
    """Whether ``model`` predicts masks (Mask R-CNN, Mask2Former)."""
    if is_rcnn(model):
        heads: Any = model.roi_heads
        return bool(heads.has_mask())
    return bool(getattr(model, "masks", False))


def detector_num_classes(model: nn.Module) -> int:
    """``C``, the foreground classes of ``model``."""
    if is_rcnn(model):
        heads: Any = model.roi_heads
        return int(heads.box_predictor.cls_score.out_features) - 1
    return int(getattr(model, "num_classes"))  # noqa: B009 - an attribute of the contract


def detector_limits(model: nn.Module) -> tuple[float, int]:
    """``(score_thresh, detections_per_img)`` the model applies at inference."""
    owner: Any = model.roi_heads if is_rcnn(model) else model
    return float(owner.score_thresh), int(owner.detections_per_img)


def set_detector_limits(model: nn.Module, score_thresh: float, detections_per_img: int) -> None:
    """Set the inference score floor and cap (the R-CNN's RoI heads, or the model's own)."""
    owner: Any = model.roi_heads if is_rcnn(model) else model
    owner.score_thresh = float(score_thresh)
    owner.detections_per_img = int(detections_per_img)


def trunk_module(model: nn.Module) -> nn.Module | None:
    """The trunk of ``model`` (for ``trunk_lr_factor``): ``model.trunk`` of the transformer
    families, an R-CNN's ``backbone.body``; ``None`` when there is none."""
    trunk = getattr(model, "trunk", None)
    if isinstance(trunk, nn.Module):
        return trunk
    body = getattr(getattr(model, "backbone", None), "body", None)
    return body if isinstance(body, nn.Module) else None
