"""Map functions on tiny tensors with known answers: affinity, passes, class zeroing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from weaksam.cam.config import ClassifierConfig, PeakStageConfig
from weaksam.cam.maps import (
    accumulate_passes,
    class_maps,
    compute_class_maps,
    cosine_affinity,
    pass_maps,
    predicted_classes,
    propagate,
    scaled_side,
    upsample_aligned,
)
from weaksam.cam.models import build_classifier


def test_accumulate_sums_and_flips_back() -> None:
    m = torch.tensor([[[0.0, 1.0]]])  # 1 class, 1x2: the right pixel is hot
    # the same map seen on a flipped image belongs to the left pixel once flipped back
    out = accumulate_passes([m, m], [False, True], (1, 2))
    torch.testing.assert_close(out, torch.tensor([[[1.0, 1.0]]]))
    out = accumulate_passes([m, m, 2 * m], [False, False, True], (1, 2))
    torch.testing.assert_close(out, torch.tensor([[[2.0, 2.0]]]))


def test_accumulate_upsamples_bilinearly_to_the_image_size() -> None:
    const = torch.full((2, 3, 3), 0.5)
    out = accumulate_passes([const, const, const], [False, True, False], (7, 5))
    assert out.shape == (2, 7, 5)
    torch.testing.assert_close(out, torch.full((2, 7, 5), 1.5))
    ramp = torch.tensor([[[0.0, 1.0]]])
    up = accumulate_passes([ramp], [False], (1, 4))  # align_corners=False: 0, .25, .75, 1
    torch.testing.assert_close(up, torch.tensor([[[0.0, 0.25, 0.75, 1.0]]]))
    with pytest.raises(ValueError):
        accumulate_passes([ramp], [False, True], (1, 4))


def test_class_maps_zero_negatives_and_minmax_per_class() -> None:
    summed = torch.tensor(
        [[[0.0, 2.0], [4.0, 6.0]], [[5.0, 1.0], [1.0, 1.0]], [[1.0, 3.0], [3.0, 3.0]]]
    )
    out = class_maps(summed, torch.tensor([1.0, 0.0, 1.0]))
    torch.testing.assert_close(
        out[0], torch.tensor([[0.0, 1 / 3], [2 / 3, 1.0]]), atol=1e-6, rtol=0
    )
    assert torch.all(out[1] == 0)
    torch.testing.assert_close(out[2], torch.tensor([[0.0, 1.0], [1.0, 1.0]]), atol=1e-6, rtol=0)
    flat = class_maps(torch.ones(1, 2, 2), torch.tensor([1.0]))  # constant map: all zero
    assert torch.all(flat == 0)
    with pytest.raises(ValueError):
        class_maps(summed, torch.ones(2))


def test_propagate_with_known_affinities() -> None:
    cams = torch.arange(4.0).view(1, 1, 2, 2)
    eye = torch.eye(4)[None]
    torch.testing.assert_close(propagate(cams, eye, 2), cams)
    uniform = torch.full((1, 4, 4), 0.25)
    torch.testing.assert_close(propagate(cams, uniform, 1), torch.full((1, 1, 2, 2), 1.5))
    swap = torch.tensor([[0.0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1], [0, 0, 1, 0]])[None]
    torch.testing.assert_close(propagate(cams, swap, 1), torch.tensor([[[[1.0, 0], [3, 2]]]]))
    torch.testing.assert_close(propagate(cams, swap, 2), cams)
    torch.testing.assert_close(propagate(cams, swap, 0), cams)  # 0 iterations: the input


def test_cosine_affinity_rows_and_sharpness() -> None:
    f = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]).T.reshape(1, 2, 1, 3)  # 3 pixels
    a = cosine_affinity(f, temperature=0.05)
    assert a.shape == (1, 3, 3)
    torch.testing.assert_close(a.sum(-1), torch.ones(1, 3))
    # pixels 0 and 1 are identical and orthogonal to 2: they share their mass, 2 keeps its own
    assert a[0, 0, 0] == pytest.approx(0.5, abs=1e-6) and a[0, 0, 2] < 1e-6
    assert a[0, 2, 2] == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(ValueError):
        cosine_affinity(f, 0.0)


def test_predicted_classes_threshold_and_top1() -> None:
    assert predicted_classes([0.1, 0.7, 0.6], 0.5) == [1, 2]
    assert predicted_classes([0.1, 0.3, 0.2], 0.5) == [1]  # top-1 always kept
    assert predicted_classes([], 0.5) == []


def test_scaled_side_multiple_of_stride() -> None:
    assert scaled_side(128, 1.0, 8) == 128
    assert scaled_side(128, 0.8, 8) == 104
    assert scaled_side(128, 1.2, 8) == 152
    assert scaled_side(10, 0.1, 8) == 8


def _model(backbone: str = "plainconv") -> torch.nn.Module:
    torch.manual_seed(0)
    return build_classifier(ClassifierConfig(backbone=backbone, width=4, input_size=32), 3).eval()


@pytest.mark.parametrize("backbone", ["plainconv", "vit_micro"])
def test_pass_maps_kinds_and_shapes(backbone: str) -> None:
    model = _model(backbone)
    logits, maps = pass_maps(model, torch.randn(2, 3, 32, 32), ("cam", "refined"), 2, 0.1)
    assert logits.shape == (2, 3)
    for m in maps.values():
        assert m.shape == (2, 3, 4, 4) and torch.all(m >= 0)
    _, only = pass_maps(model, torch.randn(1, 3, 32, 32), ("cam",), 2, 0.1)
    assert set(only) == {"cam"}


def test_compute_class_maps_matches_the_all_class_pipeline() -> None:
    model = _model()
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (30, 44, 3)).astype(np.uint8)
    cfg = PeakStageConfig(scales=(1.0, 0.8, 1.2))
    out = compute_class_maps(model, image, 32, cfg, classes=[2, 0])
    assert out.classes == [0, 2] and out.probs.shape == (3,)
    for kind in ("cam", "refined"):
        m = out.maps[kind]
        assert m.shape == (2, 30, 44)
        assert float(m.min()) >= 0.0 and float(m.amax(dim=(1, 2)).min()) == pytest.approx(
            1.0, abs=1e-3
        )
    # the same maps from all classes: 6 passes summed, times the class vector, normalised
    from weaksam.cam.data import normalize

    img = torch.as_tensor(image).permute(2, 0, 1)[None].float()
    passes, flips = [], []
    for s in cfg.scales:
        side = scaled_side(32, s, 8)
        x = normalize(torch.nn.functional.interpolate(img, size=(side, side), mode="bilinear",
                                                      antialias=True))  # fmt: skip
        _, maps = pass_maps(model, torch.cat([x, x.flip(-1)]), ("cam",), 2, 0.1)
        passes += list(maps["cam"].unbind(0))
        flips += [False, True]
    summed = accumulate_passes(passes, flips, (30, 44), model.stride, model.offset)
    full = class_maps(summed, torch.tensor([1.0, 0.0, 1.0]))
    torch.testing.assert_close(out.maps["cam"], full[[0, 2]], atol=1e-5, rtol=1e-5)
    assert torch.all(full[1] == 0)


def test_compute_class_maps_predicts_classes_without_labels() -> None:
    model = _model()
    image = np.zeros((20, 20, 3), dtype=np.uint8)
    cfg = PeakStageConfig(class_threshold=2.0)  # nothing passes: the top-1 class only
    out = compute_class_maps(model, image, 32, cfg, classes=None)
    assert out.classes == [int(np.argmax(out.probs))]


def test_upsample_aligned_places_cells_on_their_receptive_field_centres() -> None:
    # 1 cell row of 2 cells, stride 4, input 8 px wide, cell j centred on x = 4 j + offset
    m = torch.tensor([[[0.0, 1.0]]])
    # offset 0.5: cell 0 at x=0.5 (pixel 0), cell 1 at x=4.5 (pixel 4); linear in between
    up = upsample_aligned(m, (1, 8), stride=4, offset=0.5)
    torch.testing.assert_close(up, torch.tensor([[[0.0, 0.25, 0.5, 0.75, 1.0, 1.0, 1.0, 1.0]]]))
    # offset = stride / 2 is plain align_corners=False upsampling
    plain = torch.nn.functional.interpolate(m[None], size=(1, 8), mode="bilinear")[0]
    torch.testing.assert_close(upsample_aligned(m, (1, 8), 4, 2.0), plain)
    # the image may differ from the network input size: pixel p reads ((p+.5)*8/16 - .5)/4
    up16 = upsample_aligned(m, (1, 16), stride=4, offset=0.5)
    assert float(up16[0, 0, 0]) == 0.0 and float(up16[0, 0, 9]) == 1.0
    torch.testing.assert_close(up16[0, 0, 4], torch.tensor((4.5 * 8 / 16 - 0.5) / 4))


@pytest.mark.parametrize("backbone", ["plainconv", "plainconv16", "resnet18"])
def test_backbone_offset_is_the_receptive_field_centre(backbone: str) -> None:
    """The input-gradient of one interior cell, with all-positive equal weights and the max
    pool replaced by an average pool of the same geometry, is symmetric about the centre of
    the cell's receptive field: its centroid must be ``stride * i + offset``."""
    model = build_classifier(ClassifierConfig(backbone=backbone, width=4), num_classes=1)
    net = model.backbone
    if hasattr(net, "net"):  # resnet: same geometry, but a max pool picks an arbitrary index
        net.net.maxpool = torch.nn.AvgPool2d(3, 2, 1)
    for mod in net.modules():
        if isinstance(mod, torch.nn.Conv2d):
            torch.nn.init.constant_(mod.weight, 1.0 / mod.weight[0].numel())
    net.eval()
    side = 48 * model.stride  # receptive fields (resnet18: ~430 px) stay inside the image
    x = torch.ones(1, 3, side, side, requires_grad=True)
    feats = net(x).maps
    i = j = 24
    feats[0, :, i, j].sum().backward()
    g = x.grad[0].abs().sum(0)  # H x W
    rows = torch.arange(side, dtype=torch.float64) + 0.5
    cy = float((g.sum(1).double() * rows).sum() / g.sum())
    cx = float((g.sum(0).double() * rows).sum() / g.sum())
    expect = model.stride * i + model.offset
    assert cy == pytest.approx(expect, abs=0.05) and cx == pytest.approx(expect, abs=0.05)


