"""Shared fixtures. Tests run on CPU with few threads; Ray is started at most once per session."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
# Bind every listener of the test cluster to loopback (read when Ray is first imported).
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")


@pytest.fixture(autouse=True)
def _torch_threads() -> None:
    try:
        import torch
    except ImportError:  # pragma: no cover
        return
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def ray_local() -> Iterator[None]:
    """One private local Ray instance (2 CPUs, loopback only) shared by the whole session.

    Tests that need Ray take this fixture and are marked ``ray``; it is shut down at the end.
    """
    import ray

    if ray.is_initialized():
        yield
        return
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        object_store_memory=512 * 2**20,
    )
    try:
        yield
    finally:
        ray.shutdown()
