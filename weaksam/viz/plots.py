"""Matplotlib charts (Agg backend, PNG files): precision-recall curves and stage timings.

Each chart is rendered in memory and written through :mod:`weaksam.storage`, so ``path`` may
be a local path, ``file://`` or ``s3://`` location.
"""

from __future__ import annotations

import io
import posixpath
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from weaksam import storage
from weaksam.viz.draw import class_color


@dataclass(frozen=True)
class PRCurve:
    """One curve: ``recall`` and ``precision`` of the same length ``K`` (score order)."""

    label: str
    recall: npt.NDArray[np.float64]
    precision: npt.NDArray[np.float64]
    color_index: int = 0


@dataclass(frozen=True)
class PRPanel:
    """One subplot of :func:`plot_pr_curves`: a title and its curves."""

    title: str
    curves: Sequence[PRCurve] = field(default_factory=tuple)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str, dpi: int = 100) -> str:
    """Render ``fig`` in the format of ``path``'s extension (PNG without one) and write it to
    ``path`` atomically (parents created for local paths); returns ``path``."""
    ext = posixpath.splitext(storage.basename(path))[1].lstrip(".").lower()
    buf = io.BytesIO()
    fig.savefig(buf, dpi=dpi, format=ext or "png")
    storage.write_bytes(path, buf.getvalue())
    return path


def _save_and_close(plt: Any, fig: Any, path: str) -> str:
    """Lay out ``fig``, write it to ``path`` (:func:`save_figure`) and close it, also on error."""
    fig.tight_layout()
    try:
        save_figure(fig, path, dpi=100)
    finally:
        plt.close(fig)
    return path


def plot_pr_curves(panels: Sequence[PRPanel], path: str, ncols: int = 3) -> str:
    """One subplot per panel, recall on x and precision on y, both in ``[0, 1]``.

    Each curve is drawn as a step line in :func:`class_color` of its ``color_index``; curves
    with no points (a class without detections) are listed in the legend with an empty line.
    Returns ``path``.
    """
    if not panels:
        raise ValueError("plot_pr_curves needs at least one panel")
    plt = _pyplot()
    ncols = min(ncols, len(panels))
    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 4.0 * nrows), squeeze=False)
    for ax, panel in zip(axes.flat, panels, strict=False):
        for curve in panel.curves:
            color = tuple(v / 255 for v in class_color(curve.color_index))
            rec = np.asarray(curve.recall, dtype=np.float64)
            prec = np.asarray(curve.precision, dtype=np.float64)
            ok = np.isfinite(rec) & np.isfinite(prec)
            ax.step(rec[ok], prec[ok], where="post", color=color, label=curve.label, lw=1.4)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.set_title(panel.title, fontsize=10)
        ax.grid(alpha=0.3)
        if panel.curves:
            ax.legend(fontsize=7, loc="upper right")
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    return _save_and_close(plt, fig, path)


def plot_stage_seconds(
    names: Sequence[str], seconds: Sequence[float], reused: Sequence[bool], path: str, title: str
) -> str:
    """Horizontal bars of each stage's wall time, top to bottom in pipeline order.

    ``reused[i]`` marks a stage skipped in this invocation (its bar is the time of the run
    that produced its outputs, drawn hatched and grey). Returns ``path``.
    """
    if not (len(names) == len(seconds) == len(reused)):
        raise ValueError("names, seconds and reused must have the same length")
    if not names:
        raise ValueError("plot_stage_seconds needs at least one stage")
    plt = _pyplot()
    y = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(7.5, 0.9 + 0.32 * len(names)))
    colors = ["#b0b0b0" if r else "#3a78c2" for r in reused]
    bars = ax.barh(y, seconds, color=colors, edgecolor="#404040", lw=0.5)
    for bar, r in zip(bars, reused, strict=True):
        if r:
            bar.set_hatch("//")
    top = max(max(seconds), 1e-9)
    for yi, s in zip(y, seconds, strict=True):
        ax.text(s + top * 0.01, yi, f"{s:.1f} s", va="center", fontsize=8)
    ax.set_yticks(y, list(names))
    ax.invert_yaxis()
    ax.set_xlim(0, top * 1.15)
    ax.set_xlabel("seconds")
    ax.set_title(title, fontsize=10)
    if any(reused):
        from matplotlib.patches import Patch

        ax.legend(
            handles=[
                Patch(color="#3a78c2", label="ran in this invocation"),
                Patch(facecolor="#b0b0b0", hatch="//", label="fresh, reused (earlier run)"),
            ],
            fontsize=7,
            loc="lower right",
        )
    return _save_and_close(plt, fig, path)


@dataclass(frozen=True)
class Curve:
    """One line of :func:`plot_curves`: ``x`` and ``y`` of the same length, in ``x`` order."""

    label: str
    x: Sequence[float]
    y: Sequence[float]
    color_index: int = 0
    dashed: bool = False


def plot_curves(curves: Sequence[Curve], path: str, *, xlabel: str, ylabel: str, title: str) -> str:
    """Lines with markers (a learning curve: a figure against training steps), ``y`` in
    ``[0, 1]``; dashed lines for reference runs (e.g. trained on ground truth). Returns
    ``path``."""
    if not curves:
        raise ValueError("plot_curves needs at least one curve")
    for c in curves:
        if len(c.x) != len(c.y):
            raise ValueError(f"{c.label}: {len(c.x)} x values for {len(c.y)} y values")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for c in curves:
        color = tuple(v / 255 for v in class_color(c.color_index))
        ax.plot(c.x, c.y, "--" if c.dashed else "-", marker="o", ms=3, color=color, label=c.label)
    ax.set_ylim(0, 1.0)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    return _save_and_close(plt, fig, path)
