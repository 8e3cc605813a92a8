"""Backbone weights from a trained classifier: export, strict loading, ``builtin``."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from typing import Any

import pytest
import torch

from weaksam.cam.config import ClassifierConfig
from weaksam.cam.models import (
    BUILTIN,
    DEMO_BACKBONE,
    build_classifier,
    read_backbone_file,
    resolve_weights,
)
from weaksam.cam.pretrain import export_backbone, plot_history, provenance, write_summary
from weaksam.cam.training import export_classifier, param_groups, train_classifier
from weaksam.configlib import to_dict

CFG = ClassifierConfig(backbone="plainconv", width=4, input_size=32)


def _classifier_file(tmp_path: Any, cfg: ClassifierConfig = CFG) -> tuple[str, torch.nn.Module]:
    torch.manual_seed(0)
    model = build_classifier(cfg, 3)
    with torch.no_grad():  # non-default BN statistics must travel too
        model.backbone.body[0][1].running_mean.fill_(0.25)  # type: ignore[index]
    history = [{"epoch": 7, "loss": 0.5, "val_map": 0.6, "seconds": 1.0}]
    state = {"model": model.state_dict(), "classifier_config": to_dict(cfg), "num_classes": 3,
             "epoch": 7, "history": history}  # fmt: skip
    path = str(tmp_path / "classifier.pt")
    export_classifier(state, path, ["a", "b", "c"])
    return path, model


def test_export_then_load_copies_the_backbone_not_the_head(tmp_path: Any) -> None:
    path, src = _classifier_file(tmp_path)
    out = str(tmp_path / "bb.pt")
    meta = export_backbone(path, out, {"trained_on": "test"})
    assert meta["backbone"] == "plainconv" and meta["width"] == 4 and meta["epoch"] == 7
    assert meta["trained_on"] == "test" and meta["parameters"] > 0
    state, file_meta = read_backbone_file(out)
    assert all(k.startswith("body.") for k in state)  # the backbone's own keys, no head
    assert file_meta["class_names"] == ["a", "b", "c"]
    torch.manual_seed(123)
    dst = build_classifier(ClassifierConfig(**{**to_dict(CFG), "weights": out}), 5)
    for k, v in src.backbone.state_dict().items():
        torch.testing.assert_close(dst.backbone.state_dict()[k], v)
    assert dst.head.weight.shape == (5, 16)  # a new head for the run's classes
    write_summary(meta, str(tmp_path / "bb.json"))
    plot_history(meta["history"], str(tmp_path / "bb.png"))
    assert os.path.getsize(tmp_path / "bb.png") > 0


def test_provenance_names_the_file_a_second_phase_started_from(tmp_path: Any) -> None:
    path, _ = _classifier_file(tmp_path)
    out = str(tmp_path / "phase1.pt")
    export_backbone(path, out, {"pool_test_map": 0.93, "trained_on": "pool", "other": 1})
    with open(out, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    assert provenance(out) == {
        "file": "phase1.pt", "sha256": sha, "backbone": "plainconv", "width": 4,
        "input_size": 32, "epoch": 7, "pool_test_map": 0.93, "trained_on": "pool",
    }  # fmt: skip
    assert provenance("") is None  # random init
    with pytest.raises(FileNotFoundError):
        provenance(str(tmp_path / "missing.pt"))


def test_backbone_file_keys_are_strict_except_the_head(tmp_path: Any) -> None:
    path, _ = _classifier_file(tmp_path)
    out = str(tmp_path / "bb.pt")
    export_backbone(path, out)
    state, meta = read_backbone_file(out)
    cfg = ClassifierConfig(**{**to_dict(CFG), "weights": str(tmp_path / "edited.pt")})

    def save(edited: dict[str, torch.Tensor]) -> None:
        torch.save({"model": edited, **meta}, str(tmp_path / "edited.pt"))

    save({**state, "fc.weight": torch.zeros(1000, 16), "fc.bias": torch.zeros(1000)})
    build_classifier(cfg, 3)  # a classifier head in the file is left out
    missing = dict(state)
    del missing["body.0.0.weight"]
    save(missing)
    with pytest.raises(ValueError, match=r"missing \['body.0.0.weight'\]"):
        build_classifier(cfg, 3)
    save({**state, "body.9.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match=r"unexpected \['body.9.weight'\]"):
        build_classifier(cfg, 3)
    with pytest.raises(ValueError, match="width=4"):  # the file says which backbone it is
        build_classifier(ClassifierConfig(**{**to_dict(cfg), "weights": out, "width": 8}), 3)


def test_builtin_names_the_committed_demo_backbone() -> None:
    cfg = ClassifierConfig(backbone="plainconv", weights=BUILTIN)
    assert resolve_weights(cfg) == DEMO_BACKBONE
    assert resolve_weights(ClassifierConfig(weights="/x.pt")) == "/x.pt"
    relative = resolve_weights(ClassifierConfig(weights="runs/x.pt"))  # for Ray workers
    assert relative == os.path.join(os.getcwd(), "runs", "x.pt")
    assert resolve_weights(ClassifierConfig()) == ""


def test_builtin_demo_backbone_loads_strictly() -> None:
    state, meta = read_backbone_file(DEMO_BACKBONE)
    assert os.path.getsize(DEMO_BACKBONE) < 5 * 2**20
    assert "shapes" in meta["trained_on"] and meta["synth_config"]["seed"] not in (0, 1)
    cfg = ClassifierConfig(backbone=meta["backbone"], width=meta["width"], weights=BUILTIN)
    model = build_classifier(cfg, 6)
    own = model.backbone.state_dict()
    assert set(own) == set(state)
    for k, v in state.items():
        torch.testing.assert_close(own[k], v)
    assert not any(k.startswith(("head", "fc")) for k in state)


def test_backbone_lr_zero_trains_the_head_alone(
    tiny_manifest: str, tmp_path: Any, loop_config: Callable[..., dict[str, Any]]
) -> None:
    path, src = _classifier_file(tmp_path)  # the same plainconv as the loop config's
    out = str(tmp_path / "bb.pt")
    export_backbone(path, out)
    state = train_classifier(loop_config(tiny_manifest, epochs=2, weights=out, backbone_lr=0.0))
    before = src.backbone.state_dict()
    for k, v in before.items():  # weights and batch-norm statistics untouched
        torch.testing.assert_close(state["model"][f"backbone.{k}"], v)
    assert not torch.equal(state["model"]["head.weight"], src.head.weight.detach())
    moved = train_classifier(loop_config(tiny_manifest, epochs=1, weights=out, backbone_lr=0.1))
    assert not torch.equal(moved["model"]["backbone.body.0.0.weight"], before["body.0.0.weight"])


def test_param_groups_scale_the_backbone_lr() -> None:
    model = build_classifier(ClassifierConfig(backbone="plainconv", width=4), 3)
    cfg = ClassifierConfig(lr=0.01, backbone_lr=0.1)
    groups = param_groups(model, cfg)
    assert [g["base_lr"] for g in groups] == pytest.approx([0.01, 0.01, 0.001, 0.001])
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    model.backbone.requires_grad_(False)
    frozen = param_groups(model, ClassifierConfig(lr=0.01, backbone_lr=0.0))
    assert [g["base_lr"] for g in frozen] == [0.01, 0.01]  # the head's weight and bias
    with pytest.raises(ValueError, match="backbone_lr"):
        ClassifierConfig(backbone_lr=-1.0)
