"""The engine's mask decoder path against segment-anything's ``MaskDecoder.forward``.

:func:`run_two_way_transformer` computes the image side of the first two-way block once per
image instead of once per prompt; the masks and IoU predictions must stay bit for bit those of
``MaskDecoder`` (the AMG-equivalence tests in ``test_sam_engine.py`` compare whole masks).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from segment_anything.modeling import Sam

from weaksam.sam.build import build_sam_model
from weaksam.sam.engine import (
    EngineConfig,
    SamPromptEngine,
    encode_image_tokens,
    predict_mask_logits,
    run_two_way_transformer,
)


@pytest.fixture(scope="module")
def sam() -> Sam:
    torch.manual_seed(0)
    model = build_sam_model("demo")
    with torch.no_grad():  # larger decoder weights than the init's, so the check is not trivial
        for p in model.mask_decoder.parameters():
            p.mul_(3.0)
    return model.eval()


def reference(
    model: Sam, features: torch.Tensor, sparse: torch.Tensor, dense: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    masks, iou = model.mask_decoder.predict_masks(
        image_embeddings=features,
        image_pe=model.prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
    )
    return masks, iou


def prompts(model: Sam, kind: str, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(n)
    pe = model.prompt_encoder
    if kind == "points":
        pts = torch.rand(n, 1, 2, generator=g) * 256
        return pe(points=(pts, torch.ones(n, 1, dtype=torch.int)), boxes=None, masks=None)
    if kind == "multipoint":
        pts = torch.rand(n, 3, 2, generator=g) * 256
        labels = torch.tensor([[1, 0, 1]]).expand(n, -1)
        return pe(points=(pts, labels), boxes=None, masks=None)
    xy = torch.rand(n, 2, generator=g) * 128
    boxes = torch.cat([xy, xy + torch.rand(n, 2, generator=g) * 128], 1)
    return pe(points=None, boxes=boxes, masks=None)


@pytest.mark.parametrize(
    ("kind", "n"), [("points", 1), ("points", 9), ("multipoint", 4), ("boxes", 5)]
)
@torch.inference_mode()
def test_decoder_equals_mask_decoder(sam: Sam, kind: str, n: int) -> None:
    features = torch.randn(1, 64, 16, 16, generator=torch.Generator().manual_seed(1))
    sparse, dense = prompts(sam, kind, n)
    ref_masks, ref_iou = reference(sam, features, sparse, dense)
    image = encode_image_tokens(sam, features, sam.prompt_encoder.get_dense_pe())
    queries, keys = run_two_way_transformer(sam.mask_decoder, image, sparse)
    masks = predict_mask_logits(sam.mask_decoder, queries, keys, image.grid)
    iou = sam.mask_decoder.iou_prediction_head(queries[:, 0, :])
    assert masks.shape == ref_masks.shape == (n, 4, 64, 64)
    assert torch.equal(masks, ref_masks)
    assert torch.equal(iou, ref_iou)
    assert image.keys.shape == (1, 256, 64) and image.first_keys.shape == (1, 4, 256, 8)


def test_iou_filter_before_upscaling_keeps_the_same_rows(sam: Sam) -> None:
    """Masks are upscaled only for prompts with a token above the IoU threshold; the rows
    that survive are exactly those of filtering after a full decode."""
    engine = SamPromptEngine(sam, EngineConfig())
    emb = engine.embed_image(np.random.default_rng(0).integers(0, 255, (256, 256, 3), np.uint8))
    coords = torch.rand(20, 1, 2, generator=torch.Generator().manual_seed(2)) * 256
    labels = torch.ones(20, 1, dtype=torch.int)
    with torch.inference_mode():
        low, iou, prompt, token = engine._decode(emb, coords, labels)
        thresh = float(iou.median())
        f_low, f_iou, f_prompt, f_token = engine._decode(emb, coords, labels, iou_thresh=thresh)
    keep = iou > thresh
    assert 0 < int(keep.sum()) < iou.numel()
    assert prompt.tolist() == [p for p in range(20) for _ in range(3)]
    assert token.tolist() == [0, 1, 2] * 20
    assert torch.equal(f_low, low[keep]) and torch.equal(f_iou, iou[keep])
    assert torch.equal(f_prompt, prompt[keep]) and torch.equal(f_token, token[keep])
