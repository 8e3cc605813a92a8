"""Ray Train: two CPU workers (DDP over gloo), a crash after a checkpoint, and the resume; MIST
with its Concrete DropBlock, whose adversarial pass averages the CDB's gradients alone."""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any

import pytest
import torch

from weaksam.configlib import to_dict
from weaksam.runs import manifest_path
from weaksam.train.reporting import STATE_FILE, report
from weaksam.wsod.config import WSODConfig
from weaksam.wsod.stage import proposals_path


def crashing_loop(config: dict[str, Any]) -> None:
    """The real worker loop, made to crash right after the checkpoint of ``crash_at``."""
    from weaksam.wsod.training import run_worker

    def reporter(metrics: dict[str, Any], state: dict[str, Any] | None) -> None:
        report(metrics, state)
        if metrics["step"] == config.get("crash_at"):
            raise RuntimeError("simulated worker crash")

    run_worker(config, reporter)


def _state(result: Any) -> dict[str, Any]:
    with result.checkpoint.as_directory() as d:
        state: dict[str, Any] = torch.load(os.path.join(d, STATE_FILE), weights_only=True)
    return state


@pytest.mark.ray
def test_two_workers_crash_and_resume(
    ray_local: None, wsod_run: str, tiny_cfg: WSODConfig, tmp_path
) -> None:
    import sys

    from ray import cloudpickle

    from ray_jobs._ray import run_torch_trainer

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import tests
    tiny_cfg = replace(tiny_cfg, model=replace(tiny_cfg.model, cdb=True))

    job = {
        "method": "mist",
        "num_classes": 6,
        "class_names": list("abcdef"),
        "manifest": manifest_path(wsod_run),
        "proposals": proposals_path(wsod_run, tiny_cfg),
        "split": "train",
    }
    config: dict[str, Any] = {"wsod": to_dict(tiny_cfg), "job": job, "crash_at": 2}
    kwargs: dict[str, Any] = {
        "name": "mist-test", "storage_path": str(tmp_path), "num_workers": 2, "use_gpu": False
    }  # fmt: skip
    with pytest.raises(Exception, match="simulated worker crash"):
        run_torch_trainer(crashing_loop, config, **kwargs)
    # the same run again: restored from the step-2 checkpoint, it trains steps 3 and 4 only
    config["crash_at"] = None
    result = run_torch_trainer(crashing_loop, config, **kwargs)
    state = _state(result)
    assert state["step"] == 4
    assert [h["step"] for h in state["history"]] == [1, 2, 3, 4]
    assert state["method"] == "mist" and set(state["model"]) == set(_fresh_keys(tiny_cfg))
    assert any(k.startswith("cdb.") for k in state["model"]) and "cdb_optimizer" in state
    assert all("cdb_loss" in h for h in state["history"])


def _fresh_keys(cfg: WSODConfig) -> list[str]:
    from weaksam.wsod.model import build_wsod_model

    return list(build_wsod_model(cfg.model, 6, "mist").state_dict())
