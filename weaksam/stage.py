"""The stage contract: what a pipeline stage is, what it is given, and what running it reports.

This module sits at the bottom of the library: every stage package (``data``, ``cam``,
``proposals``, ``wsod``, ``pgt``, ``detection``, ``eval``) declares its :class:`Stage` objects
with it, and :mod:`weaksam.pipeline` (the roof) orders them and runs them. Paths inside a run
folder come from :mod:`weaksam.runs`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the config composes every stage package's section; import only for types
    from weaksam.config import Config


@dataclass(frozen=True)
class StageContext:
    """What a stage's run function gets besides the config.

    Attributes:
        run_dir: the run folder (``<run_root>/<name>``), absolute for local storage.
        out_dir: the stage's own folder inside it (``<run_dir>/<stage name>``).
        ray_init: connects to (or starts) Ray; stages that need Ray call it first.
    """

    run_dir: str
    out_dir: str
    ray_init: Callable[[], None]


def _always(cfg: Config) -> bool:
    return True


def _no_tables(cfg: Config, run_dir: str) -> list[tuple[str, tuple[str, ...]]]:
    return []


@dataclass(frozen=True)
class Stage:
    """One step of the pipeline.

    Attributes:
        name: folder name under the run directory, the ``--only/--from`` key and the name of
            its ``python -m ray_jobs.<...>`` / ``weaksam <name>`` command.
        run: ``run(cfg, ctx) -> metrics`` (a JSON-able dict written to ``metrics.json``).
        sections: config sections whose values define the stage's output (its hash).
        deps: names of stages whose outputs this one reads.
        enabled: predicate on the config (e.g. ``data`` only for synthetic data).
        check: ``check(cfg)`` raises ``ValueError`` / ``FileNotFoundError`` (one line) when
            the stage's external inputs (dataset files, settings that only make sense
            together) rule out a run; called before anything in the run folder changes.
        covers: ``covers(cfg, run_dir) -> [(table location, splits), ...]``: the per-image
            tables the stage writes, each of which must hold exactly one row (an error row
            counts) for every manifest image of ``splits`` (all when empty) and no other.
            The runner checks them (:func:`weaksam.io.coverage.check_table_covers`) before it
            writes ``_SUCCESS``.
    """

    name: str
    run: Callable[[Config, StageContext], dict[str, Any]]
    sections: tuple[str, ...] = ()
    deps: tuple[str, ...] = ()
    enabled: Callable[[Config], bool] = field(default=_always)
    check: Callable[[Config], None] | None = None
    covers: Callable[[Config, str], list[tuple[str, tuple[str, ...]]]] = field(default=_no_tables)


@dataclass(frozen=True)
class StageReport:
    """What happened to one stage in one call of the runner.

    Attributes:
        name: the stage's name.
        action: ``ran``, ``skipped`` (fresh outputs kept), ``upstream`` (the folder is a link
            to the upstream run's, whose key is this run's: :mod:`weaksam.pipeline.upstream`)
            or ``disabled`` (by the config).
        seconds: wall time of the stage's run function (0 unless it ran).
        peak_rss_mb: peak resident memory of the driver process while it ran.
        metrics: the stage's ``metrics.json`` (also for skipped stages).
        resumed: it ran on top of the partial outputs of an interrupted run of the same config.
        worker_rss_mb / worker_kind: the largest peak of one Ray worker process while it ran
            and what that process ran (:mod:`weaksam.pipeline.memory`); 0 / ``""`` when the
            stage used no Ray worker.
        source: for ``upstream``, the upstream's stage folder the outputs are read from.
    """

    name: str
    action: str
    seconds: float = 0.0
    peak_rss_mb: float = 0.0
    metrics: dict[str, Any] = field(default_factory=dict)
    resumed: bool = False
    worker_rss_mb: float = 0.0
    worker_kind: str = ""
    source: str = ""
