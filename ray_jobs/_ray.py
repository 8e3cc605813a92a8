"""Ray start-up and Ray Train wiring shared by the entry points (never imported by weaksam/)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

if "RAY_ADDRESS" not in os.environ:
    # A private local instance: make every Ray listener bind the loopback address (Ray reads
    # this when it is first imported). Under `ray job submit` RAY_ADDRESS is set and the
    # cluster's own addresses are used.
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


def init_ray(num_cpus: int | None = None) -> None:
    """Connect to a running cluster (``ray job submit``, ``RAY_ADDRESS``, or a local
    ``ray start``), else start a private local one bound to 127.0.0.1."""
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    try:
        ray.init(address="auto", log_to_driver=True)
        log.info("connected to Ray cluster: %s", ray.cluster_resources())
        return
    except (ConnectionError, RuntimeError, ValueError):
        pass
    ray.init(
        num_cpus=num_cpus,
        include_dashboard=True,
        dashboard_host="127.0.0.1",
        log_to_driver=True,
    )
    log.info("started a local Ray instance: %s", ray.cluster_resources())


def gpus_available() -> int:
    import ray

    return int(ray.cluster_resources().get("GPU", 0))


def run_torch_trainer(
    loop: Callable[[dict[str, Any]], None],
    loop_config: dict[str, Any],
    *,
    name: str,
    storage_path: str,
    num_workers: int = 1,
    use_gpu: bool | None = None,
    cpus_per_worker: float = 1.0,
    num_to_keep: int = 2,
) -> Any:
    """Run ``loop`` under ``TorchTrainer`` (DDP: gloo on CPU, nccl on GPU).

    A rerun with the same ``name`` and ``storage_path`` resumes from the latest checkpoint
    (Ray Train V2 restores its checkpoint manager from storage). Returns the ``Result``.
    """
    import ray.train
    from ray.train.torch import TorchTrainer

    if use_gpu is None:
        use_gpu = gpus_available() >= num_workers
    storage = storage_path if "://" in storage_path else os.path.abspath(storage_path)
    trainer = TorchTrainer(
        loop,
        train_loop_config=loop_config,
        scaling_config=ray.train.ScalingConfig(
            num_workers=num_workers,
            use_gpu=use_gpu,
            resources_per_worker=None if use_gpu else {"CPU": cpus_per_worker},
        ),
        run_config=ray.train.RunConfig(
            name=name,
            storage_path=storage,
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=num_to_keep),
        ),
    )
    return trainer.fit()
