import numpy as np
import pytest
import torch

from weaksam.cam.peaks import PeakConfig, extract_peaks, local_maxima, minmax_normalize


def _bump(h: int, w: int, r: int, c: int, amp: float, sigma: float = 2.0) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return amp * np.exp(-((yy - r) ** 2 + (xx - c) ** 2) / (2 * sigma**2))


def test_known_maxima_threshold_and_order() -> None:
    m = _bump(40, 40, 5, 6, 1.0) + _bump(40, 40, 30, 30, 0.95) + _bump(40, 40, 20, 5, 0.5)
    pts = extract_peaks(m, PeakConfig(kernel=5, top_k=25, threshold=0.9))
    # the 0.5 bump is below the absolute threshold; order is by score
    np.testing.assert_allclose(pts[:, :2], [[6.5, 5.5], [30.5, 30.5]])
    np.testing.assert_allclose(pts[:, 2], [1.0, 0.95], atol=1e-6)
    low = extract_peaks(m, PeakConfig(kernel=5, threshold=0.4))
    assert len(low) == 3


def test_kernel_suppresses_nearby_maxima() -> None:
    m = _bump(40, 40, 10, 10, 1.0, 1.0) + _bump(40, 40, 10, 14, 0.97, 1.0)
    # kernel 5 sees both bumps as local maxima (4 px apart) and the distance rule (<2) keeps both
    assert len(extract_peaks(m, PeakConfig(kernel=5, threshold=0.9))) == 2
    # kernel 9 max-pools them into one
    assert len(extract_peaks(m, PeakConfig(kernel=9, threshold=0.9))) == 1


def test_distance_filter_on_plateau_ties() -> None:
    m = np.zeros((10, 10), dtype=np.float32)
    m[2, 2] = m[2, 3] = 1.0  # a two-pixel plateau: both equal their max-pool
    m[8, 8] = 1.0
    lm = local_maxima(torch.as_tensor(m), 3)
    assert lm[2, 2] and lm[2, 3] and lm[8, 8] and not lm[2, 1] and not lm[3, 3]
    pts = extract_peaks(m, PeakConfig(kernel=5, threshold=0.9))
    # (2,3) is within L1 distance 1 < 2 of (2,2), kept first by row-major tie order
    np.testing.assert_allclose(pts[:, :2], [[2.5, 2.5], [8.5, 8.5]])


def test_top_k_limits_candidates() -> None:
    m = np.zeros((9, 9), dtype=np.float32)
    for i, (r, c) in enumerate([(0, 0), (0, 8), (8, 0), (8, 8), (4, 4)]):
        m[r, c] = 1.0 - i * 0.01
    assert len(extract_peaks(m, PeakConfig(kernel=3, top_k=2, threshold=0.5))) == 2
    assert len(extract_peaks(m, PeakConfig(kernel=3, top_k=25, threshold=0.5))) == 5


def test_all_zero_map_and_global_max_kept() -> None:
    assert extract_peaks(np.zeros((8, 8)), PeakConfig()).shape == (0, 3)
    # a map whose maximum is below the threshold still yields its global maximum
    m = _bump(20, 20, 7, 9, 0.3)
    pts = extract_peaks(m, PeakConfig(kernel=5, threshold=0.9))
    assert len(pts) == 1 and tuple(pts[0, :2]) == (9.5, 7.5)


def test_minmax_normalize_and_validation() -> None:
    maps = torch.tensor([[[1.0, 3.0], [2.0, 5.0]], [[0.0, 0.0], [0.0, 0.0]]])
    out = minmax_normalize(maps)
    torch.testing.assert_close(out[0], torch.tensor([[0.0, 0.5], [0.25, 1.0]]))
    assert float(out[1].abs().max()) == 0.0
    with pytest.raises(ValueError, match="odd"):
        PeakConfig(kernel=4)
    with pytest.raises(ValueError, match="HxW"):
        extract_peaks(np.zeros((2, 2, 2)), PeakConfig())
