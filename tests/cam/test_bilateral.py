"""The appearance (bilateral) refinement of class maps: kernel values, the hole rule, wiring."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from weaksam.cam.bilateral import bilateral_kernel, bilateral_refine, grid_shape
from weaksam.cam.config import BilateralConfig, ClassifierConfig, PeakStageConfig
from weaksam.cam.maps import compute_class_maps
from weaksam.cam.models import build_classifier
from weaksam.cam.peaks import PeakConfig, extract_peaks
from weaksam.configlib import from_dict


def test_kernel_golden_two_pixels() -> None:
    # black | white, one row: colour distance² 3 / σc², cell centres 0.25 and 0.75 of the long
    # side apart by 0.5 → 0.25 / σs²; rows are the normalised Gaussians
    image = np.array([[[0, 0, 0], [255, 255, 255]]], dtype=np.uint8)
    k, grid = bilateral_kernel(image, side=2, sigma_color=1.0, sigma_space=1.0)
    assert grid == (1, 2)
    off = math.exp(-0.5 * (3.0 + 0.25))
    want = torch.tensor([[1.0, off], [off, 1.0]]) / (1.0 + off)
    torch.testing.assert_close(k, want, atol=1e-6, rtol=1e-5)
    k2, _ = bilateral_kernel(image, side=2, sigma_color=2.0, sigma_space=0.5)
    off2 = math.exp(-0.5 * (3.0 / 4.0 + 0.25 / 0.25))
    assert float(k2[0, 1]) == pytest.approx(off2 / (1.0 + off2), rel=1e-5)


def test_kernel_rows_sum_to_one_and_prefer_their_own_colour() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (40, 24, 3)).astype(np.uint8)
    k, grid = bilateral_kernel(image, side=16, sigma_color=0.1, sigma_space=0.5)
    assert grid == (16, 10)  # long side 16 cells, the short side in proportion
    assert k.shape == (160, 160)
    torch.testing.assert_close(k.sum(1), torch.ones(160), atol=1e-5, rtol=0)
    assert torch.equal(k.argmax(1), torch.arange(160))  # nothing is closer than itself


def test_grid_shape_never_upsamples_and_keeps_the_aspect() -> None:
    assert grid_shape(256, 256, 64) == (64, 64)
    assert grid_shape(300, 500, 64) == (38, 64)
    assert grid_shape(20, 10, 64) == (20, 10)
    assert grid_shape(1000, 3, 64) == (64, 1)


def _ring_scene() -> tuple[np.ndarray, np.ndarray, np.ndarray, torch.Tensor]:
    """A red ring (radii 12-20) and a blue disc (radius 10) on a grey 96x96 background, and a
    ring CAM: a blob centred on the ring's hole."""
    yy, xx = np.mgrid[0:96, 0:96] + 0.5
    r_ring = np.hypot(xx - 30, yy - 40)
    ring = (r_ring >= 12) & (r_ring <= 20)
    disc = np.hypot(xx - 75, yy - 70) <= 10
    image = np.full((96, 96, 3), 128, dtype=np.uint8)
    image[ring] = (200, 40, 40)
    image[disc] = (40, 40, 200)
    blob = np.exp(-(r_ring**2) / (2 * 11.0**2))
    return image, ring, disc, torch.as_tensor(blob, dtype=torch.float32)[None]


def test_refine_moves_a_ring_peak_from_its_hole_onto_the_band() -> None:
    image, ring, _, cam = _ring_scene()
    hole = np.hypot(*(np.mgrid[0:96, 0:96] + 0.5 - np.array([40, 30])[:, None, None])) < 12
    before = extract_peaks(cam[0], PeakConfig(kernel=9, top_k=25, threshold=0.9))
    x, y = before[0, :2].astype(int)
    assert hole[y, x]  # the CAM's maximum is in the hole, on background pixels
    k, grid = bilateral_kernel(image, side=48, sigma_color=0.05, sigma_space=1.0)
    refined = bilateral_refine(cam, k, grid)
    assert refined.shape == (1, 96, 96)
    assert float(refined.min()) == pytest.approx(0.0, abs=1e-6)
    assert float(refined.max()) == pytest.approx(1.0, abs=1e-6)
    after = extract_peaks(refined[0], PeakConfig(kernel=9, top_k=25, threshold=0.9))
    assert len(after) >= 1
    for px, py, _ in after:  # every point kept lies on the band, none in the hole
        assert ring[int(py), int(px)]


