"""A tiny random SAM 2.1 for the SAM 2 backend's tests, and the reference code set up for it
(imported by ``test_sam2_*.py``).

A random SAM 2 gives masks that are noise over the whole image. :func:`make_test_sam2` keeps
``build_sam2_tiny``'s classes and random weights but (a) makes the Hiera blocks identities
(local features), (b) makes the decoder's upscaling kernels constant, (c) scales the
high-resolution maps and the mask and IoU heads; masks then vary with the prompt and several
survive NMS. The reference code runs on the same model, so comparisons hold for any weights.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import torch
from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator
from sam2.modeling.sam2_base import SAM2Base
from sam2.sam2_image_predictor import SAM2ImagePredictor

from weaksam.sam.sam2_build import build_sam2_tiny

SAM2_SIZE = 256  # the tiny model's input side (the published models take 1024)


def make_test_sam2(seed: int = 0, image_size: int = SAM2_SIZE) -> SAM2Base:
    """``build_sam2_tiny``, random weights, adjusted to give prompt-dependent masks."""
    torch.manual_seed(seed)
    model = build_sam2_tiny(image_size)
    with torch.no_grad():
        for blk in model.image_encoder.trunk.blocks:
            for lin in (blk.attn.proj, blk.mlp.layers[-1]):
                lin.weight.zero_()
                lin.bias.zero_()
        dec = model.sam_mask_decoder
        for i in (0, 3):
            w = dec.output_upscaling[i].weight
            w.copy_(w[..., :1, :1].expand_as(w))
        dec.conv_s0.weight.mul_(5.0)
        dec.conv_s1.weight.mul_(5.0)
        for mlp in dec.output_hypernetworks_mlps:
            mlp.layers[-1].weight.mul_(40.0)
        dec.iou_prediction_head.layers[-1].weight.mul_(8.0)
    return model.eval()


def make_sam2_image(seed: int, height: int = 256, width: int = 256) -> npt.NDArray[np.uint8]:
    """A flat noisy background with four filled rectangles of random colours."""
    rng = np.random.default_rng(seed)
    img = np.full((height, width, 3), rng.integers(90, 160, 3), float)
    img += rng.normal(0, 8, (height, width, 3))
    for _ in range(4):
        x0, y0 = rng.integers(0, width - 40), rng.integers(0, height - 40)
        w, h = rng.integers(30, 100, 2)
        img[y0 : y0 + h, x0 : x0 + w] = rng.integers(0, 256, 3)
    return np.clip(img, 0, 255).astype(np.uint8)


def fit_predictor(predictor: SAM2ImagePredictor) -> SAM2ImagePredictor:
    """Set the predictor's one 1024-px assumption, the backbone feature sizes it reshapes to,
    to its model's (``image_size / 4, / 8, / 16``); nothing else changes."""
    s = predictor.model.image_size // 4
    predictor._bb_feat_sizes = [(s, s), (s // 2, s // 2), (s // 4, s // 4)]
    return predictor


def sam2_predictor(model: SAM2Base) -> SAM2ImagePredictor:
    """``SAM2ImagePredictor(model)`` fitted to the model's size (:func:`fit_predictor`)."""
    return fit_predictor(SAM2ImagePredictor(model))


def sam2_amg(model: SAM2Base, **kwargs: object) -> SAM2AutomaticMaskGenerator:
    """``SAM2AutomaticMaskGenerator`` without crops or small-region removal, its predictor
    fitted to the model's size (:func:`fit_predictor`)."""
    amg = SAM2AutomaticMaskGenerator(model, crop_n_layers=0, min_mask_region_area=0, **kwargs)
    fit_predictor(amg.predictor)
    return amg
