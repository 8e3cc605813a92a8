"""Ray start-up and Ray Train wiring shared by the entry points (never imported by weaksam/)."""

from __future__ import annotations

import logging
import os
import uuid
from typing import Any

from weaksam import storage
from weaksam.machine import KERNEL_PINS
from weaksam.train.trainer import gpus_available, run_torch_trainer  # imports Ray lazily

log = logging.getLogger(__name__)

if "RAY_ADDRESS" not in os.environ:
    # A private local instance: with this set (read when Ray is first imported) and the node
    # address 127.0.0.1 below, Ray's listeners bind the loopback address (measured on Ray 2.60).
    # Under `ray job submit` RAY_ADDRESS is set and the cluster's own addresses are used.
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


def init_ray(num_cpus: int | None = None) -> None:
    """Connect to the cluster named by ``RAY_ADDRESS`` (set by ``ray job submit``, or by the
    user for a ``ray start`` cluster), else start a private local instance bound to 127.0.0.1.

    A local cluster that happens to run on the same machine is never joined silently (its
    resources may be busy with someone else's job): set ``RAY_ADDRESS=auto`` to join it.
    """
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    if os.environ.get("RAY_ADDRESS"):
        ray.init(
            address=os.environ["RAY_ADDRESS"],
            log_to_driver=True,
            runtime_env={"env_vars": forwarded_env()} if forwarded_env() else None,
        )
        log.info("connected to Ray cluster: %s", ray.cluster_resources())
        return
    ray.init(
        address="local",  # never join a `ray start` cluster of this machine by accident
        num_cpus=num_cpus,
        _node_ip_address="127.0.0.1",
        include_dashboard=True,
        dashboard_host="127.0.0.1",
        log_to_driver=True,
    )
    log.info("started a local Ray instance: %s", ray.cluster_resources())


# Where the object store is (not secrets), and the CPU kernel pins (weaksam.machine): sent to the
# cluster's workers with the job so they reach the same endpoint and run the same kernels as the
# driver. Credentials come from each node's own environment or instance role, never from the
# driver. A private local instance needs none of this: its workers inherit the driver's
# environment.
FORWARDED_ENV = (
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    *KERNEL_PINS,
)
PROBE_TIMEOUT_S = 120.0


class StorageError(RuntimeError):
    """The run folder cannot be shared by the cluster's nodes; the message is one line."""


def forwarded_env() -> dict[str, str]:
    """The variables of :data:`FORWARDED_ENV` set in this process."""
    return {k: os.environ[k] for k in FORWARDED_ENV if os.environ.get(k)}


def _sees(probe: str, token: str) -> str:
    """On one node: ``""`` when ``probe`` holds ``token``, else why not."""
    try:
        got = storage.read_text(probe)
    except Exception as exc:  # any failure means "cannot see it"
        return f"{type(exc).__name__}: {exc}".splitlines()[0]
    return "" if got == token else "it holds another run's probe"


def check_run_root(run_root: str, run_dir: str, timeout: float = PROBE_TIMEOUT_S) -> int:
    """Check that every alive node of the connected cluster sees ``run_dir``; return the
    number of nodes checked. One node (a local instance): nothing to check.

    A relative local ``run_root`` on several nodes is refused (each node would resolve it in
    its own working directory). Otherwise the driver writes a small probe file into
    ``run_dir`` and a zero-CPU task pinned to each alive node reads it back; the probe is then
    deleted. Raises :class:`StorageError` naming the nodes that cannot see it.
    """
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    if len(nodes) <= 1:
        return len(nodes)
    if storage.is_local_relative(run_root):
        raise StorageError(
            f"run_root {run_root!r} is a relative path but the cluster has {len(nodes)} nodes, "
            "which would each resolve it in their own working directory: use an absolute path "
            "on a shared mount, or s3://<bucket>/<prefix>"
        )
    token = uuid.uuid4().hex
    probe = storage.join(run_dir, f"_probe_{token}")
    storage.makedirs(run_dir)
    storage.write_text(probe, token)
    sees: Any = ray.remote(num_cpus=0, max_retries=0)(_sees)
    try:
        refs = {
            n["NodeManagerAddress"] + f" ({n['NodeID'][:8]})": sees.options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)
            ).remote(probe, token)
            for n in nodes
        }
        try:
            answers = dict(zip(refs, ray.get(list(refs.values()), timeout=timeout), strict=True))
        except ray.exceptions.GetTimeoutError:
            answers = {k: f"no answer within {timeout:g} s" for k in refs}
    finally:
        storage.remove(probe)
    blind = {k: v for k, v in answers.items() if v}
    if blind:
        first = next(iter(blind.values()))
        raise StorageError(
            f"the run folder {run_dir} is not visible from {len(blind)} of {len(nodes)} nodes "
            f"({', '.join(blind)}: {first}); put run_root on storage every node mounts at the "
            "same path, or on s3:// (AWS_ENDPOINT_URL and credentials on every node)"
        )
    log.info("run folder %s visible from all %d nodes", run_dir, len(nodes))
    return len(nodes)


__all__ = [
    "StorageError",
    "check_run_root",
    "forwarded_env",
    "gpus_available",
    "init_ray",
    "run_torch_trainer",
]
