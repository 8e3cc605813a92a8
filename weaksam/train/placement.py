"""Where work runs: the GPU policy shared by every actor pool and trainer.

A pool or trainer is given ``use_gpu``: ``auto``, ``true`` or ``false``.

* ``false``: CPU, whatever the cluster has.
* ``true``: GPUs, or a one-line :class:`GPUPolicyError` naming the cluster's resources when it
  advertises fewer GPUs than needed or a task placed on one of them sees no CUDA device. A
  ViT-H job or a 30k-step VGG16 run must not quietly fall back to CPU.
* ``auto``: GPUs when the cluster advertises enough of them *and* CUDA works there, else CPU.
  The decision and its reason are logged at WARNING level and recorded in the stage's
  metrics, so a CPU fallback is never silent.

A cluster that advertises GPUs whose nodes have no CUDA (a simulated cluster, a wrong driver)
therefore trains on CPU with gloo under ``auto`` instead of crashing in NCCL's set-up. Nothing
here starts Ray; the probe needs a connected cluster.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ray.data import ActorPoolStrategy

log = logging.getLogger(__name__)

GPU_POLICIES: tuple[str, ...] = ("auto", "true", "false")
PROBE_TIMEOUT_S = 120.0


class GPUPolicyError(RuntimeError):
    """``use_gpu: true`` cannot be honoured; the message is one line."""


@dataclass(frozen=True)
class GPUDecision:
    """The outcome of :func:`decide_gpu`.

    Attributes:
        use_gpu: place the work on GPUs.
        reason: one line saying why (for logs and the stage's metrics).
    """

    use_gpu: bool
    reason: str

    @property
    def device(self) -> str:
        return "cuda" if self.use_gpu else "cpu"


def parse_policy(value: str | bool | None) -> str:
    """``auto``/``true``/``false`` from a config value (YAML booleans and None = auto
    accepted); ``ValueError`` otherwise."""
    if value is None:
        return "auto"
    text = str(value).strip().lower()
    if text not in GPU_POLICIES:
        raise ValueError(f"use_gpu must be one of {list(GPU_POLICIES)}, got {value!r}")
    return text


def _resources_line(resources: Mapping[str, float]) -> str:
    keys = ("CPU", "GPU", "memory")
    shown = {k: resources[k] for k in keys if k in resources}
    return ", ".join(f"{k}={v:g}" for k, v in shown.items()) or "none"


def decide_gpu(
    policy: str | bool | None,
    needed: float,
    *,
    what: str,
    resources: Mapping[str, float] | None = None,
    probe: Callable[[], bool] | None = None,
    place_without_cuda: bool = False,
) -> GPUDecision:
    """Decide whether ``what`` (e.g. ``"proposals: 2 SAM actors"``) runs on GPUs.

    Args:
        policy: ``auto``, ``true`` or ``false`` (see the module doc).
        needed: GPUs the work asks for at once (actors x GPUs per actor, or workers).
        resources: the cluster's total resources (default: ``ray.cluster_resources()``).
        probe: returns whether a task placed on a GPU sees CUDA (default: :func:`cuda_probe`);
            only called when the cluster advertises enough GPUs.
        place_without_cuda: under ``auto``, still place the work on the advertised GPUs when
            the probe finds no CUDA (actors, which pick their device themselves; see
            :func:`decide_actor_gpus`); the reason says they compute on CPU.
    """
    mode = parse_policy(policy)
    if mode == "false":
        return GPUDecision(False, f"{what}: CPU (use_gpu: false)")
    if resources is None:
        import ray

        resources = ray.cluster_resources()
    have = float(resources.get("GPU", 0.0))
    if have < needed:
        why = f"the cluster has {have:g} GPUs for {needed:g} needed ({_resources_line(resources)})"
        return _without_gpus(mode, what, why)
    if not (probe or cuda_probe)():
        if not (place_without_cuda and mode == "auto"):
            why = (
                f"the cluster advertises {have:g} GPUs but a task placed on one sees no CUDA device"
            )
            return _without_gpus(mode, what, why)
        decision = GPUDecision(
            True,
            f"{what}: placed one per GPU slot (use_gpu: auto; {have:g} GPUs advertised) but a "
            "task placed on one sees no CUDA device: the actors compute on CPU",
        )
        log.warning("%s", decision.reason)
        return decision
    decision = GPUDecision(True, f"{what}: GPU (use_gpu: {mode}; {have:g} GPUs in the cluster)")
    log.warning("%s", decision.reason)
    return decision


def _without_gpus(mode: str, what: str, why: str) -> GPUDecision:
    """``true``: raise; ``auto``: CPU, logged loudly."""
    if mode == "true":
        raise GPUPolicyError(f"{what}: use_gpu: true, but {why}")
    decision = GPUDecision(False, f"{what}: CPU (use_gpu: auto; {why})")
    log.warning("%s", decision.reason)
    return decision


def cuda_probe(timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Whether a Ray task given one GPU sees a CUDA device (False on timeout: no GPU free)."""
    import ray

    @ray.remote(num_gpus=1, num_cpus=0)
    def _probe() -> bool:
        import torch

        return bool(torch.cuda.is_available())

    ref = _probe.remote()
    try:
        return bool(ray.get(ref, timeout=timeout))
    except ray.exceptions.GetTimeoutError:
        ray.cancel(ref, force=True)
        return False


# --- Actor pools ------------------------------------------------------------------------------


def pool_sizes(min_actors: int, max_actors: int, on_gpu: bool) -> tuple[int, int | None]:
    """``(min_size, max_size)`` of an actor pool (``None``: no upper bound).

    ``max_actors > 0`` is an explicit bound (at least ``min_actors``). ``0`` (the default)
    means: on GPUs, grow with the cluster (every actor holds its GPUs, so the pool becomes one
    actor per GPU, and more as GPU nodes join); on CPU, a fixed pool of ``min_actors`` (CPU
    actors would otherwise take every core from the decode tasks).
    """
    if min_actors < 1 or max_actors < 0:
        raise ValueError(f"actor pool: min {min_actors} must be >= 1 and max {max_actors} >= 0")
    if max_actors > 0:
        return min_actors, max(min_actors, max_actors)
    return (min_actors, None) if on_gpu else (min_actors, min_actors)


def actor_pool(min_actors: int, max_actors: int, on_gpu: bool) -> ActorPoolStrategy:
    """A ``ray.data.ActorPoolStrategy`` with :func:`pool_sizes`. Ray Data restarts a lost
    actor and retries its batches (``max_restarts=-1``, ``max_task_retries=-1`` are its
    defaults for actor pools), so a lost node costs time, not rows."""
    import ray

    lo, hi = pool_sizes(min_actors, max_actors, on_gpu)
    return ray.data.ActorPoolStrategy(min_size=lo, max_size=hi)


def pool_cpus(
    per_actor: float,
    num_actors: int,
    on_gpu: bool,
    cluster_cpus: float | None = None,
    reserve: float = 1.0,
) -> float:
    """The CPUs each actor of a pool reserves: ``per_actor`` on GPUs; on CPUs capped so that
    ``num_actors`` of them leave ``reserve`` CPUs of the cluster's ``cluster_cpus`` (default:
    ``ray.cluster_resources()``) to the dataset's read and repartition tasks (a pool holding
    every CPU starves them and the job hangs). Only the reservation shrinks, not the actors'
    threads."""
    if on_gpu:
        return per_actor
    if cluster_cpus is None:
        import ray

        cluster_cpus = float(ray.cluster_resources().get("CPU", 1.0))
    free = cluster_cpus - reserve if cluster_cpus > reserve else cluster_cpus
    return max(0.01, min(per_actor, free / max(1, num_actors)))


def decide_actor_gpus(
    policy: str | bool | None,
    needed: float,
    *,
    what: str,
    resources: Mapping[str, float] | None = None,
    probe: Callable[[], bool] | None = None,
) -> GPUDecision:
    """Whether the actors of a pool (SAM, inference) *ask for* GPUs.

    Unlike a trainer, whose collective backend must match the device, an actor picks its own
    device when it starts (``cuda`` when it sees one, else ``cpu``). So under ``auto`` an
    actor pool is placed on GPUs whenever the cluster advertises ``needed`` of them (one actor
    per GPU); when a probe task finds no CUDA there, the pool still holds the GPU slots but the
    reason says loudly that the actors will compute on CPU. ``true`` still fails fast when
    GPUs are missing or have no CUDA; ``false`` never asks for GPUs.
    """
    return decide_gpu(
        policy, needed, what=what, resources=resources, probe=probe, place_without_cuda=True
    )
