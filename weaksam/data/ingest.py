"""Ingest: images + image-level labels (COCO json | VOC xml | folder + CSV) -> MANIFEST rows.

Each source returns ``(rows, classes)``: MANIFEST row dicts (:mod:`weaksam.io.schemas`) and the
:class:`~weaksam.io.classes.ClassMap`. Every image is probed (``height``/``width`` after EXIF
orientation; by default a full decode so truncated files are caught); an image that cannot be
used is an error row with the reason, its path, split and labels; the job goes on.
A training-split image with no labels is an error row (``"no image-level labels"``) unless
``allow_empty_labels``. Duplicate ``image_index`` values raise ``ValueError``.

Sources: :func:`ingest_coco`, :func:`ingest_voc`, :func:`ingest_folder`; :func:`ingest_splits`
dispatches on a :class:`~weaksam.config.DataConfig`. Every location (dataset root, annotation
files, class file, ``data_root``) may be a local path or a URI (``file://``, ``s3://``); files
are read through :mod:`weaksam.storage` and image paths in the rows keep the location's form.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from weaksam import storage
from weaksam.config import DATA_FORMATS, DataConfig
from weaksam.data.ingest_coco import ingest_coco
from weaksam.data.ingest_core import NO_LABELS, check_unique_index, error_kind
from weaksam.data.ingest_folder import classes_from_csv, ingest_folder, read_labels_csv
from weaksam.data.ingest_voc import ingest_voc
from weaksam.io.classes import VOC_CLASSES, ClassMap, read_class_file

__all__ = [
    "FORMATS",
    "NO_LABELS",
    "format_summary",
    "ingest_coco",
    "ingest_folder",
    "ingest_splits",
    "ingest_voc",
    "summarize_rows",
]

Rows = list[dict[str, Any]]
FORMATS: tuple[str, ...] = DATA_FORMATS


def ingest_splits(
    cfg: DataConfig,
    data_root: str | None = None,
    *,
    allow_empty_labels: bool = False,
    verify: bool = True,
    num_workers: int | None = None,
    progress: bool = False,
    ray_chunk: int = 0,
) -> tuple[Rows, ClassMap]:
    """Ingest every split of ``cfg.splits`` (the first is the training split).

    Per ``cfg.format``:

    * ``synthetic``: the synthetic generator's COCO export,
      ``<data_root>/annotations/instances_<split>.json`` with images under
      ``<data_root>/images/`` (``data_root`` is required: the run's ``data`` folder).
    * ``coco``: ``cfg.annotations`` (``{split}`` replaced) with images under ``cfg.root``;
      ``cfg.image_labels`` (``{split}`` replaced) optionally overrides the labels. All splits
      must have the same categories.
    * ``voc``: ``cfg.root`` is the ``VOCxxxx`` folder; classes from ``cfg.classes_file`` or
      the 20 VOC classes.
    * ``folder``: ``cfg.annotations`` is the labels CSV (``{split}`` replaced), images under
      ``cfg.root``; classes from ``cfg.classes_file`` or the union over all splits' CSVs.

    Images are probed by ``num_workers`` threads here, or with ``ray_chunk > 0`` by Ray tasks
    of that many images (the caller has joined Ray; :func:`weaksam.data.ingest_core.build_rows`).
    Relative paths in ``cfg`` are taken relative to ``data_root`` when given (else the
    working directory). Raises ``ValueError`` (unknown format, inconsistent classes, duplicate
    image indices, missing settings) or ``FileNotFoundError`` (annotation files).
    """
    if cfg.format not in FORMATS:
        raise ValueError(f"unknown data format {cfg.format!r}; known: {list(FORMATS)}")
    if not cfg.splits:
        raise ValueError("data.splits is empty")
    opts: dict[str, Any] = {
        "allow_empty_labels": allow_empty_labels,
        "max_pixels": cfg.max_pixels,
        "verify": verify,
        "num_workers": num_workers,
        "progress": progress,
        "ray_chunk": ray_chunk,
    }

    def path(p: str) -> str:
        relative = not storage.is_uri(p) and not os.path.isabs(p)
        return storage.join(data_root, p) if data_root and relative else p

    def per_split(template: str, split: str) -> str:
        return path(template.replace("{split}", split))

    splits = list(cfg.splits)
    if cfg.format == "synthetic":
        if not data_root:
            raise ValueError("format 'synthetic' needs data_root (the run's data folder)")
        anns = [storage.join(data_root, "annotations", f"instances_{s}.json") for s in splits]
        return _coco_splits(storage.join(data_root, "images"), splits, anns, None, opts)
    if cfg.format == "coco":
        _require(cfg, "annotations", "root")
        anns = [per_split(cfg.annotations, s) for s in splits]
        labels = [per_split(cfg.image_labels, s) for s in splits] if cfg.image_labels else None
        return _coco_splits(path(cfg.root), splits, anns, labels, opts)

    _require(cfg, "root", *(() if cfg.format == "voc" else ("annotations",)))
    classes: ClassMap | None = None
    if cfg.classes_file:
        classes = read_class_file(path(cfg.classes_file))
    elif cfg.format == "voc":
        classes = ClassMap.from_names(VOC_CLASSES)
    else:  # folder: the union over every split's CSV, so all splits share one class map
        csvs = [per_split(cfg.annotations, s) for s in splits]
        classes = classes_from_csv([e for c in csvs for e in read_labels_csv(c)])
    rows: Rows = []
    for i, split in enumerate(splits):
        if cfg.format == "voc":
            part, _ = ingest_voc(
                path(cfg.root), split, classes, index_base=len(rows), training=i == 0, **opts
            )
        else:
            part, _ = ingest_folder(
                path(cfg.root),
                per_split(cfg.annotations, split),
                split,
                classes,
                index_base=len(rows),
                training=i == 0,
                **opts,
            )
        rows += part
    check_unique_index(rows)
    return rows, classes


def _coco_splits(
    images: str,
    splits: Sequence[str],
    anns: Sequence[str],
    labels: Sequence[str] | None,
    opts: Mapping[str, Any],
) -> tuple[Rows, ClassMap]:
    rows: Rows = []
    classes: ClassMap | None = None
    for i, split in enumerate(splits):
        image_labels = labels[i] if labels else None
        part, cmap = ingest_coco(images, anns[i], split, image_labels, training=i == 0, **opts)
        if classes is not None and cmap != classes:
            raise ValueError(
                f"the categories of split {split!r} differ from those of {splits[0]!r}: "
                f"{list(cmap.names)} vs {list(classes.names)}"
            )
        classes = cmap
        rows += part
    check_unique_index(rows)
    if classes is None:  # pragma: no cover - splits is never empty here
        raise ValueError("no splits")
    return rows, classes


def check_data_config(cfg: DataConfig) -> None:
    """Check, without decoding any image, that ``cfg`` can be ingested: its settings are
    complete and the files it names exist (label CSV headers are read); locations may be local
    paths or URIs (``s3://``: asked of the object store). Raises ``ValueError``
    or ``FileNotFoundError`` with a one-line message. ``synthetic`` data is made by the run's
    ``data`` stage and is not checked here."""
    if cfg.format not in FORMATS:
        raise ValueError(f"unknown data format {cfg.format!r}; known: {list(FORMATS)}")
    if not cfg.splits:
        raise ValueError("data.splits is empty")
    if cfg.format == "synthetic":
        return
    _require(cfg, "root", *(("annotations",) if cfg.format in ("coco", "folder") else ()))
    if not _probe(storage.is_dir, cfg.root, "data.root"):
        raise FileNotFoundError(f"data.root: no such folder: {cfg.root}")
    files = [("data.classes_file", cfg.classes_file)] if cfg.classes_file else []
    for split in cfg.splits:
        if cfg.annotations:
            files.append(("data.annotations", cfg.annotations.replace("{split}", split)))
        if cfg.image_labels:
            files.append(("data.image_labels", cfg.image_labels.replace("{split}", split)))
    for key, path in files:
        if not _probe(storage.is_file, path, key):
            raise FileNotFoundError(f"{key}: no such file: {path}")
    if cfg.format == "folder":
        for split in cfg.splits:
            read_labels_csv(cfg.annotations.replace("{split}", split))


def _probe(test: Callable[[str], bool], loc: str, key: str) -> bool:
    """``test(loc)``; an unusable scheme or an unreachable store is a one-line ``ValueError``."""
    storage.check_location(loc, key)
    try:
        return test(loc)
    except OSError as exc:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"{key}: cannot check {loc}: {text}") from exc


def _require(cfg: DataConfig, *keys: str) -> None:
    missing = [k for k in keys if not getattr(cfg, k)]
    if missing:
        names = ", ".join(f"data.{k}" for k in missing)
        raise ValueError(f"format {cfg.format!r} needs {names}")


def summarize_rows(rows: Sequence[Mapping[str, Any]], classes: ClassMap) -> dict[str, Any]:
    """Counts for ``metrics.json``: images/ok/errors per split, errors by reason, classes.

    Error reasons are grouped by :func:`weaksam.data.ingest_core.error_kind` (numbers -> ``#``).
    ``images_per_class`` counts good rows whose labels contain each class.
    """
    splits: dict[str, dict[str, int]] = {}
    reasons: Counter[str] = Counter()
    per_class: Counter[int] = Counter()
    for row in rows:
        s = splits.setdefault(str(row["split"]), {"images": 0, "ok": 0, "errors": 0})
        s["images"] += 1
        if row.get("error"):
            s["errors"] += 1
            reasons[error_kind(str(row["error"]))] += 1
        else:
            s["ok"] += 1
            per_class.update(row.get("labels") or [])
    return {
        "num_images": len(rows),
        "num_errors": sum(reasons.values()),
        "splits": splits,
        "errors_by_reason": dict(reasons.most_common()),
        "num_classes": classes.num_classes,
        "classes": list(classes.names),
        "images_per_class": {n: per_class[i] for i, n in enumerate(classes.names)},
    }


def format_summary(summary: Mapping[str, Any], max_reasons: int = 10) -> str:
    """A short human-readable table of :func:`summarize_rows`' output."""
    lines = [f"{'split':<16}{'images':>8}{'ok':>8}{'errors':>8}"]
    for split, c in summary["splits"].items():
        lines.append(f"{split:<16}{c['images']:>8}{c['ok']:>8}{c['errors']:>8}")
    reasons = list(summary["errors_by_reason"].items())
    if reasons:
        lines.append("errors by reason:")
        lines += [f"  {n:>6}  {r}" for r, n in reasons[:max_reasons]]
        if len(reasons) > max_reasons:
            lines.append(f"  ... and {len(reasons) - max_reasons} more reasons")
    names = summary["classes"]
    shown = ", ".join(names[:20]) + (f", ... ({len(names) - 20} more)" if len(names) > 20 else "")
    lines.append(f"classes ({summary['num_classes']}): {shown}")
    return "\n".join(lines)
