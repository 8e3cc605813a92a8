"""The retrained detectors: torchvision's Faster R-CNN / Mask R-CNN with :class:`DropRoIHeads`.

:func:`build_detector` composes a backbone (:mod:`weaksam.detection.backbones`), torchvision's
RPN and heads sized by :class:`DetectorModelConfig`, and swaps in :class:`DropRoIHeads` (RoI
drop in the box losses; inactive when ``drop`` is ``None`` or disabled). The model owns its
pre/post-processing: it takes ``3xHxW`` float RGB images in ``[0, 1]`` at any size and returns
boxes (XYXY, original pixels), labels (``1..C``; 0 is background) and scores, plus ``Nx1xHxW``
mask probabilities for Mask R-CNN.

With ``backbone: resnet50_fpn``, no weights and the torchvision-sized heads (``fpn_channels``
256, ``box_head_dim`` 1024, mask head 256 x 4), the module tree equals
``fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=C + 1)`` (and the
``maskrcnn_*`` one), apart from the RoI heads' class.
"""

from __future__ import annotations

from typing import Any

import torch
from torchvision.models.detection import FasterRCNN, MaskRCNN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.rpn import AnchorGenerator
from torchvision.ops import MultiScaleRoIAlign

from weaksam.detection.backbones import build_backbone
from weaksam.detection.config import DetectorModelConfig, RoIDropConfig
from weaksam.detection.roi_heads import DropRoIHeads

ARCHITECTURES = ("faster_rcnn", "mask_rcnn")


def build_detector(
    cfg: DetectorModelConfig,
    num_classes: int,
    *,
    masks: bool = False,
    drop: RoIDropConfig | None = None,
) -> FasterRCNN:
    """A Faster R-CNN (``masks=False``) or Mask R-CNN for ``num_classes`` foreground classes.

    ``drop`` configures RoI drop in the box losses (the trainer advances
    ``model.roi_heads.iteration``); ``None`` means never drop.
    """
    if num_classes < 1:
        raise ValueError("num_classes must be >= 1")
    if cfg.family == "mask2former":  # masks always; no RoI heads, so no RoI drop
        from weaksam.detection.mask2former import build_mask2former

        return build_mask2former(cfg, num_classes)
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
) -> FasterRCNN:
    """:func:`build_detector` with weights drawn from ``seed`` (the global RNG state is left as
    it was), ready for inference: eval mode, test size set. The same ``cfg`` and ``seed`` give
    the same weights; tests and the service's explicitly ``untrained`` detector use it."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_detector(cfg, num_classes, masks=masks)
    return set_inference_size(model, cfg.test_size)


def set_inference_size(model: FasterRCNN, test_size: int) -> FasterRCNN:
    """Resize test images to ``test_size`` on the short side (torchvision uses
    ``min_size[-1]`` in eval mode); returns ``model`` in eval mode."""
    if not hasattr(model, "transform"):  # Mask2Former: its own resizing
        model.test_size = int(test_size)
        return model.eval()
    model.transform.min_size = (int(test_size),)
    return model.eval()
