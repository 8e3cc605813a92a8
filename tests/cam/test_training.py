"""Classifier training: a few plain-Python steps, export/load, resume, and two DDP workers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

from weaksam.cam import training
from weaksam.cam.config import ClassifierConfig
from weaksam.cam.data import LABEL_COLUMNS, load_image_set, read_label_rows, resize_uint8
from weaksam.cam.training import (
    export_classifier,
    load_classifier,
    lr_schedule,
    train_classifier,
)
from weaksam.data.imageio import load_image


def test_reads_label_columns_only(tiny_manifest: str) -> None:
    rows = read_label_rows(tiny_manifest, "train")
    assert len(rows) == 8
    assert set(rows[0]) == set(LABEL_COLUMNS)
    assert not any(k.startswith("gt_") for k in rows[0])


def test_lr_schedule_warms_up_then_decays() -> None:
    lr_factor = lr_schedule(ClassifierConfig(epochs=10, warmup_epochs=2))
    assert lr_factor(0.0) < lr_factor(1.0) < lr_factor(2.0) == pytest.approx(1.0)
    assert lr_factor(10.0) == pytest.approx(0.05)


def test_train_export_load_roundtrip(
    tiny_manifest: str, tmp_path: Any, loop_config: Callable[..., dict[str, Any]], cam_classes: Any
) -> None:
    state = train_classifier(loop_config(tiny_manifest, epochs=2))
    assert state["epoch"] == 2 and len(state["history"]) == 2
    assert all(0.0 <= h["val_map"] <= 1.0 for h in state["history"])
    path = str(tmp_path / "classifier.pt")
    export_classifier(state, path, list(cam_classes.names))
    blob = torch.load(path, weights_only=True)  # loadable without pickled code
    assert blob["class_names"] == list(cam_classes.names)
    model, cfg, names = load_classifier(path)
    assert cfg.backbone == "plainconv" and names == list(cam_classes.names)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, state["model"][k])
    bad = dict(blob, model={**blob["model"], "extra.weight": torch.zeros(1)})
    torch.save(bad, path)
    with pytest.raises(RuntimeError, match=r"extra\.weight"):
        load_classifier(path)


def test_resume_continues_from_checkpoint(
    tiny_manifest: str, monkeypatch: pytest.MonkeyPatch, loop_config: Callable[..., dict[str, Any]]
) -> None:
    first = train_classifier(loop_config(tiny_manifest, epochs=1))
    monkeypatch.setattr(training, "load_resume_state", lambda: first)
    second = train_classifier(loop_config(tiny_manifest, epochs=3))
    assert second["epoch"] == 3
    assert len(second["history"]) == 3
    assert second["history"][0] == first["history"][0]  # epoch 1 was not trained again
    done = train_classifier(loop_config(tiny_manifest, epochs=1))
    monkeypatch.setattr(training, "load_resume_state", lambda: done)
    again = train_classifier(loop_config(tiny_manifest, epochs=1))  # nothing left to do
    for k, v in again["model"].items():
        torch.testing.assert_close(v, done["model"][k])


def test_cache_changes_nothing_but_decoding(
    tiny_manifest: str, loop_config: Callable[..., dict[str, Any]]
) -> None:
    """Lazy images equal an eager decode; training with the cache on, off or too small for
    the set gives the same weights and history (the cache is not modified by augmentation)."""
    rows = read_label_rows(tiny_manifest, "train")
    lazy = load_image_set(rows, 40, 3, cache_mb=0)
    eager = torch.stack([resize_uint8(load_image(r["path"]), 40) for r in rows])
    assert torch.equal(lazy.images[torch.arange(len(rows))], eager)
    assert torch.equal(lazy.images[2:5], eager[2:5]) and lazy.images[[]].shape == (0, 3, 40, 40)
    runs = [
        train_classifier(loop_config(tiny_manifest, epochs=2, **extra))
        for extra in ({}, {"cache_images": True}, {"cache_images": True, "cache_mb": 0.02})
    ]
    for other in runs[1:]:
        assert other["history"][-1]["loss"] == runs[0]["history"][-1]["loss"]
        for k, v in other["model"].items():
            assert torch.equal(v, runs[0]["model"][k]), k
