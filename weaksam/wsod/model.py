"""The WSOD detector: backbone → RoI pooling → fc6/fc7 → WSDDN, refinement and box heads.

Heads per method (``C`` classes; refinement columns ``C + 1`` with background at index 0):

========== ================ ================= ==============================
method     WSDDN cls + det  K refinement      class-specific box deltas
========== ================ ================= ==============================
wsddn      Linear → C, C    -                 -
oicr       Linear → C, C    K x Linear → C+1  -
mist       Linear → C, C    K x Linear → C+1  K x Linear → 4(C+1)
supervised -                1 x Linear → C+1  1 x Linear → 4(C+1)
========== ================ ================= ==============================

WSDDN's heads have no background column by default; ``model.mil_background`` gives them
``C + 1`` columns with the background at index 0, as wetectron's ``MISTPredictor`` (the
background column is in every RoI's class softmax, so it changes ``phi``; its image label is
always 0, method §3a). Heads are initialised N(0, ``head_init_std``): 0.001 in wetectron,
0.01 in WSOD2's OICR. The model owns its pre- and post-processing: it takes images in original
pixels and proposals in original-image coordinates, makes the view (resize, flip), pools, and
returns per-RoI outputs that need no further geometry (box deltas are expressed for the
original, unflipped image), or, with :meth:`WSODModel.predict`, scores and boxes in
original-image coordinates.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torchvision.ops import roi_align, roi_pool

from weaksam import storage
from weaksam.train.checkpoint import torch_load
from weaksam.wsod.backbones import (
    Backbone,
    build_backbone,
    freeze,
    load_backbone_weights,
    load_sam_encoder,
    resolve_backbone_file,
)
from weaksam.wsod.cdb import ConcreteDropBlock
from weaksam.wsod.config import METHODS, WSODModelConfig, branch_count
from weaksam.wsod.outputs import HeadOutputs
from weaksam.wsod.postprocess import merge_passes, roi_scores_and_boxes
from weaksam.wsod.transforms import (
    boxes_to_view,
    image_to_view,
    make_view,
    pad_batch,
)

HEAD_INIT_STD = 0.001  # wetectron's (MIST); WSOD2's OICR uses 0.01


class RoIHead(nn.Module):
    """fc6 → ReLU → dropout → fc7 → ReLU → dropout on ``D x S x S`` pooled features."""

    def __init__(self, in_features: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.fc6 = nn.Linear(in_features, hidden)
        self.fc7 = nn.Linear(hidden, hidden)
        self.drop = nn.Dropout(dropout)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        """``NxDxSxS`` → ``N x hidden``."""
        x = self.drop(torch.relu(self.fc6(pooled.flatten(1))))
        return self.drop(torch.relu(self.fc7(x)))


def _head(cin: int, cout: int, std: float = HEAD_INIT_STD) -> nn.Linear:
    lin = nn.Linear(cin, cout)
    nn.init.normal_(lin.weight, std=std)
    nn.init.zeros_(lin.bias)
    return lin


class WSODHeads(nn.Module):
    """The method's output layers on fc7 features (see the module table)."""

    def __init__(
        self,
        hidden: int,
        num_classes: int,
        method: str,
        refine_branches: int,
        *,
        mil_background: bool = False,
        init_std: float = HEAD_INIT_STD,
    ) -> None:
        super().__init__()
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; known: {list(METHODS)}")
        c = num_classes
        self.method = method
        self.num_classes = c
        has_mil = method != "supervised"
        k = branch_count(method, refine_branches)
        regress = method in ("mist", "supervised")
        self.mil_background = mil_background and has_mil
        m = c + 1 if self.mil_background else c
        self.cls = _head(hidden, m, init_std) if has_mil else None
        self.det = _head(hidden, m, init_std) if has_mil else None
        self.refine = nn.ModuleList(_head(hidden, c + 1, init_std) for _ in range(k))
        self.bbox = nn.ModuleList(
            _head(hidden, 4 * (c + 1), init_std) for _ in range(k if regress else 0)
        )

    def forward(
        self, x: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor, torch.Tensor | None]:
        """``N x hidden`` → (cls ``NxC`` (``Nx(C+1)`` with ``mil_background``), det the same,
        refine ``KxNx(C+1)``,
        deltas ``KxNx(C+1)x4``), ``None`` where the method has no such head."""
        n, c = x.shape[0], self.num_classes
        cls = self.cls(x) if self.cls is not None else None
        det = self.det(x) if self.det is not None else None
        if len(self.refine):
            refine = torch.stack([h(x) for h in self.refine])
        else:
            refine = x.new_zeros((0, n, c + 1))
        deltas = torch.stack([h(x).view(n, c + 1, 4) for h in self.bbox]) if self.bbox else None
        return cls, det, refine, deltas


