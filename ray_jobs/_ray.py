"""Ray start-up and Ray Train wiring shared by the entry points (never imported by weaksam/)."""

from __future__ import annotations

import logging
import os

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
        ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=True)
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


__all__ = ["gpus_available", "init_ray", "run_torch_trainer"]
