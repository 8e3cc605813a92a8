"""The project's one Ray Train wiring: ``TorchTrainer`` with DDP (gloo on CPU, nccl on GPU)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from weaksam.train.placement import GPUDecision, decide_gpu


def gpus_available() -> int:
    """GPUs in the connected Ray cluster (Ray must be initialised)."""
    import ray

    return int(ray.cluster_resources().get("GPU", 0))


def run_torch_trainer(
    loop: Callable[[dict[str, Any]], None],
    loop_config: dict[str, Any],
    *,
    name: str,
    storage_path: str,
    num_workers: int = 1,
    use_gpu: bool | str | None = None,
    cpus_per_worker: float = 1.0,
    num_to_keep: int = 2,
    max_failures: int = 0,
) -> Any:
    """Run ``loop`` under ``TorchTrainer`` (DDP: gloo on CPU, nccl on GPU).

    ``use_gpu``: a decided ``bool``, or a policy (``auto``/``true``/``false``, None = auto)
    decided here by :func:`weaksam.train.placement.decide_gpu` for ``num_workers`` GPUs; the
    collective backend follows the device used. ``max_failures``: Ray Train restarts the
    worker group this many times after a worker or node failure, from the latest checkpoint.
    A rerun with the same ``name`` and ``storage_path`` resumes from the latest checkpoint
    (Ray Train V2 restores its checkpoint manager from storage). ``storage_path`` may be a
    local folder or a pyarrow filesystem URI (``s3://``, ``gs://``, ...). Returns the
    ``Result``.
    """
    import ray.train
    from ray.train.torch import TorchTrainer

    if not isinstance(use_gpu, bool):
        use_gpu = decide_gpu(use_gpu, num_workers, what=f"{name}: {num_workers} workers").use_gpu
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
            failure_config=ray.train.FailureConfig(max_failures=max_failures),
        ),
    )
    return trainer.fit()


__all__ = ["GPUDecision", "decide_gpu", "gpus_available", "run_torch_trainer"]
