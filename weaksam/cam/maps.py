"""Class maps of one image, in the spirit of WeakTr's coarse and fine maps (WeakSAM section 1).

Two kinds per class:

* ``cam`` — the class activation map ``ReLU(W · features)`` (WeakTr's *coarse* map);
* ``refined`` — the CAM propagated ``refine_iters`` times by a patch affinity ``A``
  (``cam_i ← Σ_j A_ij cam_j``, WeakTr's *fine* map): for CNNs ``A`` is the row-softmax of the
  cosine similarity of the last feature map divided by a temperature; for ViTs it is the last
  block's head-averaged patch-to-patch attention.

Multi-scale and flip (:func:`compute_class_maps`): the image is resized to
``input_size * s`` square for each scale ``s`` (1.0, 0.8, 1.2), run plain and horizontally
flipped; every map is upsampled to the original ``HxW`` (bilinear), flipped maps are flipped
back, the passes are **summed**, multiplied by the image's 0/1 class vector and min-max
normalised per class and kind (:func:`weaksam.cam.peaks.minmax_normalize`). With
``peaks.bilateral.enabled`` every kind is then refined by the image's appearance kernel
(:mod:`weaksam.cam.bilateral`; not in the method), which moves the peaks of shapes with holes
off the hole.

Upsampling puts each cell at the centre of its receptive field (:func:`upsample_aligned`):
plain ``align_corners=False`` upsampling shifted the maps of the stride-8 demo backbone by
7 px on 256-px images and put the peak points ~10 px below their objects.

The class probabilities are the sigmoid of the logits averaged over the same passes
(:func:`run_passes`; +0.02 test mAP over the single scale-1.0 pass on the demo and bench data);
they pick the classes of images whose labels may not be read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F

from weaksam.cam.bilateral import bilateral_kernel, bilateral_refine
from weaksam.cam.config import PeakStageConfig
from weaksam.cam.data import normalize
from weaksam.cam.models import CAMClassifier
from weaksam.cam.peaks import minmax_normalize


def cosine_affinity(features: torch.Tensor, temperature: float) -> torch.Tensor:
    """Row-stochastic feature affinity ``softmax_j(cos(f_i, f_j) / temperature)``.

    Args:
        features: ``BxDxhxw``.
    Returns:
        ``BxNxN`` with ``N = h * w`` (row ``i`` sums to 1).
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    f = F.normalize(features.flatten(2), dim=1)  # B x D x N
    return torch.softmax(f.transpose(1, 2) @ f / temperature, dim=-1)


def propagate(cams: torch.Tensor, affinity: torch.Tensor, iters: int) -> torch.Tensor:
    """``cams`` ``BxCxhxw`` propagated ``iters`` times by ``affinity`` ``Bx(hw)x(hw)``:
    ``out[b, c, i] = Σ_j A[b, i, j] cams[b, c, j]``. ``iters = 0`` returns ``cams``."""
    b, c, h, w = cams.shape
    x = cams.flatten(2)  # B x C x N
    for _ in range(iters):
        x = x @ affinity.transpose(1, 2)
    return x.view(b, c, h, w)