class WSODModel(nn.Module):
    """Backbone + RoI pooling + :class:`RoIHead` + :class:`WSODHeads`.

    Args:
        backbone: a :class:`~weaksam.wsod.backbones.Backbone` (stride ``s``).
        roi_head: fc6/fc7 on ``D x roi_size x roi_size`` pooled features.
        heads: the method's heads.
        roi_op: ``pool`` (RoIPool) or ``align`` (RoIAlign, sampling ratio 2, aligned).
        roi_size: pooled side.
        cdb: a Concrete DropBlock on the pooled features (training only), or None.
    """

    def __init__(
        self,
        backbone: Backbone,
        roi_head: RoIHead,
        heads: WSODHeads,
        *,
        roi_op: str = "pool",
        roi_size: int = 7,
        cdb: ConcreteDropBlock | None = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.roi_head = roi_head
        self.heads = heads
        self.cdb = cdb
        self.roi_op = roi_op
        self.roi_size = roi_size

    @property
    def method(self) -> str:
        return self.heads.method

    @property
    def num_classes(self) -> int:
        return self.heads.num_classes

    def _pool(self, features: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
        """RoI features ``Rx D x roi x roi`` of ``rois`` ``Rx5`` ``(batch index, x1, y1, x2,
        y2)`` in input pixels. RoIAlign (``aligned=True``) reads input point ``x`` at cell
        coordinate ``x / s - 0.5``, i.e. it assumes cell centres at ``s * i + s / 2``; the boxes
        are moved by ``s / 2 - offset`` so that it reads ``(x - offset) / s``, the backbone's
        true cell centres (3.5 px on stride-8 trunks of stride-2 3x3 convs). RoIPool quantises
        to whole cells and is left as the method has it."""
        stride = self.backbone.stride
        size = (self.roi_size, self.roi_size)
        if self.roi_op == "align":
            shift = stride / 2 - self.backbone.offset
            if shift:
                rois = torch.cat([rois[:, :1], rois[:, 1:] + shift], dim=1)
            return roi_align(features, rois, size, 1.0 / stride, sampling_ratio=2, aligned=True)
        scale = 1.0 / stride
        return roi_pool(features, rois, size, scale)

    def pool_rois(
        self,
        images: Sequence[torch.Tensor],
        proposals: Sequence[torch.Tensor],
        scale: int,
        max_side: int,
        flips: Sequence[bool],
    ) -> torch.Tensor:
        """The pooled RoI features ``(sum Ri) x D x roi x roi`` of a batch (views, backbone,
        RoI pooling: everything before the CDB and the heads; arguments as :meth:`forward`).
        Deterministic: no random draw, so computing it apart changes no later draw."""
        views, rois = [], []
        for i, (img, props, flip) in enumerate(zip(images, proposals, flips, strict=True)):
            view = make_view(int(img.shape[-2]), int(img.shape[-1]), scale, max_side, flip)
            views.append(image_to_view(img, view))
            idx = props.new_full((props.shape[0], 1), float(i))
            rois.append(torch.cat([idx, boxes_to_view(props.float(), view)], dim=1))
        features = self.backbone(pad_batch(views, 32))
        return self._pool(features, torch.cat(rois))

    def forward(
        self,
        images: Sequence[torch.Tensor],
        proposals: Sequence[torch.Tensor],
        scale: int,
        max_side: int,
        flips: Sequence[bool] | None = None,
        pooled: torch.Tensor | None = None,
    ) -> HeadOutputs:
        """Per-RoI outputs for a batch of images seen at one scale.

        Args:
            images: ``3xHixWi`` float RGB in ``[0, 255]``, original size.
            proposals: ``Rix4`` XYXY boxes in original-image pixels (``Ri >= 1``).
            scale: shorter side of the view; ``max_side`` caps the longer side.
            flips: per image, flip horizontally (default: none).
            pooled: this batch's :meth:`pool_rois`, already computed (the CDB's adversarial
                pass reuses them), or None to compute them here.
        """
        flips = list(flips) if flips is not None else [False] * len(images)
        if pooled is None:
            pooled = self.pool_rois(images, proposals, scale, max_side, flips)
        if self.cdb is not None:
            pooled = self.cdb(pooled)  # identity in eval mode
        cls, det, refine, deltas = self.heads(self.roi_head(pooled))
        if deltas is not None and any(flips):
            # dx was predicted in the flipped frame: negate it for the original image
            sign = torch.cat(
                [
                    deltas.new_full((p.shape[0],), -1.0 if f else 1.0)
                    for p, f in zip(proposals, flips, strict=True)
                ]
            )
            deltas = torch.cat([deltas[..., :1] * sign[None, :, None, None], deltas[..., 1:]], -1)
        counts = [int(p.shape[0]) for p in proposals]
        return HeadOutputs(cls, det, refine, deltas, counts, self.heads.mil_background)

    @torch.no_grad()
    def predict(
        self,
        image: torch.Tensor,
        proposals: torch.Tensor,
        scales: Sequence[int],
        max_side: int,
        flip: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Test-time-augmented per-RoI scores and boxes of one image.

        Each pass (every scale, and its flip when ``flip``) gives per-RoI class scores and
        class-specific boxes; both are averaged over passes (see
        :func:`weaksam.wsod.postprocess.roi_scores_and_boxes`).

        Args:
            image: ``3xHxW`` float RGB in ``[0, 255]``. proposals: ``Rx4`` original coords.

        Returns:
            scores ``RxC`` in ``[0, 1]`` and boxes ``RxCx4`` XYXY in original-image pixels.
        """
        passes = [(s, f) for s in scales for f in ((False, True) if flip else (False,))]
        scores, boxes = [], []
        for s, f in passes:
            out = self.forward([image], [proposals], s, max_side, [f])
            sc, bx = roi_scores_and_boxes(out, proposals.float())
            scores.append(sc)
            boxes.append(bx)
        return merge_passes(scores, boxes)


def build_wsod_model(cfg: WSODModelConfig, num_classes: int, method: str) -> WSODModel:
    """The detector for ``method`` with ``num_classes`` classes (weights from ``cfg.weights``
    when given: the backbone strictly, VGG's fc6/fc7 when their shapes fit, a SAM checkpoint
    for ``sam_*`` backbones; heads random), its backbone frozen if ``cfg.freeze_backbone``."""
    backbone = build_backbone(cfg.backbone, width=cfg.width)
    roi_head = RoIHead(backbone.out_channels * cfg.roi_size**2, cfg.hidden, cfg.dropout)
    if cfg.weights and cfg.backbone.startswith("sam_"):
        load_sam_encoder(backbone, cfg.weights)
    elif cfg.weights:
        path = resolve_backbone_file(cfg.backbone, cfg.weights)
        if not storage.is_file(path):
            raise FileNotFoundError(f"backbone weights not found: {path}")
        state = torch_load(path)  # a local path, file:// or s3://
        for key in ("state_dict", "model"):  # wrapped state dicts (ours keep it in "model")
            if isinstance(state, dict) and isinstance(state.get(key), dict):
                state = state[key]
        rest = load_backbone_weights(backbone, cfg.backbone, state)
        _load_vgg_fc(roi_head, rest)
    if cfg.freeze_backbone:
        freeze(backbone)
    heads = WSODHeads(
        cfg.hidden,
        num_classes,
        method,
        cfg.refine_branches,
        mil_background=cfg.mil_background,
        init_std=cfg.head_init_std,
    )
    cdb = None
    if cfg.cdb and method == "mist":  # part of MIST in the method
        cdb = ConcreteDropBlock(
            backbone.out_channels, cfg.cdb_drop_prob, cfg.cdb_block_size, cfg.cdb_temperature
        )
    return WSODModel(backbone, roi_head, heads, roi_op=cfg.roi_op, roi_size=cfg.roi_size, cdb=cdb)


def _load_vgg_fc(roi_head: RoIHead, rest: dict[str, torch.Tensor]) -> None:
    """VGG16's classifier.0 / classifier.3 are fc6 / fc7 when the shapes fit (hidden 4096)."""
    pairs = {"classifier.0": roi_head.fc6, "classifier.3": roi_head.fc7}
    for prefix, layer in pairs.items():
        w, b = rest.get(f"{prefix}.weight"), rest.get(f"{prefix}.bias")
        if w is not None and b is not None and w.shape == layer.weight.shape:
            layer.load_state_dict({"weight": w, "bias": b}, strict=True)
