"""torchvision's ``RoIHeads`` with RoI drop in its box losses (WeakSAM section 5).

:class:`DropRoIHeads` changes one thing: in training, ``loss_classifier`` and ``loss_box_reg``
come from :func:`weaksam.detection.roi_drop.fastrcnn_loss_with_drop`, active once
``iteration >= drop.operate_iter`` (the trainer sets :attr:`DropRoIHeads.iteration` before each
step). Sampling, the box head, the mask branch, inference: all the parent's.

How, without copying the parent's ``forward``: the parent computes the box losses inline
from the sampled labels and regression targets (returned by ``select_training_samples``) and
the box predictor's outputs. The subclass keeps those two for the current call (an override
of ``select_training_samples`` and a forward hook on ``box_predictor``), lets the parent run,
then replaces the two box losses with the drop-aware ones computed from the same tensors. The
parent's own box losses are computed and discarded (a few microseconds); gradients flow only
through the replacements. With drop inactive the replacements equal the parent's losses.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torchvision.models.detection.roi_heads import RoIHeads

from weaksam.detection.config import RoIDropConfig
from weaksam.detection.roi_drop import fastrcnn_loss_with_drop


class DropRoIHeads(RoIHeads):
    """``RoIHeads`` whose training box losses apply RoI drop.

    Args:
        *args, **kwargs: ``RoIHeads``'s own arguments.
        drop: the RoI drop settings (``enabled``, thresholds, ``operate_iter``).

    Attributes:
        iteration: the current training step (0-based), set by the trainer.
        dropped / foreground: foreground RoIs dropped, of those sampled, in the last training
            call (summed over the images of the batch).
    """

    def __init__(self, *args: Any, drop: RoIDropConfig, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.drop = drop
        self.iteration = 0
        self.dropped = 0
        self.over = (0, 0, 0)  # foreground RoIs over thresh_cls, thresh_reg, both (last step)
        self.foreground = 0
        self._sampled: tuple[list[torch.Tensor], list[torch.Tensor]] | None = None
        self._box_out: tuple[torch.Tensor, torch.Tensor] | None = None
        self.box_predictor.register_forward_hook(self._keep_box_outputs)

    @classmethod
    def from_heads(cls, heads: RoIHeads, drop: RoIDropConfig) -> DropRoIHeads:
        """The same parts and settings as ``heads`` (e.g. a torchvision builder's), with drop."""
        matcher, sampler = heads.proposal_matcher, heads.fg_bg_sampler
        return cls(
            heads.box_roi_pool,
            heads.box_head,
            heads.box_predictor,
            matcher.high_threshold,
            matcher.low_threshold,
            sampler.batch_size_per_image,
            sampler.positive_fraction,
            heads.box_coder.weights,
            heads.score_thresh,
            heads.nms_thresh,
            heads.detections_per_img,
            mask_roi_pool=heads.mask_roi_pool,
            mask_head=heads.mask_head,
            mask_predictor=heads.mask_predictor,
            drop=drop,
        )

    @property
    def drop_active(self) -> bool:
        return self.drop.enabled and self.iteration >= self.drop.operate_iter

    def _keep_box_outputs(self, module: nn.Module, inputs: Any, output: Any) -> None:
        if self.training:
            self._box_out = (output[0], output[1])

    def select_training_samples(
        self, proposals: list[torch.Tensor], targets: list[dict[str, torch.Tensor]] | None
    ) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
        out = super().select_training_samples(proposals, targets)
        self._sampled = (out[2], out[3])  # per image: sampled labels, regression targets
        return out

    def forward(
        self,
        features: dict[str, torch.Tensor],
        proposals: list[torch.Tensor],
        image_shapes: list[tuple[int, int]],
        targets: list[dict[str, torch.Tensor]] | None = None,
    ) -> tuple[list[dict[str, torch.Tensor]], dict[str, torch.Tensor]]:
        """The parent's forward; in training the box losses are replaced (module docstring)."""
        try:
            result, losses = super().forward(features, proposals, image_shapes, targets)
            if self.training:
                if self._sampled is None or self._box_out is None:
                    raise RuntimeError("RoIHeads.forward did not sample RoIs or run the predictor")
                labels, regression_targets = self._sampled
                class_logits, box_regression = self._box_out
                out = fastrcnn_loss_with_drop(
                    class_logits,
                    box_regression,
                    labels,
                    regression_targets,
                    self.drop_active,
                    self.drop.thresh_cls,
                    self.drop.thresh_reg,
                )
                losses["loss_classifier"] = out.loss_classifier
                losses["loss_box_reg"] = out.loss_box_reg
                self.dropped, self.foreground = out.dropped, out.foreground
                self.over = (out.over_cls, out.over_reg, out.over_both)
        finally:
            self._sampled = self._box_out = None
        return result, losses