def test_refine_keeps_a_solid_shape_peak_inside_and_zero_maps_zero() -> None:
    image, _, disc, _ = _ring_scene()
    yy, xx = np.mgrid[0:96, 0:96] + 0.5
    only_disc = torch.as_tensor(np.exp(-(np.hypot(xx - 75, yy - 70) ** 2) / 128.0))[None].float()
    maps = torch.cat([only_disc, torch.zeros(1, 96, 96)])
    k, grid = bilateral_kernel(image, side=48, sigma_color=0.05, sigma_space=1.0)
    out = bilateral_refine(maps, k, grid)
    r, c = divmod(int(out[0].argmax()), 96)
    assert disc[r, c]
    assert torch.all(out[1] == 0)
    assert bilateral_refine(torch.zeros(0, 96, 96), k, grid).shape == (0, 96, 96)


def test_refine_rejects_a_kernel_of_another_grid() -> None:
    image, _, _, cam = _ring_scene()
    k, _ = bilateral_kernel(image, side=16, sigma_color=0.1, sigma_space=1.0)
    with pytest.raises(ValueError, match="does not fit"):
        bilateral_refine(cam, k, (8, 8))
    with pytest.raises(ValueError, match="KxHxW"):
        bilateral_refine(cam[0], k, (16, 16))
    with pytest.raises(ValueError, match="HxWx3"):
        bilateral_kernel(np.zeros((4, 4), dtype=np.uint8), 4, 0.1, 1.0)


def test_config_section_and_validation() -> None:
    cfg = from_dict({"bilateral": {"enabled": True, "side": 32}}, PeakStageConfig)
    assert cfg.bilateral == BilateralConfig(enabled=True, side=32)
    assert PeakStageConfig().bilateral.enabled is False  # the method has no such step
    with pytest.raises(ValueError, match="side"):
        BilateralConfig(side=1)
    with pytest.raises(ValueError, match="sigmas"):
        BilateralConfig(sigma_color=0.0)


def test_compute_class_maps_applies_it_to_every_kind() -> None:
    torch.manual_seed(0)
    model = build_classifier(ClassifierConfig(backbone="plainconv", width=4, input_size=32), 3)
    image, _, _, _ = _ring_scene()
    plain = PeakStageConfig()
    bil = PeakStageConfig(bilateral=BilateralConfig(enabled=True, side=24))
    a = compute_class_maps(model.eval(), image, 32, plain, classes=[1, 2])
    b = compute_class_maps(model, image, 32, bil, classes=[1, 2])
    assert b.classes == a.classes
    np.testing.assert_allclose(b.probs, a.probs)
    c = bil.bilateral
    k, grid = bilateral_kernel(image, 24, c.sigma_color, c.sigma_space)
    for kind in ("cam", "refined"):
        want = bilateral_refine(a.maps[kind], k, grid, bil.bilateral.power)
        torch.testing.assert_close(b.maps[kind], want)


def test_refine_power_weighs_the_appearance_term() -> None:
    # a 1x2 grid on a 1x2 image: K·m is exact, no resampling; maps [1, 0.5] and [0, 0] pixels
    image = np.array([[[0, 0, 0], [255, 255, 255]]], dtype=np.uint8)
    k, grid = bilateral_kernel(image, side=2, sigma_color=1.0, sigma_space=1.0)
    m = torch.tensor([[[1.0, 0.5]]])
    spread = m.flatten(1) @ k.T  # 1 x 2
    for power in (1.0, 3.0):
        raw = (m.flatten(1) * spread.pow(power)).view(1, 1, 2)
        want = (raw - raw.min()) / (raw.max() - raw.min() + 1e-8)
        torch.testing.assert_close(bilateral_refine(m, k, grid, power), want)
    with pytest.raises(ValueError, match="power"):
        bilateral_refine(m, k, grid, 0.0)
    with pytest.raises(ValueError, match="power"):
        BilateralConfig(power=-1.0)
