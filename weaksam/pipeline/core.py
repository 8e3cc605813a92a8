"""Stage orchestration: run stages in order, skip fresh ones, rerun stale ones and dependants.

A stage is fresh when its folder has a ``_SUCCESS`` marker whose config hash equals the hash of
the stage's config sections *and* of every stage it depends on, so changing one stage's setting
reruns that stage and those after it only. Nothing here starts Ray; stages that need it call
the ``ray_init`` hook they are given.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from weaksam.config import Config, config_hash, to_dict
from weaksam.runs import (
    clear_success,
    file_digest,
    is_complete,
    mark_started,
    mark_success,
    read_metrics,
    reset_stage_dir,
    started_hash,
    weight_files,
    write_metrics,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StageContext:
    """What a stage's run function gets besides the config."""

    run_dir: str
    out_dir: str
    ray_init: Callable[[], None]


@dataclass(frozen=True)
class Stage:
    """One step of the pipeline.

    Attributes:
        name: folder name under the run directory and the ``--only/--from`` key.
        run: ``run(cfg, ctx) -> metrics`` (a flat-ish JSON-able dict).
        sections: config sections whose values define the stage's output.
        deps: names of stages whose outputs this one reads.
        enabled: predicate on the config (e.g. ``synth`` only for synthetic data).
    """

    name: str
    run: Callable[[Config, StageContext], dict[str, Any]]
    sections: tuple[str, ...] = ()
    deps: tuple[str, ...] = ()
    enabled: Callable[[Config], bool] = field(default=lambda cfg: True)


@dataclass
class StageReport:
    name: str
    action: str  # "ran", "skipped", "disabled"
    seconds: float = 0.0
    peak_rss_mb: float = 0.0
    metrics: dict[str, Any] = field(default_factory=dict)


def stage_hashes(cfg: Config, stages: Sequence[Stage]) -> dict[str, str]:
    """The hash of each stage: its sections, the seed, the content of the weight files its
    sections load (:func:`weaksam.runs.weight_files`: a retrained checkpoint or a changed
    ``builtin`` asset at the same path reruns the stage), and its dependencies' hashes."""
    by_name = {s.name: s for s in stages}
    out: dict[str, str] = {}

    def h(name: str) -> str:
        if name not in out:
            s = by_name[name]
            sec = {k: to_dict(getattr(cfg, k)) for k in s.sections}
            files = [file_digest(p) for p in weight_files(sec)]
            out[name] = config_hash(
                {"seed": cfg.seed, "sections": sec, "files": files, "deps": [h(d) for d in s.deps]}
            )
        return out[name]

    for s in stages:
        h(s.name)
    return out


class _PeakRSS:
    """Samples this process's resident memory (and its children's) in a thread."""

    def __init__(self, interval: float = 0.2) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, args=(interval,), daemon=True)

    def _loop(self, interval: float) -> None:
        try:
            import psutil
        except ImportError:  # pragma: no cover
            return
        proc = psutil.Process(os.getpid())
        while not self._stop.is_set():
            try:
                rss = proc.memory_info().rss + sum(
                    c.memory_info().rss for c in proc.children(recursive=True)
                )
                self.peak = max(self.peak, rss)
            except psutil.Error:
                pass
            self._stop.wait(interval)

    def __enter__(self) -> _PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=2)


def select_stages(
    stages: Sequence[Stage], from_stage: str | None = None, only: str | None = None
) -> set[str]:
    """Names of stages forced to run by ``--from`` / ``--only`` (others may still be stale)."""
    names = [s.name for s in stages]
    for given in (from_stage, only):
        if given is not None and given not in names:
            raise ValueError(f"unknown stage {given!r}; stages: {names}")
    if only is not None:
        return {only}
    if from_stage is not None:
        return set(names[names.index(from_stage) :])
    return set()


def run_stages(
    cfg: Config,
    stages: Sequence[Stage],
    *,
    ray_init: Callable[[], None] = lambda: None,
    from_stage: str | None = None,
    only: str | None = None,
) -> list[StageReport]:
    """Run ``stages`` in order for ``cfg``; return what happened to each.

    ``only`` runs just that stage (its inputs must exist); ``from_stage`` forces that stage and
    every later one to rerun. Otherwise a stage runs when it is missing or stale, or when a
    stage it depends on ran in this call.
    """
    hashes = stage_hashes(cfg, stages)
    forced = select_stages(stages, from_stage, only)
    reports: list[StageReport] = []
    ran: set[str] = set()
    for stage in stages:
        if not stage.enabled(cfg):
            reports.append(StageReport(stage.name, "disabled"))
            continue
        if only is not None and stage.name != only:
            continue
        out_dir = os.path.join(cfg.run_dir, stage.name)
        upstream_ran = any(d in ran for d in stage.deps)
        if (
            stage.name not in forced
            and not upstream_ran
            and is_complete(out_dir, hashes[stage.name])
        ):
            has_metrics = os.path.exists(os.path.join(out_dir, "metrics.json"))
            metrics = read_metrics(out_dir) if has_metrics else {}
            log.info("stage %-18s fresh, skipped", stage.name)
            reports.append(StageReport(stage.name, "skipped", metrics=metrics))
            continue
        os.makedirs(out_dir, exist_ok=True)
        clear_success(out_dir)
        # Partial outputs are kept only to resume an interrupted run of the same config (the
        # proposal and mask jobs skip images already written, Ray Train resumes from its
        # checkpoints). Outputs of another config, or of a run that is being forced or whose
        # inputs were just rebuilt, must not be resumed from: the folder starts empty.
        resume = (
            stage.name not in forced
            and not upstream_ran
            and started_hash(out_dir) == hashes[stage.name]
        )
        if not resume:
            reset_stage_dir(out_dir)
        elif os.listdir(out_dir):
            log.info("stage %-18s resuming an interrupted run", stage.name)
        mark_started(out_dir, hashes[stage.name])
        log.info("stage %-18s running", stage.name)
        t0 = time.time()
        with _PeakRSS() as mem:
            metrics = stage.run(cfg, StageContext(cfg.run_dir, out_dir, ray_init))
        seconds = time.time() - t0
        write_metrics(out_dir, metrics)
        mark_success(out_dir, hashes[stage.name], seconds=seconds)
        log.info("stage %-18s done in %.1f s", stage.name, seconds)
        ran.add(stage.name)
        reports.append(StageReport(stage.name, "ran", seconds, mem.peak / 2**20, metrics))
    return reports
