"""The run report: ``<run>/report.md`` and a self-contained ``<run>/report.html``.

The report links the pictures the stages already draw (``data/contact_sheet.png``,
``peaks/peaks.png``, ``wsod/curves.png``) and draws the rest into ``<run>/report/``: sample
images with their proposals and peak points, PGT boxes and masks, the final detectors'
detections, precision-recall curves on the test split and the stage timings. Tables are read
from the run folder with :mod:`weaksam.io.tables`; nothing here trains, infers or starts Ray.

A part whose stage did not run (or whose file is missing) is left out with a line saying so;
a part that fails to draw is replaced by a line with the error. Markdown paths are relative to
the run folder; the HTML embeds every PNG as a base64 data URI, so it can be mailed alone.
The run folder may be a local path, ``file://`` or ``s3://`` location (:mod:`weaksam.storage`).
"""

from __future__ import annotations

import base64
import functools
import html
import logging
import os
import posixpath
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow.fs as pafs

from weaksam import storage
from weaksam.eval.table import format_value
from weaksam.machine import machine_line
from weaksam.pipeline.report_figures import FigureOptions, SampleContext, Section
from weaksam.pipeline.report_figures import sections as figure_sections
from weaksam.pipeline.results import (
    COMPARISON_HEADERS,
    RESULT_KEYS,
    comparison_rows,
    comparison_title,
    family_keys,
    label,
)
from weaksam.runs import SUCCESS, resolved_config_path, results_path
from weaksam.stage import StageReport
from weaksam.viz.plots import plot_stage_seconds

log = logging.getLogger(__name__)

REPORT_MD = "report.md"
REPORT_HTML = "report.html"
FIGURES = "report"  # <run>/report/*.png


@dataclass(frozen=True)
class Heading:
    level: int
    text: str


@dataclass(frozen=True)
class Paragraph:
    """Plain text; ``code`` spans in backticks are kept in both renderings."""

    text: str


@dataclass(frozen=True)
class Table:
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class Figure:
    """A PNG at ``path`` (relative to the run folder, ``/``-separated) with a caption."""

    path: str
    caption: str


Block = Heading | Paragraph | Table | Figure


@dataclass(frozen=True)
class ReportPaths:
    markdown: str
    html: str
    figures: tuple[str, ...]  # PNGs the report refers to, relative to the run folder


@dataclass(frozen=True)
class StageTiming:
    """One stage's row of the timing table.

    ``action`` is ``ran``, ``skipped`` (fresh: its outputs come from an earlier run),
    ``upstream`` (a link to the upstream run's folder), ``disabled`` or ``earlier run`` (not
    part of this invocation); ``seconds`` is this invocation's time for ``ran`` and the
    ``_SUCCESS`` marker's (the run that made the outputs) otherwise; ``peak_rss_mb`` (the
    driver's) is None when unknown; ``worker`` the largest Ray worker's peak in MiB and its kind
    (``"812 RayTrainWorker"``), None when unknown.
    """

    name: str
    action: str
    seconds: float | None
    peak_rss_mb: float | None
    worker: str | None = None


# --------------------------------------------------------------------------- stage state


def _marker(run_dir: str, stage: str) -> dict[str, Any] | None:
    try:
        data = storage.read_json(storage.join(run_dir, stage, SUCCESS))
    except (OSError, ValueError):  # missing, unreadable or not JSON
        return None
    return data if isinstance(data, dict) else {}


def _entries(run_dir: str) -> list[str]:
    """Names of the entries directly in the folder ``run_dir`` (none when it is missing)."""
    if not storage.is_remote(run_dir):
        local = storage.resolve(run_dir)[1]
        return os.listdir(local) if os.path.isdir(local) else []
    fs, p = storage.resolve(run_dir)
    infos = fs.get_file_info(pafs.FileSelector(p, allow_not_found=True))
    return [posixpath.basename(i.path) for i in infos if i.type == pafs.FileType.Directory]


def _marked_stages(run_dir: str) -> list[tuple[str, float | None]]:
    """``(stage, seconds)`` of every folder of ``run_dir`` with a marker, oldest first."""
    found = []
    for name in sorted(_entries(run_dir)):
        marker = _marker(run_dir, name)
        if marker is not None:
            found.append((float(marker.get("finished_at") or 0.0), name, marker.get("seconds")))
    return [(name, sec) for _, name, sec in sorted(found)]


