"""The run directory: ``runs/<name>/`` with the resolved config and one folder per stage.

Each stage folder holds its outputs, a ``metrics.json`` and a ``_SUCCESS`` marker written last;
the marker records the hash of the stage's resolved config so a pipeline can skip fresh stages.
"""

from __future__ import annotations

import functools
import glob
import hashlib
import json
import os
import time
from collections.abc import Mapping
from typing import Any

SUCCESS = "_SUCCESS"
STARTED = "_STARTED"
METRICS = "metrics.json"
WEIGHT_KEYS: tuple[str, ...] = ("weights", "checkpoint")
ASSETS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets")


@functools.lru_cache(maxsize=64)
def _digest(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_digest(path: str) -> str:
    """SHA-256 of a file's bytes (``""`` for no path); cached per (path, size, mtime), so a
    2.5 GB SAM checkpoint is read once per process."""
    if not path:
        return ""
    st = os.stat(path)
    return _digest(os.path.abspath(path), st.st_size, st.st_mtime_ns)


def weight_files(section: Any) -> list[str]:
    """The local files a config section (a :func:`weaksam.configlib.to_dict` dict) loads
    weights from: values of the keys in :data:`WEIGHT_KEYS` at any depth that name an existing
    file, and for ``builtin`` every committed asset (``weaksam/assets/*.pt``). Sorted, unique.
    URIs and missing paths are left out (the path itself is in the config hash)."""
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, Mapping):
            for key, value in node.items():
                if key in WEIGHT_KEYS and isinstance(value, str) and value:
                    if value == "builtin":
                        found.update(glob.glob(os.path.join(ASSETS_DIR, "*.pt")))
                    elif os.path.isfile(value):
                        found.add(os.path.abspath(value))
                else:
                    walk(value)
        elif isinstance(node, list | tuple):
            for value in node:
                walk(value)

    walk(section)
    return sorted(found)


def stage_dir(run_dir: str, stage: str) -> str:
    """``<run_dir>/<stage>``, created if missing."""
    path = os.path.join(run_dir, stage)
    os.makedirs(path, exist_ok=True)
    return path


def write_metrics(out_dir: str, metrics: dict[str, Any], name: str = METRICS) -> str:
    """Write ``metrics`` as pretty JSON into ``out_dir``; return the path."""
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, name)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(metrics, fh, indent=2, sort_keys=True, default=_json_default)
    os.replace(tmp, path)
    return path


def read_metrics(out_dir: str, name: str = METRICS) -> dict[str, Any]:
    with open(os.path.join(out_dir, name), encoding="utf-8") as fh:
        out: dict[str, Any] = json.load(fh)
    return out


def mark_success(out_dir: str, config_hash: str = "", **info: Any) -> None:
    """Write the ``_SUCCESS`` marker last, with the stage's config hash and a timestamp."""
    payload = {"config_hash": config_hash, "finished_at": time.time(), **info}
    with open(os.path.join(out_dir, SUCCESS), "w", encoding="utf-8") as fh:
        json.dump(payload, fh, default=_json_default)


def is_complete(out_dir: str, config_hash: str | None = None) -> bool:
    """True if ``out_dir`` has a marker (and, when given, for the same config hash)."""
    path = os.path.join(out_dir, SUCCESS)
    if not os.path.exists(path):
        return False
    if config_hash is None:
        return True
    try:
        with open(path, encoding="utf-8") as fh:
            return bool(json.load(fh).get("config_hash") == config_hash)
    except (OSError, json.JSONDecodeError):
        return False


def mark_started(out_dir: str, config_hash: str) -> None:
    """Record that a run of the stage with ``config_hash`` began writing into ``out_dir``."""
    with open(os.path.join(out_dir, STARTED), "w", encoding="utf-8") as fh:
        json.dump({"config_hash": config_hash, "started_at": time.time()}, fh)


def started_hash(out_dir: str) -> str | None:
    """The config hash of the last run that began in ``out_dir`` (None if unknown)."""
    try:
        with open(os.path.join(out_dir, STARTED), encoding="utf-8") as fh:
            value = json.load(fh).get("config_hash")
    except (OSError, json.JSONDecodeError):
        return None
    return str(value) if value is not None else None


def reset_stage_dir(out_dir: str) -> None:
    """Delete everything in ``out_dir`` (outputs of another config or a forced rerun)."""
    import shutil

    if os.path.isdir(out_dir):
        shutil.rmtree(out_dir)
    os.makedirs(out_dir, exist_ok=True)


def clear_success(out_dir: str) -> None:
    path = os.path.join(out_dir, SUCCESS)
    if os.path.exists(path):
        os.remove(path)


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
