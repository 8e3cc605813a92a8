"""SAM builders and checkpoints: registry structure (on the meta device), strict loading."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from segment_anything.build_sam import _build_sam
from segment_anything.modeling import Sam

from weaksam.sam.build import (
    SAM_BUILDERS,
    SamCheckpointError,
    SamConfig,
    build_sam,
    build_sam_model,
    count_parameters,
    load_sam_checkpoint,
    resolve_device,
    save_sam_checkpoint,
)

# Published parameter counts of SAM ViT-H / L / B; ``demo`` is ours.
EXPECTED_PARAMS = {
    "vit_h": 641_090_608,
    "vit_l": 312_342_832,
    "vit_b": 93_735_472,
    "demo": 1_567_048,
}
UPSTREAM = {
    "vit_h": (1280, 32, 16, [7, 15, 23, 31]),
    "vit_l": (1024, 24, 16, [5, 11, 17, 23]),
    "vit_b": (768, 12, 12, [2, 5, 8, 11]),
}


@pytest.mark.parametrize("model_type", sorted(SAM_BUILDERS))
def test_registry_parameter_counts_on_meta(model_type: str) -> None:
    with torch.device("meta"):
        model = SAM_BUILDERS[model_type]()
    assert count_parameters(model) == EXPECTED_PARAMS[model_type]
    enc = model.image_encoder
    emb = model.prompt_encoder.image_embedding_size
    assert emb == (enc.img_size // 16, enc.img_size // 16)
    # the neck's width is the prompt/decoder width
    assert enc.neck[0].out_channels == model.mask_decoder.transformer_dim
    assert model.prompt_encoder.embed_dim == model.mask_decoder.transformer_dim


@pytest.mark.parametrize("model_type", ["vit_h", "vit_l", "vit_b"])
def test_real_builders_match_upstream_state_dict(model_type: str) -> None:
    with torch.device("meta"):
        ours = SAM_BUILDERS[model_type]().state_dict()
        theirs = _build_sam(*UPSTREAM[model_type]).state_dict()
    assert list(ours) == list(theirs)
    assert all(ours[k].shape == theirs[k].shape for k in ours)


def test_unknown_model_type_lists_known() -> None:
    with pytest.raises(ValueError, match=r"vit_h.*|demo"):
        build_sam_model("vit_x")
    with pytest.raises(ValueError, match="known"):
        SamConfig(model_type="vit_x")
    with pytest.raises(ValueError):
        SamConfig(device="tpu")
    with pytest.raises(ValueError):
        SamConfig(autocast_dtype="fp8")


def test_demo_model_forward_shapes() -> None:
    torch.manual_seed(0)
    model = build_sam(SamConfig(model_type="demo", device="cpu"))
    assert not model.training
    with torch.inference_mode():
        emb = model.image_encoder(torch.zeros(1, 3, 256, 256))
    assert emb.shape == (1, 64, 16, 16)


def test_resolve_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            resolve_device("cuda")


@pytest.fixture(scope="module")
def demo() -> Sam:
    torch.manual_seed(0)
    return build_sam_model("demo")


def test_save_load_round_trip(demo: Sam, tmp_path: Path) -> None:
    path = tmp_path / "sub" / "sam_demo.pt"
    extra_in = {"step": 7, "hist": [np.float64(1.5)]}  # numpy scalars become Python floats
    save_sam_checkpoint(demo, path, {"model_type": "demo"}, extra=extra_in)
    assert os.listdir(path.parent) == ["sam_demo.pt"]  # no temporary file left behind
    torch.manual_seed(1)
    other = build_sam_model("demo")
    extra = load_sam_checkpoint(other, path)
    assert extra == {"config": {"model_type": "demo"}, "step": 7, "hist": [1.5]}
    assert type(extra["hist"][0]) is float
    for (k, a), (_, b) in zip(demo.state_dict().items(), other.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    # build_sam loads it too
    model = build_sam(SamConfig(model_type="demo", checkpoint=str(path), device="cpu"))
    assert torch.equal(model.mask_decoder.iou_token.weight, demo.mask_decoder.iou_token.weight)


def test_load_raw_state_dict(demo: Sam, tmp_path: Path) -> None:
    path = tmp_path / "raw.pth"
    torch.save(demo.state_dict(), path)
    other = build_sam_model("demo")
    assert load_sam_checkpoint(other, path) == {}
    assert torch.equal(other.image_encoder.pos_embed, demo.image_encoder.pos_embed)


def test_wrong_keys_are_listed(demo: Sam, tmp_path: Path) -> None:
    state = dict(demo.state_dict())
    state.pop("mask_decoder.iou_token.weight")
    state["extra_head.weight"] = torch.zeros(2)
    path = tmp_path / "bad_keys.pt"
    torch.save({"model": state}, path)
    with pytest.raises(SamCheckpointError) as err:
        load_sam_checkpoint(build_sam_model("demo"), path)
    msg = str(err.value)
    assert "1 missing keys: mask_decoder.iou_token.weight" in msg
    assert "1 unexpected keys: extra_head.weight" in msg


def test_shape_mismatch_is_reported(tmp_path: Path) -> None:
    with torch.device("meta"):
        vit_b = build_sam_model("vit_b")
    path = tmp_path / "demo.pt"
    torch.manual_seed(0)
    save_sam_checkpoint(build_sam_model("demo"), path, {"model_type": "demo"})
    # a demo checkpoint into a vit_b model: fewer blocks, narrower tensors
    with pytest.raises(SamCheckpointError) as err:
        load_sam_checkpoint(vit_b, path)
    msg = str(err.value)
    assert "missing keys: image_encoder.blocks.6." in msg
    assert "image_encoder.pos_embed: checkpoint (1, 16, 16, 128) vs model (1, 64, 64, 768)" in msg


def test_corrupt_and_truncated_files(demo: Sam, tmp_path: Path) -> None:
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"this is not a checkpoint at all" * 10)
    with pytest.raises(ValueError, match="not a valid SAM checkpoint"):
        load_sam_checkpoint(build_sam_model("demo"), junk)
    good = tmp_path / "good.pt"
    save_sam_checkpoint(demo, good, {"model_type": "demo"})
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ValueError, match="not a valid SAM checkpoint"):
        load_sam_checkpoint(build_sam_model("demo"), truncated)
    with pytest.raises(FileNotFoundError):
        load_sam_checkpoint(build_sam_model("demo"), tmp_path / "missing.pt")


class _Payload:
    """A custom class: pickles fine, but weights_only loading must refuse it."""

    def __init__(self) -> None:
        self.x = 1


def test_non_weights_pickles_are_refused(tmp_path: Path) -> None:
    obj_path = tmp_path / "object.pt"
    torch.save({"model": {}, "payload": _Payload()}, obj_path)
    with pytest.raises(ValueError, match="not a valid SAM checkpoint"):
        load_sam_checkpoint(build_sam_model("demo"), obj_path)
    fn_path = tmp_path / "function.pkl"
    with open(fn_path, "wb") as f:
        pickle.dump(os.system, f, protocol=2)  # an exploit-shaped pickle; never called
    with pytest.raises(ValueError, match="not a valid SAM checkpoint"):
        load_sam_checkpoint(build_sam_model("demo"), fn_path)
    not_dict = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], not_dict)
    with pytest.raises(ValueError, match="expected a state dict"):
        load_sam_checkpoint(build_sam_model("demo"), not_dict)


def test_save_refuses_non_plain_extras(demo: Sam, tmp_path: Path) -> None:
    path = tmp_path / "x.pt"
    with pytest.raises(TypeError, match="weights-only"):
        save_sam_checkpoint(demo, path, {"model_type": "demo"}, extra={"obj": _Payload()})
    with pytest.raises(ValueError, match="reserved"):
        save_sam_checkpoint(demo, path, {"model_type": "demo"}, extra={"model": 1})
    assert not path.exists()