def stage_timings(
    run_dir: str,
    reports: Sequence[StageReport] | None = None,
    results: Mapping[str, Any] | None = None,
) -> list[StageTiming]:
    """Timing rows in pipeline order.

    From ``reports`` when given, else from ``results``' ``stages`` (``results.json``); stage
    folders with a marker that neither names (``--only`` runs) follow as ``earlier run``.
    Without either, every marked folder is listed as ``ran``, oldest first.
    """
    out: list[StageTiming] = []
    if reports:
        for r in reports:
            if r.action == "ran":
                worker = f"{r.worker_rss_mb:.0f} {r.worker_kind}" if r.worker_kind else None
                out.append(StageTiming(r.name, r.action, r.seconds, r.peak_rss_mb, worker))
            else:
                fresh = r.action in ("skipped", "upstream")
                marker = _marker(run_dir, r.name) if fresh else None
                sec = marker.get("seconds") if marker else None
                out.append(StageTiming(r.name, r.action, sec, None))
    elif (results or {}).get("stages"):
        seconds = (results or {}).get("stage_seconds") or {}
        for name, action in (results or {})["stages"].items():
            sec = seconds.get(name)
            if sec is None and action in ("skipped", "upstream"):
                sec = (_marker(run_dir, name) or {}).get("seconds")
            out.append(StageTiming(name, action, sec, None))
    else:
        return [StageTiming(n, "ran", s, None) for n, s in _marked_stages(run_dir)]
    named = {t.name for t in out}
    out += [
        StageTiming(n, "earlier run", s, None) for n, s in _marked_stages(run_dir) if n not in named
    ]
    return out


def _missing_reason(run_dir: str, stage: str, timings: Mapping[str, StageTiming]) -> str | None:
    """None when ``stage`` completed (has a marker), else why its outputs are absent."""
    if _marker(run_dir, stage) is not None:
        return None
    action = timings[stage].action if stage in timings else None
    if action == "disabled":
        return f"stage `{stage}` is disabled for this config"
    return f"stage `{stage}` did not run (no `{stage}/{SUCCESS}`)"


# --------------------------------------------------------------------------- sections


def _results_section(results: Mapping[str, Any] | None) -> list[Block]:
    blocks: list[Block] = [Heading(2, "Results")]
    if results is None:
        return [*blocks, Paragraph("Left out: no `results.json` in the run folder.")]
    rows = [
        (label(k, results).strip(), format_value(results[k]))
        for k in RESULT_KEYS
        if results.get(k) is not None
    ]
    if not rows:
        return [*blocks, Paragraph("No stage produced a result value.")]
    blocks.append(Table(("result", "value"), tuple(rows)))
    absent = [label(k, results).strip() for k in family_keys(results) if results.get(k) is None]
    if absent:
        blocks.append(Paragraph(f"Not measured in this run: {'; '.join(absent)}."))
    return blocks


def _upstream_section(results: Mapping[str, Any] | None) -> list[Block]:
    """The run's detectors beside its upstream run's (:func:`comparison_rows`); nothing
    when the run has no upstream figures."""
    rows = comparison_rows(results or {})
    if not results or not rows:
        return []
    up = results["upstream"]
    cells = tuple(
        (
            r.architecture,
            r.run,
            r.target,
            *(format_value(v) if v is not None else "-" for v in (*r.ap, r.full_ap50, r.ratio)),
        )
        for r in rows
    )
    text = (
        f"Upstream run `{up['run']}` (its figures: `results.json`, key `upstream`). "
        "Boxes: VOC07 11-point AP50; masks: mask AP at IoU 0.25 / 0.5 / 0.7 / 0.75; the "
        "fully supervised column is the same architecture trained on the ground truth."
    )
    return [
        Heading(2, "Beside the upstream run"),
        Paragraph(comparison_title(results) + "."),
        Table(COMPARISON_HEADERS, cells),
        Paragraph(text),
    ]


