"""Training states on disk and back: an atomic ``torch.save`` (to any location of
:mod:`weaksam.storage`: a local path, ``file://`` or ``s3://``), its ``torch.load``, and a loop's
resume from a state.

A training state is the dict a loop reports (``model``, ``optimizer``, its counter ``step`` or
``epoch``, ``history``, plus the configs it was built from).
"""

from __future__ import annotations

import os
import uuid
from typing import Any

import torch

from weaksam import storage
from weaksam.train.distributed import unwrap


def atomic_torch_save(obj: Any, path: str | os.PathLike[str]) -> str:
    """``torch.save(obj)`` to the location ``path`` so that a reader (or a rerun after a crash)
    sees the old file or the new one, never half of one. Returns ``path`` as a string.

    A local path (or ``file://``): parent folders created, a temporary file in the same folder
    and ``os.replace``. An object store (``s3://``): the bytes are serialised in memory and
    uploaded whole (the object appears when the upload completes; nothing is written when
    ``torch.save`` raises).
    """
    loc = os.fspath(path)
    if storage.is_remote(loc):
        with storage.open_output(loc) as fh:
            torch.save(obj, fh)
        return loc
    path = storage.resolve(loc)[1] if storage.is_uri(loc) else loc
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
    return loc


def torch_load(loc: str, *, weights_only: bool = True) -> Any:
    """``torch.load(map_location="cpu")`` of the file at the location ``loc`` (a local path,
    ``file://`` or ``s3://``; a remote file is read whole into memory)."""
    with storage.open_input(loc) as fh:
        return torch.load(fh, map_location="cpu", weights_only=weights_only)


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