def test_image_probs_average_the_logits_of_every_pass() -> None:
    from weaksam.cam.data import normalize
    from weaksam.cam.maps import image_probs, run_passes

    model = _model()
    rng = np.random.default_rng(3)
    image = rng.integers(0, 255, (30, 44, 3), dtype=np.uint8)
    img = torch.as_tensor(image).permute(2, 0, 1)[None].float()
    expect = []
    for s in (1.0, 0.8):
        side = scaled_side(32, s, 8)
        x = normalize(torch.nn.functional.interpolate(img, size=(side, side), mode="bilinear",
                                                      antialias=True))  # fmt: skip
        with torch.no_grad():
            expect += [model(x)[0], model(x.flip(-1))[0]]
    mean = torch.stack(expect).mean(0)
    got = image_probs(model, image, 32, (1.0, 0.8), flip=True)
    np.testing.assert_allclose(got, torch.sigmoid(mean).numpy(), rtol=1e-5, atol=1e-6)
    passes = run_passes(model, image, 32, (1.0, 0.8), True, ("cam",))
    assert passes.flipped == [False, True, False, True] and len(passes.maps["cam"]) == 4
    # compute_class_maps reports the same probabilities
    cfg = PeakStageConfig(scales=(1.0, 0.8), flip=True)
    np.testing.assert_allclose(compute_class_maps(model, image, 32, cfg).probs, got, rtol=1e-5)
