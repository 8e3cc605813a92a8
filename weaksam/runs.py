"""The run directory: ``runs/<name>/`` with the resolved config and one folder per stage.

Each stage folder holds its outputs, a ``metrics.json`` and a ``_SUCCESS`` marker written last;
the marker records the hash of the stage's resolved config so a pipeline can skip fresh stages.
A run folder is a local path, ``file://`` or ``s3://`` location; every path helper, marker and
metrics file here goes through :mod:`weaksam.storage` (local bytes as before).
"""

from __future__ import annotations

import functools
import glob
import hashlib
import os
import time
import uuid
from collections.abc import Mapping
from typing import Any

from weaksam import storage

SUCCESS = "_SUCCESS"
STARTED = "_STARTED"
METRICS = "metrics.json"
WEIGHT_KEYS: tuple[str, ...] = ("weights", "checkpoint")
ASSETS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets")


@functools.lru_cache(maxsize=64)
def _digest(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with storage.open_input(path) as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_digest(path: str) -> str:
    """SHA-256 of a file's bytes (``""`` for no path); cached per (path, size, mtime), so a
    2.5 GB SAM checkpoint is read once per process."""
    if not path:
        return ""
    if storage.is_remote(path):  # an object store: its size and last-modified time
        fs, p = storage.resolve(path)
        info = fs.get_file_info(p)
        if info.type != storage.pafs.FileType.File:
            raise FileNotFoundError(f"no file at {path}")
        return _digest(path, int(info.size or 0), int(info.mtime_ns or 0))
    st = os.stat(path)
    return _digest(os.path.abspath(path), st.st_size, st.st_mtime_ns)


def weight_values(node: Any, prefix: str = "") -> list[tuple[str, str]]:
    """``(dotted key, value)`` of every string under a key of :data:`WEIGHT_KEYS`, at any depth
    of a :func:`weaksam.configlib.to_dict` tree (lists included), in tree order."""
    out: list[tuple[str, str]] = []
    if isinstance(node, Mapping):
        for key, value in node.items():
            full = f"{prefix}.{key}" if prefix else str(key)
            if key in WEIGHT_KEYS and isinstance(value, str):
                out.append((full, value))
            else:
                out += weight_values(value, full)
    elif isinstance(node, list | tuple):
        for i, value in enumerate(node):
            out += weight_values(value, f"{prefix}[{i}]")
    return out


def weight_files(section: Any) -> list[str]:
    """The local files a config section (a :func:`weaksam.configlib.to_dict` dict) loads
    weights from: values of the keys in :data:`WEIGHT_KEYS` at any depth that name an existing
    file, and for ``builtin`` every committed asset (``weaksam/assets/*.pt``). Sorted, unique.
    URIs and missing paths are left out (the path itself is in the config hash)."""
    found: set[str] = set()
    for _, value in weight_values(section):
        if value == "builtin":
            found.update(glob.glob(os.path.join(ASSETS_DIR, "*.pt")))
        elif value and os.path.isfile(value):
            found.add(os.path.abspath(value))
    return sorted(found)


# --- Paths inside a run folder -------------------------------------------------------------
# Every module names a run's files through these helpers, never with literal paths, so the
# layout is written down once (docs/architecture.md draws it).

RESOLVED_CONFIG = "config.resolved.yaml"
RESULTS = "results.json"


def data_dir(run_dir: str) -> str:
    """``<run>/data``: the synthetic dataset the ``data`` stage generates."""
    return storage.join(run_dir, "data")


def manifest_path(run_dir: str) -> str:
    """``<run>/ingest/manifest.parquet``: the ``manifest`` table."""
    return storage.join(run_dir, "ingest", "manifest.parquet")


def classifier_path(run_dir: str) -> str:
    """``<run>/classify/classifier.pt``: the trained CAM classifier."""
    return storage.join(run_dir, "classify", "classifier.pt")


def points_path(run_dir: str) -> str:
    """``<run>/peaks/points.parquet``: the ``points`` table (a folder of Parquet parts)."""
    return storage.join(run_dir, "peaks", "points.parquet")


def proposals_path(run_dir: str) -> str:
    """``<run>/proposals/shards``: the ``proposals`` table (a folder of Parquet parts)."""
    return storage.join(run_dir, "proposals", "shards")


def detections_file(folder: str, split: str) -> str:
    """``<folder>/detections_<split>.parquet``: a detector's ``detections`` table of ``split``
    in its output folder (a stage folder, or ``wsod/compare/<method>``)."""
    return storage.join(folder, f"detections_{split}.parquet")


def detection_parts(folder: str) -> str:
    """``<folder>/detections_parts``: the Parquet parts the inference actors write (every
    split), removed once ``detections_<split>.parquet`` are written from them."""
    return storage.join(folder, "detections_parts")


def detections_path(run_dir: str, stage: str, split: str) -> str:
    """``<run>/<stage>/detections_<split>.parquet``: a stage's ``detections`` table."""
    return detections_file(storage.join(run_dir, stage), split)


PGT_TABLE = "pgt.parquet"
PGT_COCO = "pgt_coco.json"


def pgt_path(run_dir: str) -> str:
    """``<run>/pgt/pgt.parquet``: the ``pgt`` table."""
    return storage.join(run_dir, "pgt", PGT_TABLE)


def pgt_coco_path(run_dir: str) -> str:
    """``<run>/pgt/pgt_coco.json``: the PGT as COCO instances for training."""
    return storage.join(run_dir, "pgt", PGT_COCO)


def model_file(folder: str) -> str:
    """``<folder>/model.pt``: an exported detector in its output folder."""
    return storage.join(folder, "model.pt")


def model_path(run_dir: str, stage: str) -> str:
    """``<run>/<stage>/model.pt``: the exported model of ``wsod``, ``retrain`` or ``wsis``."""
    return model_file(storage.join(run_dir, stage))


def resolved_config_path(run_dir: str) -> str:
    """``<run>/config.resolved.yaml``: the config the run's stages ran with."""
    return storage.join(run_dir, RESOLVED_CONFIG)


def results_path(run_dir: str) -> str:
    """``<run>/results.json``: the pipeline's headline figures."""
    return storage.join(run_dir, RESULTS)


def relative_to_run(path: str, run_dir: str) -> str:
    """``path`` relative to ``run_dir`` when it lies inside it, else unchanged (absolute).

    Tables store paths into their own run folder this way so that the folder can be moved or
    copied; dataset paths outside the run stay absolute. See :func:`resolve_in_run`.
    """
    if not path:
        return path
    if storage.is_uri(path) or storage.is_uri(run_dir):
        root = storage.normalize(run_dir).rstrip("/") + "/"
        full = storage.normalize(path) if storage.is_uri(path) else path
        return full[len(root) :] if full.startswith(root) else path
    full, root = os.path.abspath(path), os.path.abspath(run_dir)
    if full.startswith(root.rstrip(os.sep) + os.sep):
        return os.path.relpath(full, root)
    return path


def resolve_in_run(path: str, run_dir: str) -> str:
    """The inverse of :func:`relative_to_run`: a relative ``path`` is joined to ``run_dir``."""
    if not path or storage.is_uri(path) or os.path.isabs(path):
        return path
    if storage.is_uri(run_dir):
        return storage.normalize(storage.join(run_dir, path))
    return os.path.join(run_dir, path)


def write_metrics(out_dir: str, metrics: dict[str, Any], name: str = METRICS) -> str:
    """Write ``metrics`` as pretty JSON into ``out_dir``; return the path."""
    storage.makedirs(out_dir)
    path = storage.join(out_dir, name)
    storage.write_json(path, metrics, indent=2, default=_json_default)
    return path


def read_metrics(out_dir: str, name: str = METRICS) -> dict[str, Any]:
    out: dict[str, Any] = storage.read_json(storage.join(out_dir, name))
    return out


def mark_success(out_dir: str, config_hash: str = "", **info: Any) -> None:
    """Write the ``_SUCCESS`` marker last: the stage's config hash, a fresh ``run_id`` (what
    dependants record as their input), a timestamp and ``info`` (the runner's ``key``,
    ``seconds``)."""
    payload = {
        "config_hash": config_hash,
        "run_id": uuid.uuid4().hex,
        "finished_at": time.time(),
        **info,
    }
    _write_marker(storage.join(out_dir, SUCCESS), payload)


def _read_marker(path: str) -> Any:
    """The JSON at ``path``; None when missing or unreadable."""
    try:
        return storage.read_json(path)
    except (OSError, ValueError):  # missing, unreadable, not UTF-8, not JSON
        return None


def read_success(out_dir: str) -> dict[str, Any] | None:
    """The ``_SUCCESS`` marker of ``out_dir`` (None when missing or unreadable)."""
    data = _read_marker(storage.join(out_dir, SUCCESS))
    return data if isinstance(data, dict) else None


def is_complete(out_dir: str, config_hash: str | None = None) -> bool:
    """True if ``out_dir`` has a marker (and, when given, for the same config hash)."""
    marker = read_success(out_dir)
    if marker is None:
        return False
    return config_hash is None or marker.get("config_hash") == config_hash


def mark_started(out_dir: str, key: str) -> None:
    """Record that a run of the stage with ``key`` began writing into ``out_dir``."""
    _write_marker(storage.join(out_dir, STARTED), {"key": key, "started_at": time.time()})


def started_key(out_dir: str) -> str | None:
    """The key of the last run that began in ``out_dir`` (None if unknown)."""
    data = _read_marker(storage.join(out_dir, STARTED))
    value = data.get("key") if isinstance(data, dict) else None
    return str(value) if value is not None else None


def _write_marker(path: str, payload: dict[str, Any]) -> None:
    """Compact JSON (keys in insertion order), written atomically."""
    storage.write_json(path, payload, indent=None, default=_json_default)


def reset_stage_dir(out_dir: str) -> None:
    """Delete everything in ``out_dir`` (outputs of another config or a forced rerun)."""
    storage.remove_tree(out_dir)
    storage.makedirs(out_dir)


def clear_success(out_dir: str) -> None:
    storage.remove(storage.join(out_dir, SUCCESS))


def _json_default(obj: Any) -> Any:
    try:
        import numpy as np

        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, np.ndarray):
            return obj.tolist()
    except ImportError:  # pragma: no cover
        pass
    raise TypeError(f"not JSON serialisable: {type(obj)}")
