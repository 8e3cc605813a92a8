"""Windowed mask measurement (:func:`measure_logits`) against the full-resolution path.

``measure_logits`` upsamples each mask only over its window; it must give exactly what
``upsample_logits`` → ``stability_scores`` / ``mask_boxes`` give on the whole image: the same
integers behind the stability score (so the same float), the same boxes, the same empty flags.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
import torch

from weaksam.sam.postprocess import (
    mask_boxes,
    measure_logits,
    stability_scores,
    upsample_logits,
)


def full_resolution(
    low: torch.Tensor,
    img_size: int,
    input_size: tuple[int, int],
    original_size: tuple[int, int],
    thr: float,
    off: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    model: Any = SimpleNamespace(image_encoder=SimpleNamespace(img_size=img_size))
    logits = upsample_logits(model, low, input_size, original_size)
    boxes, nonempty = mask_boxes(logits > thr)
    return stability_scores(logits, thr, off), boxes, nonempty


def assert_same(got: tuple[torch.Tensor, ...], ref: tuple[torch.Tensor, ...]) -> None:
    stab, boxes, nonempty = got
    assert stab.dtype == torch.float32 and boxes.dtype == torch.int64
    assert torch.equal(stab.isnan(), ref[0].isnan())
    assert torch.equal(stab.nan_to_num(-1.0), ref[0].nan_to_num(-1.0))
    assert torch.equal(boxes, ref[1])
    assert torch.equal(nonempty, ref[2])


def blob_logits(n: int, side: int, seed: int) -> torch.Tensor:
    """``n`` noisy discs (some centred outside the image), then hand-made edge cases."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(side).float(), torch.arange(side).float(), indexing="ij")
    centre = torch.rand(n, 2, 1, 1, generator=g) * side * 1.3 - 0.15 * side
    radius = torch.rand(n, 1, 1, generator=g) * side * 0.3 + 0.5
    dist = ((yy - centre[:, 0]) ** 2 + (xx - centre[:, 1]) ** 2).sqrt()
    slope = torch.rand(n, 1, 1, generator=g) * 3
    low = (radius - dist) * slope + torch.randn(n, side, side, generator=g) * 0.5
    low[0] = -5.0  # empty at every threshold
    low[1] = 5.0  # the whole image
    low[2] = -3.0
    low[2, 0, 0] = 2.0  # one pixel in the top-left corner
    low[3] = -3.0
    low[3, -1, -1] = 0.5  # one weak pixel in the bottom-right corner
    low[4] = -3.0
    low[4, :, -1] = 4.0  # the right edge
    low[5] = -3.0
    low[5, -1, side // 2] = 4.0  # the bottom row, in the padding of a landscape image
    low[6] = 0.0  # exactly at the threshold everywhere
    return low


@pytest.mark.parametrize(
    ("side", "img_size", "input_size", "original_size"),
    [
        (64, 256, (256, 256), (256, 256)),  # the demo SAM on a 256-px image: windowed
        (64, 256, (192, 256), (192, 256)),  # landscape: padding rows below the image
        (64, 256, (256, 171), (256, 171)),  # portrait: padding columns
        (64, 256, (13, 256), (13, 256)),  # a strip
        (32, 128, (128, 128), (128, 128)),  # another power-of-two factor
        (64, 256, (256, 171), (300, 200)),  # needs the second resize: full-resolution path
        (64, 256, (256, 256), (500, 500)),
    ],
)
@pytest.mark.parametrize(("thr", "off"), [(0.0, 1.0), (0.5, 0.3), (-0.7, -0.2), (0.0, 0.0)])
def test_windowed_equals_full_resolution(
    side: int,
    img_size: int,
    input_size: tuple[int, int],
    original_size: tuple[int, int],
    thr: float,
    off: float,
) -> None:
    low = blob_logits(40, side, seed=side + input_size[1])
    ref = full_resolution(low, img_size, input_size, original_size, thr, off)
    for group in (None, 1, 3, 64):
        got = measure_logits(low, img_size, input_size, original_size, thr, off, group=group)
        assert_same(got, ref)


def test_windowed_equals_full_resolution_vit_sizes() -> None:
    """SAM ViT's sizes: 256x256 logits, 1024-px input, a 1024x768 image (no second resize)."""
    low = blob_logits(10, 256, seed=3)
    args = (1024, (1024, 768), (1024, 768), 0.0, 1.0)
    assert_same(measure_logits(low, *args), full_resolution(low, *args))


def test_hand_made_masks() -> None:
    """4x4 logits, factor 4 (16x16 pixels), one +1 pixel among -1s.

    Along one axis, pixel ``y`` gives the +1 row the weight ``w(y)`` of bilinear upsampling
    (source ``(y + 0.5) / 4 - 0.5``); a pixel's logit is ``-1 + 2 * wy * wx``. Row 1 gets the
    weights .125 .375 .625 .875 .875 .625 .375 .125 at pixels 2..9: pixels > 0 need
    ``wy * wx > .5`` (12 of them, rows and columns ±1.5 px around the centre), > 0.5 need
    ``> .75`` (4), > -0.5 need ``> .25`` (24). In the corner (row 3), the weights are
    .125 .375 .625 .875 1 1 at pixels 10..15: 15 pixels > 0, 9 > 0.5, 22 > -0.5.
    """
    low = torch.full((4, 4, 4), -1.0)
    low[0, 1, 2] = 1.0  # row 1, column 2
    low[1, 3, 3] = 1.0  # the bottom-right corner
    low[2] = -5.0  # empty
    low[3] = 5.0  # everything
    stab, boxes, nonempty = measure_logits(low, 16, (16, 16), (16, 16), 0.0, 0.5)
    assert boxes.tolist() == [[8, 4, 11, 7], [12, 12, 15, 15], [0, 0, 0, 0], [0, 0, 15, 15]]
    assert nonempty.tolist() == [True, True, False, True]
    assert stab[0].item() == pytest.approx(4 / 24)
    assert stab[1].item() == pytest.approx(9 / 22)
    assert stab[2].isnan() and stab[3].item() == 1.0
    assert_same((stab, boxes, nonempty), full_resolution(low, 16, (16, 16), (16, 16), 0.0, 0.5))


def test_no_masks() -> None:
    for original in ((256, 256), (300, 200)):
        stab, boxes, nonempty = measure_logits(
            torch.zeros(0, 64, 64), 256, (256, 171), original, 0.0, 1.0
        )
        assert stab.shape == (0,) and boxes.shape == (0, 4) and nonempty.shape == (0,)