def _timing_section(run_dir: str, timings: Sequence[StageTiming]) -> list[Block]:
    blocks: list[Block] = [Heading(2, "Stage timings")]
    if not timings:
        return [*blocks, Paragraph("Left out: no stage information.")]
    rows = []
    for t in timings:
        sec = "-" if t.seconds is None else f"{t.seconds:.1f}"
        if t.action != "ran" and t.seconds is not None:
            sec += " (upstream run)" if t.action == "upstream" else " (earlier run)"
        rss = "-" if t.peak_rss_mb is None else f"{t.peak_rss_mb:.0f}"
        rows.append((t.name, t.action, sec, rss, t.worker or "-"))
    ran = sum(t.seconds or 0.0 for t in timings if t.action == "ran")
    rows.append(("total", "", f"{ran:.1f} (this invocation)", "", ""))
    head = ("stage", "this invocation", "seconds", "driver peak MiB", "largest worker peak MiB")
    blocks.append(Table(head, tuple(rows)))
    timed = [t for t in timings if t.seconds is not None and t.action != "disabled"]
    if timed:
        rel = f"{FIGURES}/timings.png"
        plot_stage_seconds(
            [t.name for t in timed],
            [float(t.seconds or 0.0) for t in timed],
            [t.action != "ran" for t in timed],
            storage.join(run_dir, rel),
            f"wall time per stage ({ran:.1f} s in this invocation)",
        )
        blocks.append(Figure(rel, "Wall time per stage."))
    return blocks


def _guarded(title: str, make: Callable[[], list[Block]]) -> list[Block]:
    """``make()``, or a heading and a line with the error: the report never fails a run."""
    try:
        return make()
    except Exception as exc:
        log.warning("report section %r failed", title, exc_info=True)
        return [
            Heading(2, title),
            Paragraph(f"Could not build this part: {type(exc).__name__}: {exc}"),
        ]


def _figure_section(make: Callable[[], Section]) -> list[Block]:
    section = make()
    blocks: list[Block] = [Heading(2, section.title)]
    blocks.extend(Paragraph(t) for t in section.text)
    blocks.extend(Figure(p, c) for p, c in section.figures)
    blocks.extend(Paragraph(f"Left out: {n}.") for n in section.missing)
    return blocks


def build_report(
    run_dir: str,
    reports: Sequence[StageReport] | None = None,
    results: Mapping[str, Any] | None = None,
    splits: Sequence[str] | None = None,
    options: FigureOptions | None = None,
) -> list[Block]:
    """The report's blocks; draws the missing figures into ``<run_dir>/report/``.

    Args:
        run_dir: the run folder (a local path or a ``file://`` / ``s3://`` location).
        reports: what :func:`weaksam.pipeline.core.run_stages` returned (timings and peak
            memory of this invocation); None rebuilds the timings from ``results``.
        results: the flat results (:func:`weaksam.pipeline.results.collect_results`); None
            reads ``<run_dir>/results.json`` when present.
        splits: the config's ``data.splits`` (train first, test last); None takes ``train``
            and ``test`` when the manifest has them, else its first and last split.
        options: what the sample figures show.
    """
    if results is None:
        path = results_path(run_dir)
        if storage.exists(path):
            results = storage.read_json(path)
    timings = stage_timings(run_dir, reports, results)
    by_name = {t.name: t for t in timings}
    ctx = SampleContext(
        run_dir=run_dir,
        fig_dir=FIGURES,
        options=options or FigureOptions(),
        splits=tuple(splits) if splits else None,
        missing=lambda stage: _missing_reason(run_dir, stage, by_name),
    )
    name = storage.basename(storage.normalize(run_dir))
    total = (results or {}).get("total_seconds")
    intro = f"Run folder `{run_dir}`, report written {time.strftime('%Y-%m-%d %H:%M:%S')}"
    if total is not None:
        intro += f"; the pipeline invocation took {float(total):.1f} s"
    machine = (results or {}).get("machine")
    if isinstance(machine, dict) and machine.get("cpu"):
        intro += f", on {machine_line(machine)}"
    blocks: list[Block] = [Heading(1, f"weaksam run report: {name}"), Paragraph(intro + ".")]
    if storage.exists(resolved_config_path(run_dir)):
        blocks.append(Paragraph("Resolved config: `config.resolved.yaml`."))
    blocks += _guarded("Results", lambda: _results_section(results))
    blocks += _guarded("Beside the upstream run", lambda: _upstream_section(results))
    blocks += _guarded("Stage timings", lambda: _timing_section(run_dir, timings))
    for title, make in figure_sections(ctx):
        blocks += _guarded(title, functools.partial(_figure_section, make))
    return blocks


