"""Turn a demo-SAM training checkpoint into the shipped weights file, and plot its curves."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch

from weaksam import storage
from weaksam.configlib import from_dict
from weaksam.sam.build import SamConfig, build_sam_model, save_sam_checkpoint
from weaksam.train.reporting import STATE_FILE


def export_trained_sam(checkpoint_dir: str, out_path: str) -> dict[str, Any]:
    """Read ``state.pt`` of a training checkpoint and write a SAM checkpoint at ``out_path``
    (either may be a local path or a URI).

    Returns ``{"step": int, "history": list of metric dicts}``.
    """
    if storage.is_uri(checkpoint_dir):
        with storage.open_input(storage.join(checkpoint_dir, STATE_FILE)) as fh:
            state = torch.load(fh, map_location="cpu", weights_only=True)
    else:
        state = torch.load(
            os.path.join(checkpoint_dir, STATE_FILE), map_location="cpu", weights_only=True
        )
    sam_cfg = from_dict(state["sam_config"], SamConfig)
    model = build_sam_model(sam_cfg.model_type)
    prefix = "sam."
    weights = {k[len(prefix) :]: v for k, v in state["model"].items() if k.startswith(prefix)}
    model.load_state_dict(weights, strict=True)
    history = list(state.get("history", []))
    save_sam_checkpoint(
        model,
        out_path,
        {"model_type": sam_cfg.model_type},
        extra={
            "step": int(state["step"]),
            "history": history,
            "train_config": state["train_config"],
        },
    )
    return {"step": int(state["step"]), "history": history}


def plot_history(history: Sequence[dict[str, float]], path: str) -> None:
    """PNG of loss and validation mIoU against step, at a local path or a URI."""
    if not history:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from weaksam.viz.plots import save_figure

    steps = [h["step"] for h in history]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    axes[0].plot(steps, [h["loss"] for h in history], label="train loss")
    axes[0].set_xlabel("step")
    axes[0].set_title("loss (20·focal + dice + IoU MSE)")
    axes[1].plot(steps, [h["val_miou"] for h in history], label="picked by predicted IoU")
    axes[1].plot(steps, [h["val_oracle_miou"] for h in history], label="best of 3 (oracle)")
    axes[1].plot(steps, [h["miou"] for h in history], label="train (best of 3)", alpha=0.6)
    axes[1].set_xlabel("step")
    axes[1].set_ylim(0, 1)
    axes[1].set_title("point-prompt mIoU on held-out blobs")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    try:
        save_figure(fig, path, dpi=110)
    finally:
        plt.close(fig)
