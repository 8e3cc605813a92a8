"""Ray Train runs whose storage is an object store (moto S3): checkpoints land in the bucket
through weaksam.storage's filesystem, and a second call with the same name resumes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from weaksam import storage


def counting_loop(config: dict[str, Any]) -> None:
    """Resume from the latest checkpoint's ``step``; report a checkpoint at each step up to
    ``config["steps"]``."""
    from weaksam.train.reporting import load_resume_state, report

    state = load_resume_state()
    start = int(state["step"]) if state else 0
    seen = list(state["seen"]) if state else []
    for step in range(start + 1, int(config["steps"]) + 1):
        seen.append(step)
        report({"step": step}, {"step": step, "seen": seen, "resumed_from": start})


def _state(result: Any) -> dict[str, Any]:
    import os

    import torch

    from weaksam.train.reporting import STATE_FILE

    assert result.checkpoint is not None, result.error
    with result.checkpoint.as_directory() as d:
        state: dict[str, Any] = torch.load(os.path.join(d, STATE_FILE), weights_only=True)
    return state


def test_input_fingerprint_local_and_s3(s3_bucket: str, tmp_path: Path) -> None:
    from weaksam.train.trainer import input_fingerprint

    (tmp_path / "t.parquet").mkdir()
    (tmp_path / "t.parquet" / "b.parquet").write_bytes(b"12")
    (tmp_path / "t.parquet" / "a.parquet").write_bytes(b"1")
    (tmp_path / "m.parquet").write_bytes(b"123")
    local = input_fingerprint([str(tmp_path / "m.parquet"), "", str(tmp_path / "t.parquet")])
    assert [(n, s) for n, s, _ in local] == [("m.parquet", 3), ("a.parquet", 1), ("b.parquet", 2)]
    assert input_fingerprint([f"file://{tmp_path}/m.parquet"]) == local[:1]
    for name, data in (("t.parquet/b.parquet", b"12"), ("t.parquet/a.parquet", b"1")):
        storage.write_bytes(storage.join(s3_bucket, name), data)
    remote = input_fingerprint([storage.join(s3_bucket, "t.parquet")])
    assert [(n, s) for n, s, _ in remote] == [("a.parquet", 1), ("b.parquet", 2)]
    assert all(isinstance(t, int) and t > 0 for _, _, t in remote)
    with pytest.raises(FileNotFoundError):
        input_fingerprint([storage.join(s3_bucket, "missing.parquet")])


@pytest.mark.ray
def test_run_torch_trainer_checkpoints_to_s3_and_resumes(ray_local: None, s3_bucket: str) -> None:
    import sys

    from ray import cloudpickle

    from weaksam.train.trainer import run_torch_trainer

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import tests
    root = storage.join(s3_bucket, "runs", "demo", "classify", "ray_train")
    kwargs: dict[str, Any] = {"name": "count", "storage_path": root, "use_gpu": False}
    first = run_torch_trainer(counting_loop, {"steps": 2}, **kwargs)
    state = _state(first)
    assert (state["step"], state["seen"], state["resumed_from"]) == (2, [1, 2], 0)
    assert first.checkpoint.path.startswith(storage.resolve(root)[1] + "/count/")
    saved = storage.list_files(storage.join(root, "count"), "state.pt", recursive=True)
    assert saved, "no checkpoint in the bucket"
    # the same name again: restored from the step-2 checkpoint in the bucket
    second = run_torch_trainer(counting_loop, {"steps": 3}, **kwargs)
    state = _state(second)
    assert (state["step"], state["seen"], state["resumed_from"]) == (3, [1, 2, 3], 2)
