"""Ray Train checkpoints from inside a worker: reporting one (throttled), reading the latest back.

Nothing here starts a cluster. Each checkpoint is a folder with ``state.pt`` (model, optimizer,
step, config) saved by rank 0 only; ``ray.train.report`` is called by every rank (it is a
barrier) but only at checkpoint time, since each call costs ~1.5 s on CPU (Ray 2.60, measured).
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

import torch

from weaksam.train.distributed import in_ray_train, world_rank

STATE_FILE = "state.pt"


def load_resume_state() -> dict[str, Any] | None:
    """The state saved in the latest reported checkpoint of this run, if any."""
    if not in_ray_train():
        return None
    import ray.train

    ckpt = ray.train.get_checkpoint()
    if ckpt is None:
        return None
    with ckpt.as_directory() as d:
        state: dict[str, Any] = torch.load(
            os.path.join(d, STATE_FILE), map_location="cpu", weights_only=True
        )
    return state


def report(metrics: dict[str, Any], state: dict[str, Any] | None = None) -> None:
    """Report ``metrics`` (and a checkpoint of ``state`` from rank 0) to Ray Train.

    Outside Ray Train this does nothing, so loops can run in plain Python (tests, notebooks).
    """
    if not in_ray_train():
        return
    import ray.train

    if state is None or world_rank() != 0:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory() as tmp:
        torch.save(state, os.path.join(tmp, STATE_FILE))
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))
