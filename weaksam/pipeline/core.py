"""The runner: run stages in order, skip fresh ones, resume interrupted ones, rerun stale ones.

A stage is fresh when its folder has a ``_SUCCESS`` marker for the same *key*: the hash of the
stage's config sections, the seed, the weight files they load and its dependencies' hashes,
plus the run ids of the dependencies' markers (so a dependency rebuilt by a forced run makes
its dependants stale even with an unchanged config). A stage that started for the same key and
did not finish resumes from its partial outputs. Only ``force`` discards outputs. With
``upstream`` set, a stage that is not fresh here but finished in the upstream run for the same
key is linked to the upstream's folder instead of run (:mod:`weaksam.pipeline.upstream`). This
is the one way any entry point runs a stage (``ray_jobs.pipeline``, ``python -m ray_jobs.<stage>``,
``weaksam <stage>``). Nothing here starts Ray; stages that need it call the ``ray_init`` hook
they are given.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

from weaksam import storage
from weaksam.config import Config, config_hash, to_dict
from weaksam.pipeline.memory import MemoryWatch
from weaksam.pipeline.upstream import (
    check_upstream,
    link_stage,
    linked_target,
    mismatch_reason,
    unlink_stage,
)
from weaksam.runs import (
    METRICS,
    clear_success,
    file_digest,
    mark_started,
    mark_success,
    read_metrics,
    read_success,
    reset_stage_dir,
    started_key,
    weight_files,
    write_metrics,
)
from weaksam.stage import Stage, StageContext, StageReport

log = logging.getLogger(__name__)

__all__ = ["Stage", "StageContext", "StageReport", "run_stages", "select_stages", "stage_hashes"]


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


def select_stages(
    stages: Sequence[Stage], from_stage: str | None = None, only: str | Sequence[str] | None = None
) -> list[str]:
    """Names of the stages a call runs, in pipeline order: ``only`` (one name or several),
    ``from_stage`` and every later one, or all. Unknown names raise ``ValueError``."""
    names = [s.name for s in stages]
    wanted = [only] if isinstance(only, str) else list(only or [])
    for given in (from_stage, *wanted):
        if given is not None and given not in names:
            raise ValueError(f"unknown stage {given!r}; stages: {names}")
    if wanted:
        return [n for n in names if n in wanted]
    if from_stage is not None:
        return names[names.index(from_stage) :]
    return names


def _link_upstream(
    name: str, out_dir: str, key: str, upstream: str, reports: list[StageReport]
) -> bool:
    """Link ``out_dir`` to the upstream run's folder of stage ``name`` when its marker has
    ``key`` (and report it); whether it did."""
    up_dir = storage.join(upstream, name)
    up_marker = read_success(up_dir)
    if up_marker is None or up_marker.get("key") != key:
        return False
    link_stage(out_dir, up_dir)
    log.info("stage %-18s reused from the upstream %s", name, up_dir)
    reports.append(StageReport(name, "upstream", metrics=_metrics(out_dir), source=up_dir))
    return True


def _dependencies(stages: Sequence[Stage], selected: Sequence[str]) -> set[str]:
    """The names of every stage the ``selected`` ones read, directly or not (not themselves)."""
    deps = {s.name: s.deps for s in stages}
    out: set[str] = set()
    todo = [d for n in selected for d in deps.get(n, ())]
    while todo:
        name = todo.pop()
        if name not in out:
            out.add(name)
            todo.extend(deps.get(name, ()))
    return out - set(selected)


def _inputs(run_dir: str, stage: Stage) -> dict[str, str | None]:
    """The run ids of the markers of ``stage``'s dependencies (None: no marker)."""
    out: dict[str, str | None] = {}
    for dep in stage.deps:
        marker = read_success(storage.join(run_dir, dep))
        out[dep] = str(marker.get("run_id")) if marker and marker.get("run_id") else None
    return out


def _metrics(out_dir: str) -> dict[str, Any]:
    """The stage folder's ``metrics.json`` (empty when it has none)."""
    return read_metrics(out_dir) if storage.exists(storage.join(out_dir, METRICS)) else {}


def _has_outputs(out_dir: str) -> bool:
    """True when ``out_dir`` holds anything but markers (local: any entry not starting with
    ``_``; object store: any object not named ``_*`` / ``.*``)."""
    if not storage.is_remote(out_dir):
        return any(not f.startswith("_") for f in os.listdir(storage.resolve(out_dir)[1]))
    return bool(storage.list_files(out_dir, recursive=True))


def check_stage_coverage(stage: Stage, cfg: Config) -> dict[str, int]:
    """Check every per-image table ``stage`` declares (:attr:`Stage.covers`) against the
    manifest (:func:`weaksam.io.coverage.check_table_covers`); ``{table name: rows}``.
    Raises :class:`weaksam.io.coverage.CoverageError` before the stage can be marked done."""
    from weaksam.io.coverage import check_table_covers
    from weaksam.runs import manifest_path

    out: dict[str, int] = {}
    for table, splits in stage.covers(cfg, cfg.run_dir):
        rows = check_table_covers(manifest_path(cfg.run_dir), table, stage.name, splits)
        out[storage.basename(table)] = rows
    return out


