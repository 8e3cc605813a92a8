"""Atomic checkpoint save, resume from a state, and the worker helpers outside Ray Train."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from torch import nn

from weaksam.train.checkpoint import atomic_torch_save, restore_training_state
from weaksam.train.distributed import in_ray_train, prepare_ddp, unwrap, world_rank, world_size


def test_atomic_save_creates_folders_and_replaces(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "state.pt"
    assert atomic_torch_save({"x": torch.ones(2)}, path) == str(path)
    atomic_torch_save({"x": torch.zeros(3)}, str(path))
    assert os.listdir(path.parent) == ["state.pt"]  # no temporary file left
    assert torch.equal(torch.load(path, weights_only=True)["x"], torch.zeros(3))


class _Unsaveable:
    def __reduce__(self) -> str:
        raise RuntimeError("cannot be saved")


def test_atomic_save_failure_keeps_old_file(tmp_path: Path) -> None:
    path = tmp_path / "state.pt"
    atomic_torch_save({"step": 1}, path)
    with pytest.raises(RuntimeError, match="cannot be saved"):
        atomic_torch_save({"bad": _Unsaveable()}, path)
    assert os.listdir(tmp_path) == ["state.pt"]
    assert torch.load(path, weights_only=True) == {"step": 1}


def test_restore_training_state_resumes_model_optimizer_and_counter() -> None:
    torch.manual_seed(0)
    src = nn.Linear(3, 2)
    opt = torch.optim.SGD(src.parameters(), lr=0.1, momentum=0.9)
    src(torch.ones(1, 3)).sum().backward()
    opt.step()
    state = {
        "model": src.state_dict(),
        "optimizer": opt.state_dict(),
        "epoch": 4,
        "history": [{"loss": 1.0}],
    }
    dst = nn.Linear(3, 2)
    dst_opt = torch.optim.SGD(dst.parameters(), lr=0.1, momentum=0.9)
    start, history = restore_training_state(state, dst, dst_opt, counter="epoch")
    assert (start, history) == (4, [{"loss": 1.0}]) and history is not state["history"]
    assert torch.equal(dst.weight, src.weight)
    assert dst_opt.state_dict()["state"][0]["momentum_buffer"] is not None
    no_history = {k: v for k, v in state.items() if k != "history"}
    assert restore_training_state({**no_history, "step": 2}, dst, dst_opt) == (2, [])


def test_outside_ray_train_one_worker_and_no_wrapping() -> None:
    model = nn.Linear(2, 2)
    assert not in_ray_train()
    assert (world_rank(), world_size()) == (0, 1)
    assert prepare_ddp(model) is model
    assert prepare_ddp(model, find_unused_parameters=True) is model
    assert unwrap(model) is model


def test_atomic_save_and_load_at_s3_and_file_uri(s3_bucket: str, tmp_path: Path) -> None:
    from weaksam import storage
    from weaksam.train.checkpoint import torch_load
    from weaksam.train.export import export_checkpoint, read_checkpoint

    loc = storage.join(s3_bucket, "run", "classify", "state.pt")
    assert atomic_torch_save({"x": torch.arange(4), "step": 1}, loc) == loc
    atomic_torch_save({"x": torch.zeros(3), "step": 2}, loc)  # replaced whole
    state = torch_load(loc)
    assert state["step"] == 2 and torch.equal(state["x"], torch.zeros(3))
    assert storage.list_files(storage.parent(loc)) == [loc]  # nothing but the object
    # a failed save leaves the old object, as locally
    with pytest.raises(RuntimeError, match="cannot be saved"):
        atomic_torch_save({"bad": _Unsaveable()}, loc)
    assert torch_load(loc)["step"] == 2
    # file:// is the local file system (the temporary-file path)
    uri = f"file://{tmp_path}/sub/state.pt"
    assert atomic_torch_save({"step": 3}, uri) == uri
    assert os.listdir(tmp_path / "sub") == ["state.pt"]
    assert torch_load(uri) == {"step": 3}
    # inference exports at URIs
    model = storage.join(s3_bucket, "run", "wsod", "model.pt")
    export_checkpoint(
        {"model": {"w": torch.ones(2)}, "step": 4, "optimizer": {}}, model, ["model", "step"]
    )
    assert read_checkpoint(model, ["model", "step"], "a test checkpoint")["step"] == 4
    with pytest.raises(ValueError, match="is not a test checkpoint"):
        read_checkpoint(model, ["model", "history"], "a test checkpoint")
