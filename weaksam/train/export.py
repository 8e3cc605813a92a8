"""Inference checkpoints: the subset of a training state that serving and batch inference need.

A training state (``model``, optimiser, ``history``...) is exported as a ``torch.save`` dict of
fixed keys; reading one back checks the keys (``weights_only=True``), so a file of another
kind fails with a clear message instead of a ``KeyError`` deep inside a builder.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from weaksam.train.checkpoint import atomic_torch_save, torch_load


def export_checkpoint(state: Mapping[str, Any], path: str, keys: Sequence[str]) -> str:
    """Write ``{k: state[k] for k in keys}`` to the location ``path`` (local, ``file://`` or
    ``s3://``) atomically (local parent folders created); return it."""
    return atomic_torch_save({k: state[k] for k in keys}, path)


def read_checkpoint(path: str, keys: Sequence[str], kind: str) -> dict[str, Any]:
    """The dict saved by :func:`export_checkpoint` (on CPU) at the location ``path``. Raises
    ``ValueError`` naming the ``kind`` ("a WSOD checkpoint") when one of ``keys`` is missing."""
    ckpt = torch_load(path)
    missing = [k for k in keys if not isinstance(ckpt, dict) or k not in ckpt]
    if missing:
        raise ValueError(f"{path} is not {kind} (missing {missing})")
    out: dict[str, Any] = ckpt
    return out
