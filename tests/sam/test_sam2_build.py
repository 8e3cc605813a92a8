"""SAM 2.1 builders (against the ``sam2`` package's Hydra files), the strict checkpoint loader,
the config switch and the engine factory."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose
from hydra.utils import instantiate
from omegaconf import OmegaConf
from sam2_testing import make_sam2_image, make_test_sam2

from weaksam.configlib import to_dict
from weaksam.proposals.udf import ProposalGenerator
from weaksam.sam.backends import build_engine
from weaksam.sam.build import (
    SAM2_MODEL_TYPES,
    SamCheckpointError,
    SamConfig,
    build_sam,
    build_sam_model,
    count_parameters,
    save_sam_checkpoint,
)
from weaksam.sam.engine import EngineConfig, SamPromptEngine
from weaksam.sam.sam2_build import (
    SAM2_BUILDERS,
    build_sam2,
    build_sam2_model,
    build_sam2_tiny,
    load_sam2_checkpoint,
)
from weaksam.sam.sam2_engine import Sam2PromptEngine

# Parameters of SAM 2.1, image and video parts (the published 38.9 M / 46 M / 80.8 M / 224.4 M)
EXPECTED_PARAMS = {
    "sam2.1_hiera_t": 38_962_498,
    "sam2.1_hiera_s": 46_060_354,
    "sam2.1_hiera_b+": 80_850_178,
    "sam2.1_hiera_l": 224_446_642,
}


@pytest.fixture
def meta_device(monkeypatch: pytest.MonkeyPatch) -> None:
    """Build on the meta device. Hiera reads its drop-path rates with ``.item()``, which meta
    tensors refuse, so ``torch.linspace`` alone runs on the CPU."""
    linspace = torch.linspace
    monkeypatch.setattr(torch, "linspace", lambda *a, **k: linspace(*a, **{**k, "device": "cpu"}))


@pytest.mark.parametrize("model_type", SAM2_MODEL_TYPES)
def test_builders_match_sam2_config_files(meta_device: None, model_type: str) -> None:
    with torch.device("meta"):
        ours = SAM2_BUILDERS[model_type]()
        cfg = compose(config_name=f"configs/sam2.1/{model_type}.yaml")
        OmegaConf.resolve(cfg)
        theirs = instantiate(cfg.model, _recursive_=True)
    a, b = ours.state_dict(), theirs.state_dict()
    assert list(a) == list(b)
    assert all(a[k].shape == b[k].shape for k in a)
    assert count_parameters(ours) == EXPECTED_PARAMS[model_type]
    # build_sam2's default decoder post-processing (single mask → best multimask if unstable)
    assert ours.sam_mask_decoder.dynamic_multimask_via_stability
    assert ours.image_size == 1024 and not ours.training


def test_names_are_one_list() -> None:
    assert tuple(SAM2_BUILDERS) == SAM2_MODEL_TYPES
    with pytest.raises(ValueError, match=r"sam2\.1_hiera_l"):
        build_sam2_model("sam2.1_hiera_x")


def test_config_switch() -> None:
    assert SamConfig().backend == "sam" and SamConfig().model_type == "vit_h"  # unchanged default
    assert SamConfig(model_type="demo").backend == "sam"
    for name in SAM2_MODEL_TYPES:
        assert SamConfig(model_type=name).backend == "sam2"
    with pytest.raises(ValueError, match=r"sam2\.1_hiera_b\+"):  # the message lists every type
        SamConfig(model_type="sam2_hiera_l")
    with pytest.raises(ValueError, match=r"SAM 2\.1 model"):
        build_sam(SamConfig(model_type="sam2.1_hiera_t"))
    with pytest.raises(ValueError, match=r"not a SAM 2\.1"):
        build_sam2(SamConfig(model_type="demo"))
    with pytest.raises(ValueError, match="builtin"):
        build_sam2(SamConfig(model_type="sam2.1_hiera_t", checkpoint="builtin"))


@pytest.fixture
def tiny_hiera_t(monkeypatch: pytest.MonkeyPatch) -> None:
    """``sam2.1_hiera_t`` builds the tiny test model (a real one takes seconds on CPU)."""
    monkeypatch.setitem(SAM2_BUILDERS, "sam2.1_hiera_t", lambda: make_test_sam2(0))


def test_factory_builds_the_configured_backend(tiny_hiera_t: None) -> None:
    cfg = EngineConfig(points_per_side=0)
    torch.manual_seed(0)
    sam = build_engine(SamConfig(model_type="demo", device="cpu"), cfg)
    assert isinstance(sam, SamPromptEngine) and sam.cfg is cfg
    sam2 = build_engine(SamConfig(model_type="sam2.1_hiera_t", device="cpu"), cfg)
    assert isinstance(sam2, Sam2PromptEngine) and sam2.cfg is cfg
    assert str(sam2.device) == "cpu"


def test_proposal_actor_runs_sam2(tiny_hiera_t: None) -> None:
    sam_cfg = SamConfig(model_type="sam2.1_hiera_t", device="cpu")
    engine = EngineConfig(points_per_side=3, pred_iou_thresh=0.0, stability_score_thresh=0.0)
    gen = ProposalGenerator(to_dict(sam_cfg), to_dict(engine))
    assert isinstance(gen.engine, Sam2PromptEngine)
    image = make_sam2_image(0, 64, 80)
    row = gen.process(
        {"image_id": "a", "image_index": 0, "image": image, "error": "", "points": None}
    )
    assert row["error"] in ("", None) and (row["height"], row["width"]) == (64, 80)
    # no score filters: the random model's masks come back as proposals
    assert len(row["scores"]) > 0
    assert len(row["boxes"]) == 4 * len(row["scores"]) == 4 * len(row["sources"])


# ------------------------------------------------------------------ checkpoints
def test_checkpoint_round_trip_and_published_format(tmp_path: Path) -> None:
    src = make_test_sam2(1)
    ours = tmp_path / "ours.pt"
    save_sam_checkpoint(src, ours, {"model_type": "tiny"}, {"step": 3})
    dst = build_sam2_tiny(src.image_size)
    extra = load_sam2_checkpoint(dst, ours)
    assert extra == {"config": {"model_type": "tiny"}, "step": 3}
    for k, v in src.state_dict().items():
        assert torch.equal(v, dst.state_dict()[k]), k
    published = tmp_path / "sam2.1_hiera_tiny.pt"  # what the SAM 2.1 release files hold
    torch.save({"model": src.state_dict()}, published)
    assert load_sam2_checkpoint(build_sam2_tiny(src.image_size), published) == {}


def test_checkpoint_errors(tmp_path: Path) -> None:
    model = build_sam2_tiny(256)
    state = model.state_dict()
    with pytest.raises(FileNotFoundError):
        load_sam2_checkpoint(model, tmp_path / "missing.pt")

    missing = tmp_path / "missing_key.pt"
    torch.save({"model": {k: v for k, v in state.items() if "no_mem_embed" not in k}}, missing)
    with pytest.raises(SamCheckpointError, match=r"1 missing keys: no_mem_embed"):
        load_sam2_checkpoint(model, missing)

    extra_key = tmp_path / "unexpected.pt"
    torch.save({"model": {**state, "head.extra": torch.zeros(1)}}, extra_key)
    with pytest.raises(SamCheckpointError, match=r"1 unexpected keys: head\.extra"):
        load_sam2_checkpoint(model, extra_key)

    # weights_only: a pickle that would run code is refused, not executed
    evil = tmp_path / "evil.pt"
    with open(evil, "wb") as fh:
        pickle.dump({"model": {}, "hook": np.random.default_rng}, fh, protocol=2)
    with pytest.raises(SamCheckpointError, match="weights_only"):
        load_sam2_checkpoint(model, evil)

    # the model is untouched by a failed load
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k])


def test_wrong_model_type_is_named(tmp_path: Path, meta_device: None) -> None:
    tiny = build_sam2_tiny(256)
    sam1 = tmp_path / "sam_demo.pt"
    torch.manual_seed(0)
    torch.save(build_sam_model("demo").state_dict(), sam1)
    with pytest.raises(SamCheckpointError, match=r"looks like a SAM \(segment-anything\)"):
        load_sam2_checkpoint(tiny, sam1, "sam2.1_hiera_t")
    other_size = tmp_path / "tiny.pt"
    torch.save({"model": tiny.state_dict()}, other_size)
    with torch.device("meta"):
        hiera_t = SAM2_BUILDERS["sam2.1_hiera_t"]()
    with pytest.raises(
        SamCheckpointError, match=r"SAM 2 Hiera \(width 8, 5 blocks\); .*width 96, 12 blocks"
    ):
        load_sam2_checkpoint(hiera_t, other_size, "sam2.1_hiera_t")


def test_build_sam2_loads_the_configured_checkpoint(tmp_path: Path, tiny_hiera_t: None) -> None:
    src = make_test_sam2(3)
    path = tmp_path / "tiny.pt"
    torch.save({"model": src.state_dict()}, path)
    model = build_sam2(SamConfig(model_type="sam2.1_hiera_t", checkpoint=str(path), device="cpu"))
    assert torch.equal(model.no_mem_embed, src.no_mem_embed) and not model.training
