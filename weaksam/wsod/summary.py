"""Loss curves (PNG) and the method comparison table of the WSOD stage."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from weaksam.eval.table import format_table

TABLE_HEADERS = (  # {train} / {test}: the run's split names (comparison_table)
    "method",
    "AP50 VOC07 ({test})",
    "AP50 all-pt ({test})",
    "CorLoc ({train})",
    "train s",
    "infer s",
)


def plot_curves(history: Sequence[Mapping[str, float]], path: str, title: str = "") -> bool:
    """PNG of the loss terms and the learning rate against step at the location ``path``
    (local, ``file://`` or ``s3://``; written whole); False when empty."""
    if not history:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from weaksam.viz.plots import save_figure

    steps = [h["step"] for h in history]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for key, label in (
        ("loss", "total"),
        ("mil", "MIL"),
        ("cls", "refine cls"),
        ("reg", "box reg"),
    ):
        values = [h.get(key, 0.0) for h in history]
        if any(values):
            axes[0].plot(steps, values, label=label)
    axes[0].set_xlabel("step")
    axes[0].set_title(f"{title} training loss".strip())
    axes[0].legend(fontsize=7)
    axes[1].plot(steps, [h.get("lr", 0.0) for h in history])
    axes[1].set_xlabel("step")
    axes[1].set_title("learning rate")
    fig.tight_layout()
    try:
        save_figure(fig, path, dpi=110)
    finally:
        plt.close(fig)
    return True


def comparison_rows(methods: Mapping[str, Mapping[str, Any]]) -> list[list[Any]]:
    """One row per method (in the mapping's order) for :data:`TABLE_HEADERS`."""
    return [
        [
            name,
            m.get("ap50_voc07"),
            m.get("ap50_voc"),
            m.get("corloc"),
            m.get("train_seconds"),
            m.get("infer_seconds"),
        ]
        for name, m in methods.items()
    ]


def comparison_table(
    methods: Mapping[str, Mapping[str, Any]], title: str, train: str = "train", test: str = "test"
) -> str:
    """The printed comparison table (``supervised`` is the ground-truth upper bound); the
    headers name the splits ``train`` and ``test``."""
    heads = [h.format(train=train, test=test) for h in TABLE_HEADERS]
    return format_table(comparison_rows(methods), heads, title=title, decimals=3)
