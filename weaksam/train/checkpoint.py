"""Training states on disk and back: an atomic ``torch.save``, and a loop's resume from a state.

A training state is the dict a loop reports (``model``, ``optimizer``, its counter ``step`` or
``epoch``, ``history``, plus the configs it was built from).
"""

from __future__ import annotations

import os
import uuid
from typing import Any

import torch

from weaksam.train.distributed import unwrap


def atomic_torch_save(obj: Any, path: str | os.PathLike[str]) -> str:
    """``torch.save(obj)`` to ``path`` (parent folders created) through a temporary file in
    the same folder and ``os.replace``, so a reader (or a rerun after a crash) sees the old
    file or the new one, never half of one. Returns ``path`` as a string.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    # a unique name: two writers of one path must not share a temporary file
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{uuid.uuid4().hex}.tmp")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def restore_training_state(
    state: dict[str, Any],
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    counter: str = "step",
) -> tuple[int, list[dict[str, Any]]]:
    """Load ``state``'s ``model`` and ``optimizer`` into ``model`` (maybe DDP-wrapped) and
    ``optimizer``; return ``(state[counter], history)``: where the loop resumes and the
    history it appends to (a copy; ``[]`` when the state has none)."""
    unwrap(model).load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    return int(state[counter]), list(state.get("history", []))
