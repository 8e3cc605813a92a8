"""Backbone weights from a trained CAM classifier: the demo's stand-in for ImageNet weights.

The method starts its classifier from ImageNet-pretrained backbones; none can be downloaded
here. ``ray_jobs.pretrain_classifier`` trains the classifier (the ``classify`` stage's own
code) on image-level labels of a large, separately generated pool of synthetic ``shapes``
images, and :func:`export_backbone` keeps its backbone — not its class head — in a file that
``classifier.weights`` loads (``builtin``: the committed ``weaksam/assets/demo_backbone.pt``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from weaksam import storage
from weaksam.cam.models import backbone_state, read_backbone_file
from weaksam.cam.training import load_classifier
from weaksam.configlib import to_dict
from weaksam.runs import file_digest
from weaksam.train.checkpoint import atomic_torch_save, torch_load

PROVENANCE_KEYS = (
    "backbone", "width", "input_size", "epoch", "pool_test_map", "train_seconds", "trained_on",
)  # fmt: skip
"""What :func:`provenance` copies from the metadata of the file a backbone started from."""


def export_backbone(
    classifier: str, out_path: str, extra: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Write the backbone of ``classifier`` (a ``classify``-stage ``classifier.pt``) to
    ``out_path`` (both locations: local, ``file://`` or ``s3://``).

    The file, loadable with ``weights_only=True``, holds ``model`` (the backbone state dict,
    key names as :func:`weaksam.cam.models.load_backbone_weights` expects; no class head),
    ``backbone``, ``width``, ``input_size``, ``pooling``, ``classifier_config``,
    ``class_names``, ``epoch``, ``history`` and the items of ``extra`` (plain values only).
    Returns that dict without ``model``, plus ``parameters`` and ``bytes``.
    """
    model, cfg, names = load_classifier(classifier)
    blob = torch_load(classifier)
    state = backbone_state(model, cfg)
    meta: dict[str, Any] = {
        "backbone": cfg.backbone,
        "width": cfg.width,
        "input_size": cfg.input_size,
        "pooling": cfg.pooling,
        "classifier_config": {**to_dict(cfg), "weights": ""},
        "class_names": names,
        "epoch": int(blob.get("epoch", 0)),
        "history": list(blob.get("history", [])),
        **dict(extra or {}),
    }
    atomic_torch_save({"model": state, **meta}, out_path)
    meta["parameters"] = int(sum(v.numel() for k, v in state.items() if v.is_floating_point()))
    meta["bytes"] = storage.size(out_path)
    return meta


def provenance(weights: str) -> dict[str, Any] | None:
    """Where a pre-training run started: ``None`` for random init, else the weights file's
    name, SHA-256 and, for a file of :func:`export_backbone`, its :data:`PROVENANCE_KEYS`
    (so a second pre-training phase records the first one's size, epochs and pool mAP)."""
    if not weights:
        return None
    _, meta = read_backbone_file(weights)
    return {
        "file": storage.basename(weights),
        "sha256": file_digest(weights),
        **{k: meta[k] for k in PROVENANCE_KEYS if k in meta},
    }


def write_summary(meta: Mapping[str, Any], path: str) -> str:
    """``meta`` (as returned by :func:`export_backbone`) as indented JSON at the location
    ``path`` (written whole)."""
    text = json.dumps(meta, indent=1, sort_keys=False, default=float)
    storage.write_text(path, text + "\n")
    return path


def plot_history(history: Sequence[Mapping[str, float]], path: str, title: str = "") -> None:
    """PNG of the training loss and the held-out validation mAP against epoch at the location
    ``path`` (written whole)."""
    if not history:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from weaksam.viz.plots import save_figure

    epochs = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    axes[0].plot(epochs, [h["loss"] for h in history])
    axes[0].set_xlabel("epoch")
    axes[0].set_title("training loss (multi-label BCE)")
    axes[1].plot(epochs, [h["val_map"] for h in history])
    axes[1].set_xlabel("epoch")
    axes[1].set_ylim(0, 1)
    axes[1].set_title("validation mAP (held-out pool images)")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    try:
        save_figure(fig, path, dpi=110)
    finally:
        plt.close(fig)
