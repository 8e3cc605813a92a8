"""The demo configs agree with the committed demo backbone they load (no Ray, no training)."""

from __future__ import annotations

from pathlib import Path

import pytest

from weaksam.cam.models import BUILTIN, DEMO_BACKBONE, read_backbone_file
from weaksam.config import Config, load_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _load(name: str) -> Config:
    return load_config(str(CONFIGS / f"{name}.yaml"))


@pytest.mark.parametrize("name", ["demo", "bench"])
def test_demo_classifier_reads_images_as_the_backbone_was_pretrained(name: str) -> None:
    """Width, pooling and input size of a `builtin` classifier are those of the committed
    file's last pre-training phase (a backbone pre-trained at 192 px and probed at 128 px
    loses resolution it was trained for)."""
    c = _load(name).classifier
    _, meta = read_backbone_file(DEMO_BACKBONE)
    assert c.weights == BUILTIN and c.backbone == meta["backbone"] == "plainconv"
    assert (c.width, c.pooling, c.input_size) == (
        meta["width"],
        meta["pooling"],
        meta["input_size"],
    )


def test_the_two_pretraining_phases_chain() -> None:
    """Phase 2 starts from phase 1's export, on the same pool (seed 1000, no dataset config's
    seed), with phase 1's architecture, and the demo reads images at phase 2's size."""
    first, second, demo = _load("demo_backbone"), _load("demo_backbone_hires"), _load("demo")
    assert first.classifier.weights == ""  # random init
    assert second.classifier.weights == "runs/demo_backbone_128.pt"
    assert second.synth == first.synth and first.synth.seed != demo.synth.seed
    for key in ("backbone", "width", "pooling"):
        assert getattr(second.classifier, key) == getattr(first.classifier, key)
    assert second.classifier.input_size > first.classifier.input_size
    assert demo.classifier.input_size == second.classifier.input_size
    assert second.name != first.name  # separate run folders: phase 2 does not resume phase 1


def test_wsod_and_retrain_use_the_same_demo_backbone() -> None:
    cfg = _load("demo")
    assert cfg.wsod.model.weights == cfg.retrain.model.weights == BUILTIN
    assert cfg.wsod.model.width == cfg.retrain.model.width == cfg.classifier.width
