"""Peak resident memory while a stage runs: the driver, and every Ray worker process by kind.

A Ray worker process is titled ``ray::<what it runs>`` (``ray::RayTrainWorker.run_train_fn``,
``ray::MapWorker(MapBatches(ProposalGenerator)).submit``, ``ray::IDLE``); its *kind* is that
title without the method (:func:`worker_kind`). The memory that must stay bounded by
configuration, not by the dataset, is each worker's: so a stage records, per kind, the largest
peak of any one process of that kind (:class:`WorkerPeaks`). Processes that already existed
when the stage started and still run what they ran then (an earlier stage's actor that lingers,
Ray's own agents) are not the stage's and are left out; a pool worker that picks up the
stage's work changes title and counts.

Where the workers are sampled:

* on a Ray instance this driver started (no ``RAY_ADDRESS``), they are the driver's descendants
  and the driver's sampling thread sees them;
* connected to a cluster, a zero-CPU sampling actor pinned to each alive node samples the
  ``ray::`` processes of its node (:class:`NodeSampler`) and hands its peaks over when the
  stage ends. Nodes that join during the stage are not sampled (their workers are missed).

Sampling is every ``interval`` seconds, so a spike shorter than that can be missed.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

IDLE = "IDLE"
SAMPLER_KIND = "NodeSampler"


def worker_kind(title: str) -> str | None:
    """The kind of a Ray worker process from its title (its command line), or None for a
    process that is not a Ray worker.

    >>> worker_kind("ray::RayTrainWorker.run_train_fn")
    'RayTrainWorker'
    >>> worker_kind("ray::MapWorker(MapBatches(ProposalGenerator)).submit")
    'MapWorker(MapBatches(ProposalGenerator))'
    >>> worker_kind("/usr/bin/python -m ray_jobs.pipeline") is None
    True
    """
    if not title.startswith("ray::"):
        return None
    name = title[len("ray::") :].split(" ", 1)[0]
    depth = 0
    for i, ch in enumerate(name):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "." and depth == 0:
            return name[:i] or None
    return name or None


@dataclass
class WorkerPeaks:
    """Peak RSS per worker process, keyed by ``(node, pid)``; the kind of a process is the
    last one seen other than ``IDLE`` (a pool worker runs several things in its life)."""

    processes: dict[tuple[str, int], tuple[str, int]] = field(default_factory=dict)
    before: dict[tuple[str, int], str] = field(default_factory=dict)

    def existed(self, node: str, pid: int, kind: str) -> None:
        """Process ``pid`` on ``node`` ran ``kind`` before the stage: not counted while it
        still does."""
        self.before[(node, pid)] = kind

    def add(self, node: str, pid: int, kind: str, rss: int) -> None:
        """One sample: process ``pid`` on ``node`` had ``rss`` bytes while titled ``kind``."""
        if self.before.get((node, pid)) == kind:
            return
        old_kind, old_rss = self.processes.get((node, pid), (IDLE, 0))
        self.processes[(node, pid)] = (old_kind if kind == IDLE else kind, max(old_rss, rss))

    def merge(self, other: WorkerPeaks) -> None:
        for (node, pid), (kind, rss) in other.processes.items():
            self.add(node, pid, kind, rss)

    def by_kind(self) -> dict[str, int]:
        """``{kind: largest peak of one process of that kind}`` in bytes (``IDLE``-only
        processes and the samplers themselves left out), largest first."""
        out: dict[str, int] = {}
        for kind, rss in self.processes.values():
            if kind not in (IDLE, SAMPLER_KIND):
                out[kind] = max(out.get(kind, 0), rss)
        return dict(sorted(out.items(), key=lambda kv: -kv[1]))

    def to_json(self) -> dict[str, list[Any]]:
        return {f"{n}:{p}": [k, r] for (n, p), (k, r) in self.processes.items()}

    @classmethod
    def from_json(cls, data: Mapping[str, list[Any]]) -> WorkerPeaks:
        out = cls()
        for key, (kind, rss) in data.items():
            node, pid = key.rsplit(":", 1)
            out.add(node, int(pid), str(kind), int(rss))
        return out


def sample_workers(
    procs: Iterable[Any], node: str, peaks: WorkerPeaks, *, before: bool = False
) -> None:
    """Add one sample of every Ray worker among ``procs`` (``psutil.Process`` objects); with
    ``before``, record them as the processes that existed before the stage instead."""
    import psutil

    for proc in procs:
        try:
            kind = worker_kind(" ".join(proc.cmdline()))
            if kind is None:
                continue
            if before:
                peaks.existed(node, proc.pid, kind)
            else:
                peaks.add(node, proc.pid, kind, proc.memory_info().rss)
        except psutil.Error:
            continue


class _Sampler:
    """A thread that calls ``sample()`` every ``interval`` seconds until stopped."""

    def __init__(self, sample: Any, interval: float) -> None:
        self._sample = sample
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, args=(interval,), daemon=True)
        self._thread.start()

    def _loop(self, interval: float) -> None:
        while not self._stop.is_set():
            try:
                self._sample()
            except Exception:  # never let memory accounting fail a stage
                log.debug("memory sample failed", exc_info=True)
            self._stop.wait(interval)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


class NodeSampler:
    """Samples the ``ray::`` processes of the node it runs on (a zero-CPU Ray actor pinned to
    that node; testable as a plain object)."""

    def __init__(self, interval: float = 0.5) -> None:
        import psutil

        self.node = os.uname().nodename
        import ray  # never starts Ray: outside an actor this samples the local machine

        if ray.is_initialized():
            self.node = ray.get_runtime_context().get_node_id()
        self.peaks = WorkerPeaks()
        sample_workers(psutil.process_iter(), self.node, self.peaks, before=True)
        self._sampler = _Sampler(
            lambda: sample_workers(psutil.process_iter(), self.node, self.peaks), interval
        )

    def stop(self) -> dict[str, list[Any]]:
        """Stop sampling; the peaks (:meth:`WorkerPeaks.to_json`)."""
        self._sampler.stop()
        return self.peaks.to_json()


@dataclass
class StageMemory:
    """Results of :class:`MemoryWatch`: the driver's own peak and the workers' peaks."""

    driver_bytes: int = 0
    workers: WorkerPeaks = field(default_factory=WorkerPeaks)

    def metrics(self) -> dict[str, Any]:
        """``{"driver_peak_rss_mb": ..., "worker_peak_rss_mb": {kind: MiB}}`` for metrics."""
        return {
            "driver_peak_rss_mb": round(self.driver_bytes / 2**20, 1),
            "worker_peak_rss_mb": {
                k: round(v / 2**20, 1) for k, v in self.workers.by_kind().items()
            },
        }

    @property
    def largest_worker(self) -> tuple[str, int] | None:
        """``(kind, bytes)`` of the largest worker process, if any was seen."""
        kinds = self.workers.by_kind()
        return next(iter(kinds.items())) if kinds else None


class MemoryWatch:
    """Context manager: samples the driver and the Ray workers while a stage runs
    (see the module docstring); ``result`` is a :class:`StageMemory` after exit."""

    def __init__(self, interval: float = 0.5) -> None:
        self.interval = interval
        self.result = StageMemory()
        self._actors: list[Any] = []
        self._sampler: _Sampler | None = None

    def _sample_local(self) -> None:
        import psutil

        me = psutil.Process(os.getpid())
        self.result.driver_bytes = max(self.result.driver_bytes, me.memory_info().rss)
        sample_workers(me.children(recursive=True), "local", self.result.workers)

    def __enter__(self) -> MemoryWatch:
        import psutil

        me = psutil.Process(os.getpid())
        sample_workers(me.children(recursive=True), "local", self.result.workers, before=True)
        self._actors = _start_node_samplers(self.interval)
        self._sampler = _Sampler(self._sample_local, self.interval)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._sampler is not None:
            self._sampler.stop()
        self.result.workers.merge(_collect(self._actors))


def _start_node_samplers(interval: float) -> list[Any]:
    """One :class:`NodeSampler` actor per alive node when connected to a cluster
    (``RAY_ADDRESS`` set and Ray initialised); none otherwise."""
    if not os.environ.get("RAY_ADDRESS"):
        return []
    try:
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        if not ray.is_initialized():
            return []
        remote = ray.remote(num_cpus=0, max_restarts=0)(NodeSampler)
        return [
            remote.options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)
            ).remote(interval)
            for n in ray.nodes()
            if n.get("Alive")
        ]
    except Exception:  # accounting must never fail a stage
        log.warning("could not start the per-node memory samplers", exc_info=True)
        return []


def _collect(actors: list[Any]) -> WorkerPeaks:
    """The peaks of every sampler still alive (a lost node's samples are lost with it)."""
    out = WorkerPeaks()
    if not actors:
        return out
    import ray

    for actor in actors:
        try:
            out.merge(WorkerPeaks.from_json(ray.get(actor.stop.remote(), timeout=30)))
        except Exception:
            log.info("a memory sampler did not answer (its node left?)")
        finally:
            ray.kill(actor)
    return out


__all__ = [
    "MemoryWatch",
    "NodeSampler",
    "StageMemory",
    "WorkerPeaks",
    "sample_workers",
    "worker_kind",
]
