"""The project's one Ray Train wiring: ``TorchTrainer`` with DDP (gloo on CPU, nccl on GPU)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

from weaksam import storage
from weaksam.train.placement import GPUDecision, decide_gpu


def gpus_available() -> int:
    """GPUs in the connected Ray cluster (Ray must be initialised)."""
    import ray

    return int(ray.cluster_resources().get("GPU", 0))


def input_fingerprint(locs: Sequence[str]) -> list[Any]:
    """``(name, bytes, whole seconds of mtime)`` of each input file, and of each entry of an
    input folder (a table of Parquet parts), in order; empty locations are skipped.

    A part of a Ray Train run's name, so that a changed input starts a new run and an
    unchanged one resumes. Locations are local paths, ``file://`` or ``s3://`` (an object's
    last-modified time); a missing input raises ``FileNotFoundError``.
    """
    out: list[Any] = []
    for loc in locs:
        if not loc:
            continue
        if not storage.is_remote(loc):
            p = storage.resolve(loc)[1] if storage.is_uri(loc) else loc
            files = sorted(os.path.join(p, f) for f in os.listdir(p)) if os.path.isdir(p) else [p]
            out += [
                (os.path.basename(f), os.path.getsize(f), int(os.path.getmtime(f))) for f in files
            ]
            continue
        import pyarrow.fs as pafs

        fs, p = storage.resolve(loc)
        info = fs.get_file_info(p)
        if info.type == pafs.FileType.NotFound:
            raise FileNotFoundError(f"no input at {loc}")
        infos = [info]
        if info.type == pafs.FileType.Directory:
            infos = [
                i for i in fs.get_file_info(pafs.FileSelector(p)) if i.type == pafs.FileType.File
            ]
        for i in sorted(infos, key=lambda i: i.path):
            mtime = int(i.mtime.timestamp()) if i.mtime is not None else 0
            out.append((i.base_name, int(i.size or 0), mtime))
    return out


def run_torch_trainer(
    loop: Callable[[dict[str, Any]], None],
    loop_config: dict[str, Any],
    *,
    name: str,
    storage_path: str,
    num_workers: int = 1,
    use_gpu: bool | str | None = None,
    cpus_per_worker: float = 1.0,
    num_to_keep: int | None = 2,
    max_failures: int = 0,
) -> Any:
    """Run ``loop`` under ``TorchTrainer`` (DDP: gloo on CPU, nccl on GPU).

    ``use_gpu``: a decided ``bool``, or a policy (``auto``/``true``/``false``, None = auto)
    decided here by :func:`weaksam.train.placement.decide_gpu` for ``num_workers`` GPUs; the
    collective backend follows the device used. ``max_failures``: Ray Train restarts the
    worker group this many times after a worker or node failure, from the latest checkpoint.
    A rerun with the same ``name`` and ``storage_path`` resumes from the latest checkpoint
    (Ray Train V2 restores its checkpoint manager from storage). ``storage_path`` is a
    location of :mod:`weaksam.storage` (a local folder, ``file://`` or ``s3://``); a URI is
    handed to Ray Train as the path inside the filesystem of :func:`weaksam.storage.resolve`
    (``storage_filesystem``), so the object-store settings (``AWS_ENDPOINT_URL``...) apply to
    its checkpoints too. ``num_to_keep``: the latest checkpoints kept (None: all). Returns the
    ``Result``.
    """
    import ray.train
    from ray.train.torch import TorchTrainer

    if not isinstance(use_gpu, bool):
        use_gpu = decide_gpu(use_gpu, num_workers, what=f"{name}: {num_workers} workers").use_gpu
    fs, path = storage.resolve(storage_path)
    # a local path as Ray Train has always had it; a URI through our own (configured) filesystem
    filesystem = fs if storage.is_remote(storage_path) else None
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
            storage_path=path,
            storage_filesystem=filesystem,
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=num_to_keep),
            failure_config=ray.train.FailureConfig(max_failures=max_failures),
        ),
    )
    return trainer.fit()


__all__ = [
    "GPUDecision",
    "decide_gpu",
    "gpus_available",
    "input_fingerprint",
    "run_torch_trainer",
]
