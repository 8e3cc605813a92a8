"""Charts (PR curves, stage timings) and the resize helpers used by the run report."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from weaksam.viz.draw import fit_image, fit_masks
from weaksam.viz.plots import PRCurve, PRPanel, plot_pr_curves, plot_stage_seconds


def test_fit_image_shrinks_the_long_side_only() -> None:
    img = np.zeros((100, 400, 3), np.uint8)
    out, s = fit_image(img, 200)
    assert out.shape == (50, 200, 3) and out.dtype == np.uint8 and s == 0.5
    same, s1 = fit_image(img, 1000)
    assert same.shape == img.shape and s1 == 1.0 and same is not img
    with pytest.raises(ValueError):
        fit_image(img, 0)


def test_fit_masks_nearest() -> None:
    m = np.zeros((1, 4, 4), bool)
    m[0, :2, :2] = True
    out = fit_masks(m, 2, 2)
    assert out.dtype == np.bool_ and out[0].tolist() == [[True, False], [False, False]]


def test_plots_write_pngs(tmp_path: Path) -> None:
    curve = PRCurve("a AP 0.50", np.array([0.5, 0.5, 1.0]), np.array([1.0, 0.5, 2 / 3]), 0)
    empty = PRCurve("b AP 0.00", np.zeros(0), np.zeros(0), 1)
    pr = plot_pr_curves(
        [PRPanel("one", [curve, empty]), PRPanel("two")], str(tmp_path / "a" / "pr.png")
    )
    bars = plot_stage_seconds(
        ["x", "y"], [1.0, 2.5], [False, True], str(tmp_path / "t.png"), "timings"
    )
    for path in (pr, bars):
        with Image.open(path) as im:
            assert im.format == "PNG" and im.size[0] > 100
    with pytest.raises(ValueError):
        plot_stage_seconds(["x"], [1.0, 2.0], [False], str(tmp_path / "u.png"), "")


def test_figures_on_s3_are_the_bytes_of_local_ones(s3_bucket: str, tmp_path: Path) -> None:
    """PNGs and charts written to a bucket hold the same bytes as the local files."""
    from weaksam import storage
    from weaksam.viz.draw import save_png

    img = np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8)
    panels = [PRPanel("p", [PRCurve("c", np.array([0.0, 1.0]), np.array([1.0, 0.5]), 1)])]
    for name, draw in (
        ("img.png", lambda loc: save_png(loc, img)),
        (
            "bars.png",
            lambda loc: plot_stage_seconds(["a", "b"], [1.0, 2.0], [False, True], loc, "t"),
        ),
        ("pr.png", lambda loc: plot_pr_curves(panels, loc)),
    ):
        local, remote = str(tmp_path / "sub" / name), f"{s3_bucket}/figs/{name}"
        assert draw(local) == local and draw(remote) == remote
        assert storage.read_bytes(remote) == Path(local).read_bytes(), name