def run_stages(
    cfg: Config,
    stages: Sequence[Stage],
    *,
    ray_init: Callable[[], None] = lambda: None,
    from_stage: str | None = None,
    only: str | Sequence[str] | None = None,
    force: bool = False,
) -> list[StageReport]:
    """Run ``stages`` in order for ``cfg``; return what happened to each selected stage (and
    to each input linked from the upstream run, below).

    ``only`` runs just those stages (their inputs must exist), ``from_stage`` that stage and
    every later one (see :func:`select_stages`). A selected stage is skipped when fresh,
    resumes when an interrupted run of the same key left partial outputs, and otherwise starts
    from an empty folder. ``force`` empties and reruns every selected stage: it is the only
    way fresh outputs are discarded (a linked stage loses its link; the upstream's files stay).

    With ``cfg.upstream``, a selected stage that is not fresh here and whose folder in the
    upstream run has a marker for this run's key is reused: its folder becomes a link to the
    upstream's (action ``upstream``). So is an input of a selected stage that is not itself
    selected (``only``, ``from_stage``), which is never run: ``--only retrain`` on a run derived
    from ``runs/bench`` links what retrain reads. Raises ``FileNotFoundError`` when the
    upstream folder does not exist.
    """
    hashes = stage_hashes(cfg, stages)
    selected = select_stages(stages, from_stage, only)
    upstream = cfg.upstream_dir
    if upstream:
        check_upstream(upstream, cfg.run_dir)
    needed = _dependencies(stages, selected)
    reports: list[StageReport] = []
    for stage in stages:
        # an unselected input of a selected stage is only linked from the upstream (when it is
        # missing here and done there for this key), never run: `--only` on a derived run
        linkable = bool(upstream) and stage.name in needed
        if stage.name not in selected and not linkable:
            continue
        if not stage.enabled(cfg):
            if stage.name in selected:
                reports.append(StageReport(stage.name, "disabled"))
            continue
        out_dir = storage.join(cfg.run_dir, stage.name)
        key = config_hash({"stage": hashes[stage.name], "inputs": _inputs(cfg.run_dir, stage)})
        marker = read_success(out_dir)
        fresh = marker is not None and marker.get("key") == key
        if stage.name not in selected:
            if not fresh and upstream:
                _link_upstream(stage.name, out_dir, key, upstream, reports)
            continue
        if not force and fresh:
            target = linked_target(out_dir)
            log.info("stage %-18s fresh%s, skipped", stage.name, " (upstream)" if target else "")
            action = "upstream" if target else "skipped"
            reports.append(
                StageReport(stage.name, action, metrics=_metrics(out_dir), source=target or "")
            )
            continue
        if upstream and not force:
            if _link_upstream(stage.name, out_dir, key, upstream, reports):
                continue
            why = mismatch_reason(
                stage.name,
                hashes,
                _inputs(cfg.run_dir, stage),
                upstream,
                to_dict(cfg),
                stage.sections,
            )
            log.info("stage %-18s not reused from the upstream: %s", stage.name, why)
        # never write through a link into the upstream run: this run's own folder from here on
        unlink_stage(out_dir)
        marker = read_success(out_dir)
        storage.makedirs(out_dir)
        # Partial outputs are kept only to resume an interrupted run of the same key (the
        # proposal and mask jobs skip images already written, Ray Train resumes from its
        # checkpoints). Outputs of another config or of other inputs must not be resumed
        # from, and a forced run must not either: then the folder starts empty.
        resume = not force and marker is None and started_key(out_dir) == key
        clear_success(out_dir)
        if not resume:
            reset_stage_dir(out_dir)
        elif _has_outputs(out_dir):
            log.info("stage %-18s resuming an interrupted run", stage.name)
        mark_started(out_dir, key)
        log.info("stage %-18s running", stage.name)
        t0 = time.time()
        with MemoryWatch() as watch:
            metrics = stage.run(cfg, StageContext(cfg.run_dir, out_dir, ray_init))
        seconds = time.time() - t0
        mem = watch.result
        metrics = {**metrics, "memory": mem.metrics()}
        covered = check_stage_coverage(stage, cfg)
        if covered:
            metrics = {**metrics, "rows_checked": covered}
        write_metrics(out_dir, metrics)
        mark_success(out_dir, hashes[stage.name], key=key, seconds=seconds)
        log.info("stage %-18s done in %.1f s", stage.name, seconds)
        kind, worker = mem.largest_worker or ("", 0)
        reports.append(
            StageReport(
                stage.name,
                "ran",
                seconds,
                mem.driver_bytes / 2**20,
                metrics,
                resumed=resume,
                worker_rss_mb=worker / 2**20,
                worker_kind=kind,
            )
        )
    return reports