# --------------------------------------------------------------------------- rendering


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(blocks: Sequence[Block]) -> str:
    """GitHub-flavoured Markdown of ``blocks``; figures as relative image links."""
    out: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            out.append(f"{'#' * b.level} {b.text}")
        elif isinstance(b, Paragraph):
            out.append(b.text)
        elif isinstance(b, Table):
            lines = ["| " + " | ".join(_md_cell(h) for h in b.headers) + " |"]
            lines.append("|" + "|".join("---" for _ in b.headers) + "|")
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in b.rows]
            out.append("\n".join(lines))
        else:
            alt = os.path.splitext(os.path.basename(b.path))[0]
            out.append(f"![{alt}]({b.path})\n\n*{b.caption}*")
    return "\n\n".join(out) + "\n"


_CODE = re.compile(r"`([^`]+)`")
_NUMBER = re.compile(r"^-?[\d.]+(e-?\d+)?( \(.*\))?$")
_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1150px; margin: 2em auto; padding: 0 1em;
       color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 3px 9px; }
th { background: #f2f2f2; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 1em 0 1.5em; } figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { color: #555; font-size: 0.9em; }
code { background: #f4f4f4; padding: 0 3px; }
"""


def _inline(text: str) -> str:
    return _CODE.sub(r"<code>\1</code>", html.escape(text, quote=False))


def _data_uri(path: str) -> str | None:
    try:
        data = storage.read_bytes(path)
    except OSError:
        return None
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def render_html(blocks: Sequence[Block], run_dir: str) -> str:
    """A standalone HTML page of ``blocks``; PNGs embedded as data URIs (a relative link when
    the file cannot be read)."""
    title = next((b.text for b in blocks if isinstance(b, Heading)), "weaksam run report")
    body: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            body.append(f"<h{b.level}>{_inline(b.text)}</h{b.level}>")
        elif isinstance(b, Paragraph):
            body.append(f"<p>{_inline(b.text)}</p>")
        elif isinstance(b, Table):
            head = "".join(f"<th>{_inline(h)}</th>" for h in b.headers)
            rows = []
            for row in b.rows:
                cells = "".join(
                    f'<td class="num">{_inline(c)}</td>'
                    if _NUMBER.match(c)
                    else f"<td>{_inline(c)}</td>"
                    for c in row
                )
                rows.append(f"<tr>{cells}</tr>")
            body.append(f"<table><tr>{head}</tr>{''.join(rows)}</table>")
        else:
            src = _data_uri(storage.join(run_dir, b.path)) or html.escape(b.path)
            alt = html.escape(b.caption)
            body.append(
                f'<figure><img src="{src}" alt="{alt}"><figcaption>{_inline(b.caption)}'
                "</figcaption></figure>"
            )
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>\n<body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


def write_report(
    run_dir: str,
    reports: Sequence[StageReport] | None = None,
    results: Mapping[str, Any] | None = None,
    splits: Sequence[str] | None = None,
    options: FigureOptions | None = None,
) -> ReportPaths:
    """Build the report (:func:`build_report`) and write ``report.md`` and ``report.html``
    into ``run_dir``; returns their paths and the figures they refer to."""
    blocks = build_report(run_dir, reports, results, splits, options)
    md_path = storage.join(run_dir, REPORT_MD)
    html_path = storage.join(run_dir, REPORT_HTML)
    for path, text in (
        (md_path, render_markdown(blocks)),
        (html_path, render_html(blocks, run_dir)),
    ):
        storage.write_text(path, text)
    figures = tuple(b.path for b in blocks if isinstance(b, Figure))
    return ReportPaths(md_path, html_path, figures)


def try_write_report(
    run_dir: str,
    reports: Sequence[StageReport] | None = None,
    results: Mapping[str, Any] | None = None,
    splits: Sequence[str] | None = None,
) -> str:
    """:func:`write_report`'s Markdown path, or why no report was written (never raises:
    a finished run must not fail because of its report)."""
    try:
        return write_report(run_dir, reports, results, splits).markdown
    except Exception as exc:
        log.warning("report not written", exc_info=True)
        return f"not written ({type(exc).__name__}: {exc})"


__all__ = [
    "REPORT_HTML",
    "REPORT_MD",
    "Block",
    "Figure",
    "FigureOptions",
    "Heading",
    "Paragraph",
    "ReportPaths",
    "StageTiming",
    "Table",
    "build_report",
    "render_html",
    "render_markdown",
    "stage_timings",
    "try_write_report",
    "write_report",
]
