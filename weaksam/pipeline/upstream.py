"""Reusing an *upstream* run's stages: ``upstream: runs/bench`` in a config.

A run that names an upstream run folder takes each selected stage that is not fresh in its own
folder, and whose upstream folder has a ``_SUCCESS`` marker for exactly the key this run
computes for it (:mod:`weaksam.pipeline.core`: the stage hash over its sections, the seed, its
weight files and its dependencies' hashes, plus the run ids of its dependencies' markers), as
done: ``<run>/<stage>`` becomes a symbolic link to ``<upstream>/<stage>``. The dependants read
the linked stage's marker through the link, so their keys equal the upstream's too, and a chain
of unchanged stages is reused whole; the first stage whose key differs runs in this run's own
folder, and so does everything after it that reads it.

The upstream run is read-only to this run: nothing is written through a link (a stage that must
run here, ``--force`` included, first removes the link, never the files it points at). Links
need a local file system, so ``upstream`` and ``run_root`` must both be local paths (or
``file://``): an object store has no links, and copying a run's outputs there would be the
very work the option saves (the config refuses it, in one line).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from typing import Any

import yaml

from weaksam import storage
from weaksam.runs import read_success, resolved_config_path

log = logging.getLogger(__name__)

__all__ = [
    "check_upstream",
    "link_stage",
    "linked_target",
    "mismatch_reason",
    "unlink_stage",
]


def check_upstream(upstream_dir: str, run_dir: str) -> None:
    """Raise ``FileNotFoundError`` (one line) when ``upstream_dir`` is not a run folder, and
    ``ValueError`` when it is this run's own folder."""
    if not os.path.isdir(upstream_dir):
        raise FileNotFoundError(
            f"upstream: no run folder at {upstream_dir} (run its config first, e.g. `make bench`)"
        )
    here = storage.resolve(run_dir)[1]
    if os.path.realpath(upstream_dir) == os.path.realpath(here):
        raise ValueError(f"upstream: {upstream_dir} is this run's own folder")


def _local(loc: str) -> str:
    return storage.resolve(loc)[1]


def linked_target(out_dir: str) -> str | None:
    """Where the stage folder ``out_dir`` links to (the link's target, absolute), or None
    when it is no link."""
    if storage.is_remote(out_dir):
        return None
    path = _local(out_dir)
    if not os.path.islink(path):
        return None
    return os.path.normpath(os.path.join(os.path.dirname(path), os.readlink(path)))


def unlink_stage(out_dir: str) -> None:
    """Remove ``out_dir`` when it is a link (the link only: the upstream's files stay)."""
    if linked_target(out_dir) is not None:
        os.unlink(_local(out_dir))
        log.info("removed the link %s (the upstream's files are kept)", out_dir)


def link_stage(out_dir: str, upstream_stage_dir: str) -> None:
    """Make ``out_dir`` a link to ``upstream_stage_dir``, replacing what was there (a stale or
    partial folder of this run, or an older link)."""
    path = _local(out_dir)
    unlink_stage(out_dir)
    storage.remove_tree(out_dir)  # this run's own stale or partial outputs
    os.makedirs(os.path.dirname(path), exist_ok=True)
    os.symlink(os.path.abspath(upstream_stage_dir), path, target_is_directory=True)


def _flat(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, Mapping):
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: json.dumps(node, sort_keys=True)}


def _changed_keys(
    mine: Mapping[str, Any], upstream_dir: str, sections: tuple[str, ...]
) -> list[str]:
    """Dotted keys of ``sections`` (and ``seed``) whose values differ from the upstream's
    ``config.resolved.yaml`` (empty when it is missing or unreadable)."""
    try:
        theirs = yaml.safe_load(storage.read_text(resolved_config_path(upstream_dir))) or {}
    except (OSError, yaml.YAMLError):
        return []
    keys = ("seed", *sections)
    a = _flat({k: mine.get(k) for k in keys})
    b = _flat({k: theirs.get(k) for k in keys})
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


def mismatch_reason(
    stage: str,
    hashes: Mapping[str, str],
    inputs: Mapping[str, str | None],
    upstream_dir: str,
    config: Mapping[str, Any],
    sections: tuple[str, ...],
) -> str:
    """Why the upstream's ``stage`` cannot be reused, in one line: it has no marker; its stage
    hash differs (which of the stage's own keys, read from the upstream's resolved config, or
    which dependency's hash, or else a weight file); or its dependency ``inputs`` (this run's
    run ids of the dependencies' markers) are not the upstream's. ``hashes``: this run's stage
    hashes (:func:`weaksam.pipeline.core.stage_hashes`); ``config``: this run's config dict."""
    marker = read_success(storage.join(upstream_dir, stage))
    if marker is None:
        return f"the upstream has no {stage}/_SUCCESS"
    deps = {d: read_success(storage.join(upstream_dir, d)) or {} for d in inputs}
    if marker.get("config_hash") != hashes[stage]:
        changed = _changed_keys(config, upstream_dir, sections)
        dep_changed = [d for d in inputs if deps[d].get("config_hash") != hashes.get(d)]
        if changed:
            what = f"keys {', '.join(changed[:6])}{' ...' if len(changed) > 6 else ''} differ"
        elif dep_changed:
            what = f"the hash of its dependency {', '.join(dep_changed)} differs"
        else:
            what = "its keys and dependencies are equal: a weight file differs"
        theirs = marker.get("config_hash")
        return f"stage hash differs (here {hashes[stage]}, upstream {theirs}): {what}"
    ran_here = [d for d in inputs if inputs[d] != deps[d].get("run_id")]
    if ran_here:
        return f"same stage hash, but its inputs {', '.join(ran_here)} are not the upstream's"
    return "same stage hash and inputs, but the upstream's marker is stale (inputs rebuilt later)"