def pass_maps(
    model: CAMClassifier,
    images: torch.Tensor,
    kinds: Sequence[str],
    refine_iters: int,
    temperature: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One forward pass: (``BxC`` logits, kind → ``BxCxhxw`` maps at feature resolution).

    ``images`` are normalised ``Bx3xHxW``.
    """
    logits, raw, feats = model.forward_maps(images)
    cam = F.relu(raw)
    out: dict[str, torch.Tensor] = {}
    if "cam" in kinds:
        out["cam"] = cam
    if "refined" in kinds:
        aff = feats.attention
        if aff is None:
            aff = cosine_affinity(feats.maps, temperature)
        out["refined"] = F.relu(propagate(cam, aff, refine_iters))
    return logits, out


def upsample_aligned(
    maps: torch.Tensor, size: tuple[int, int], stride: int, offset: float
) -> torch.Tensor:
    """``Cxhxw`` cell maps of a ``(h * stride) x (w * stride)`` input, bilinearly resampled to
    an image of ``size = (H, W)`` with each cell at the centre of its receptive field.

    Cell ``(i, j)`` sits on the input point ``(stride * j + offset, stride * i + offset)``
    (:class:`weaksam.cam.models.Backbone`); the input is the image resized to ``h * stride x
    w * stride``, so image pixel ``p`` (centre ``p + 0.5``) reads the cell coordinate
    ``((p + 0.5) * h * stride / H - offset) / stride``, clamped to the border cells.
    ``offset = stride / 2`` is ``F.interpolate(..., align_corners=False)``.
    Returns ``CxHxW`` float32.
    """
    h, w = maps.shape[-2:]
    hh, ww = size

    def coords(n_out: int, n_cells: int) -> torch.Tensor:
        u = torch.arange(n_out, dtype=torch.float32, device=maps.device) + 0.5
        q = (u * (n_cells * stride / n_out) - offset) / stride
        return q / (n_cells - 1) * 2 - 1 if n_cells > 1 else torch.zeros_like(q)

    gy, gx = torch.meshgrid(coords(hh, h), coords(ww, w), indexing="ij")
    grid = torch.stack([gx, gy], dim=-1)[None]  # 1 x H x W x 2, (x, y) in [-1, 1]
    out = F.grid_sample(
        maps[None].float(), grid, mode="bilinear", padding_mode="border", align_corners=True
    )
    return out[0]


def accumulate_passes(
    maps: Sequence[torch.Tensor],
    flipped: Sequence[bool],
    size: tuple[int, int],
    stride: int = 1,
    offset: float | None = None,
) -> torch.Tensor:
    """Sum of per-pass ``Cxhxw`` maps, each resampled to ``size = (H, W)`` by
    :func:`upsample_aligned` (``offset`` None: ``stride / 2``, plain ``align_corners=False``
    upsampling) and, when its pass saw the flipped image, flipped back. Returns ``CxHxW``
    float32."""
    if len(maps) != len(flipped):
        raise ValueError(f"got {len(maps)} maps for {len(flipped)} flip flags")
    if not maps:
        raise ValueError("accumulate_passes needs at least one map")
    off = stride / 2 if offset is None else offset
    total: torch.Tensor | None = None
    for m, flip in zip(maps, flipped, strict=True):
        up = upsample_aligned(m, size, stride, off)
        if flip:
            up = up.flip(-1)
        total = up if total is None else total + up
    assert total is not None
    return total


def class_maps(summed: torch.Tensor, class_vector: torch.Tensor) -> torch.Tensor:
    """``CxHxW`` summed maps times the ``C`` 0/1 class vector, min-max normalised per class.

    Classes outside the vector are all zero; a positive class's map spans ``[0, 1]`` (unless
    the map is constant, when it is all zero).
    """
    if class_vector.shape != summed.shape[:1]:
        raise ValueError(f"class vector {tuple(class_vector.shape)} for {summed.shape[0]} maps")
    zeroed = summed * class_vector.to(summed.dtype).view(-1, 1, 1)
    out = minmax_normalize(zeroed)
    return out * (class_vector.view(-1, 1, 1) > 0)


def predicted_classes(probs: npt.ArrayLike, threshold: float) -> list[int]:
    """Classes with probability ``>= threshold``, and always the top-1 class (sorted ids)."""
    p = np.asarray(probs, dtype=np.float64).reshape(-1)
    if p.size == 0:
        return []
    keep = set(np.flatnonzero(p >= threshold).tolist()) | {int(np.argmax(p))}
    return sorted(keep)


def scaled_side(input_size: int, scale: float, stride: int) -> int:
    """The square side of one scale: ``input_size * scale`` rounded to a multiple of stride."""
    return max(stride, round(input_size * scale / stride) * stride)


@dataclass
class ClassMaps:
    """The maps of one image.

    Attributes:
        classes: the ``K`` positive class ids the maps belong to (sorted).
        maps: kind → ``KxHxW`` float32 in ``[0, 1]``, original image size.
        probs: ``C`` class probabilities: the sigmoid of the logits averaged over every pass
            (each scale, plain and flipped).
    """

    classes: list[int]
    maps: dict[str, torch.Tensor]
    probs: npt.NDArray[np.float32]


@dataclass
class Passes:
    """Every test-time pass over one image (:func:`run_passes`).

    Attributes:
        logits: ``C`` logits averaged over the passes.
        maps: kind → one ``Cxhxw`` feature-resolution map per pass (sides differ by scale).
        flipped: per pass, whether it saw the flipped image.
    """

    logits: torch.Tensor
    maps: dict[str, list[torch.Tensor]]
    flipped: list[bool]


@torch.inference_mode()
def run_passes(
    model: CAMClassifier,
    image: npt.NDArray[np.uint8],
    input_size: int,
    scales: Sequence[float],
    flip: bool,
    kinds: Sequence[str] = (),
    refine_iters: int = 0,
    temperature: float = 0.1,
) -> Passes:
    """The ``HxWx3`` uint8 image resized to ``input_size * s`` square for each scale ``s`` and
    run plain and (``flip``) horizontally flipped: averaged logits and the maps of ``kinds``."""
    model.eval()
    device = next(model.parameters()).device
    img = torch.as_tensor(image, device=device).permute(2, 0, 1)[None].float()
    per_kind: dict[str, list[torch.Tensor]] = {k: [] for k in kinds}
    flips: list[bool] = []
    logits: list[torch.Tensor] = []
    for scale in scales:
        side = scaled_side(input_size, scale, model.stride)
        x = F.interpolate(img, size=(side, side), mode="bilinear", antialias=True)
        x = normalize(x)
        batch = torch.cat([x, x.flip(-1)]) if flip else x
        out, maps = pass_maps(model, batch, kinds, refine_iters, temperature)
        logits.append(out.float())
        for kind, m in maps.items():
            per_kind[kind].extend(m.unbind(0))
        flips.extend([False, True] if flip else [False])
    return Passes(torch.cat(logits).mean(0), per_kind, flips)


def image_probs(
    model: CAMClassifier,
    image: npt.NDArray[np.uint8],
    input_size: int,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
) -> npt.NDArray[np.float32]:
    """``C`` class probabilities of one image from the averaged logits of its passes."""
    passes = run_passes(model, image, input_size, scales, flip)
    return torch.sigmoid(passes.logits).cpu().numpy().astype(np.float32)


@torch.inference_mode()
def compute_class_maps(
    model: CAMClassifier,
    image: npt.NDArray[np.uint8],
    input_size: int,
    cfg: PeakStageConfig,
    classes: Sequence[int] | None = None,
) -> ClassMaps:
    """Multi-scale + flip maps of one ``HxWx3`` uint8 image (see the module docstring).

    Args:
        classes: the image's positive classes (training images: their image-level labels).
            ``None``: take them from the classifier (:func:`predicted_classes` on the
            probabilities of the averaged logits of every pass, with ``cfg.class_threshold``)
            — used for images whose labels must not be read.
    """
    h, w = image.shape[:2]
    passes = run_passes(
        model,
        image,
        input_size,
        cfg.scales,
        cfg.flip,
        cfg.map_kinds,
        cfg.refine_iters,
        cfg.refine_temperature,
    )
    probs = torch.sigmoid(passes.logits).cpu().numpy().astype(np.float32)
    chosen = sorted(set(classes)) if classes is not None else predicted_classes(
        probs, cfg.class_threshold
    )  # fmt: skip
    # Only the positive channels are upsampled: the other classes would be zeroed anyway.
    device = passes.logits.device
    sel = torch.as_tensor(chosen, dtype=torch.long, device=device)
    ones = torch.ones(len(chosen), device=device)
    out = {
        kind: class_maps(
            accumulate_passes(
                [m[sel] for m in ms], passes.flipped, (h, w), model.stride, model.offset
            ),
            ones,
        )
        for kind, ms in passes.maps.items()
    }
    bil = cfg.bilateral
    if bil.enabled and chosen:
        kernel, grid = bilateral_kernel(
            torch.as_tensor(image, device=device), bil.side, bil.sigma_color, bil.sigma_space
        )
        out = {kind: bilateral_refine(m, kernel, grid, bil.power) for kind, m in out.items()}
    return ClassMaps(chosen, out, probs)
