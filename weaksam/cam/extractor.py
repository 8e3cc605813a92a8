"""``PeakExtractor``: the Ray Data batch class turning manifest rows into ``points`` rows.

One actor holds the trained classifier; each call takes a batch of manifest rows and returns a
``points`` table (:data:`weaksam.io.schemas.POINTS`) with one row per input row:

* training-split images (``label_splits``): the positive classes are the image-level labels;
* every other split: the classes come from the classifier (:func:`predicted_classes`), and
  the ``labels`` column is never read, whatever it holds;
* per positive class and map kind, :func:`weaksam.cam.peaks.extract_peaks` gives the points,
  ``(x, y)`` in original-image pixels (pixel centres), with the normalised map value as score
  and the map kind (``cam`` / ``refined``) in ``point_kinds``;
* an ingest error, an undecodable image or a training image without labels gives an error row.

Callable directly on a ``dict`` batch without Ray (tests, notebooks).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from weaksam.cam.config import PeakStageConfig
from weaksam.cam.maps import ClassMaps, compute_class_maps
from weaksam.cam.peaks import PeakConfig, extract_peaks
from weaksam.cam.training import load_classifier
from weaksam.configlib import from_dict
from weaksam.data.imageio import ImageDecodeError, load_image
from weaksam.io.classes import ClassMap
from weaksam.io.schemas import empty_row, error_row, rows_to_table
from weaksam.io.tables import read_table

log = logging.getLogger(__name__)

INPUT_COLUMNS: tuple[str, ...] = ("image_id", "image_index", "path", "split", "labels", "error")


def points_from_maps(
    cmaps: ClassMaps, cfg: PeakStageConfig, height: int, width: int
) -> dict[str, list[Any]]:
    """The ``points``, ``point_classes``, ``point_scores``, ``point_kinds`` lists of one image.

    Order: by class (ascending), then map kind in ``cfg.map_kinds`` order, then score.
    """
    peak_cfg = PeakConfig(cfg.kernel_for(height, width), cfg.top_k, cfg.threshold)
    pts: list[float] = []
    cls: list[int] = []
    scores: list[float] = []
    kinds: list[str] = []
    for k, c in enumerate(cmaps.classes):
        for kind in cfg.map_kinds:
            found = extract_peaks(cmaps.maps[kind][k].cpu(), peak_cfg)
            pts.extend(found[:, :2].reshape(-1).tolist())
            scores.extend(found[:, 2].tolist())
            cls.extend([int(c)] * len(found))
            kinds.extend([kind] * len(found))
    return {"points": pts, "point_classes": cls, "point_scores": scores, "point_kinds": kinds}


def _rows(batch: Mapping[str, Any] | pa.Table) -> list[dict[str, Any]]:
    if isinstance(batch, pa.Table):
        return batch.select([c for c in INPUT_COLUMNS if c in batch.column_names]).to_pylist()
    n = len(batch["image_id"])
    return [{k: batch[k][i] for k in INPUT_COLUMNS if k in batch} for i in range(n)]


def _is_null(value: Any) -> bool:
    """None, or the NaN that Ray Data's numpy batches put in place of a null."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def _labels(value: Any) -> list[int] | None:
    if _is_null(value):
        return None
    return [int(v) for v in np.asarray(value).reshape(-1)]


class PeakExtractor:
    """Ray Data UDF: manifest rows → ``points`` rows (see the module docstring).

    Args:
        checkpoint: the classifier file written by the ``classify`` stage.
        peaks: the ``peaks`` section (a :class:`PeakStageConfig` or its dict).
        label_splits: splits whose image-level labels give the classes (the training split).
        classes: the class map stored in the output table's metadata (optional).
        device: ``auto`` (CUDA when visible), ``cpu`` or ``cuda``.
        threads: torch CPU threads of this actor.
        manifest: when given, each batch carries ``image_id`` only and the actor reads the
            rows from this manifest itself (the labels of other splits left out).
    """

    def __init__(
        self,
        checkpoint: str,
        peaks: PeakStageConfig | Mapping[str, Any],
        label_splits: Sequence[str],
        classes: ClassMap | str | None = None,
        device: str = "auto",
        threads: int = 1,
        manifest: str = "",
    ) -> None:
        torch.set_num_threads(threads)
        self.label_splits = frozenset(label_splits)
        self.rows: dict[str, dict[str, Any]] | None = None
        if manifest:  # batches carry ids; labels kept for the label splits only
            tbl = read_table(manifest, columns=INPUT_COLUMNS)
            self.rows = {
                str(r["image_id"]): {
                    **r,
                    "labels": r["labels"] if r["split"] in self.label_splits else None,
                }
                for r in tbl.to_pylist()
            }
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.cfg = (
            peaks if isinstance(peaks, PeakStageConfig) else from_dict(peaks, PeakStageConfig)
        )
        self.model, self.cls_cfg, names = load_classifier(checkpoint, device)
        if isinstance(classes, str):
            classes = ClassMap.from_json(classes)
        self.classes = classes or ClassMap.from_names(names)

    def process_row(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """One manifest row (``INPUT_COLUMNS``) → one ``points`` row."""
        image_id, index = str(row["image_id"]), int(row["image_index"])
        if not _is_null(row.get("error")):
            return error_row("points", image_id, index, f"ingest: {row['error']}")
        classes: list[int] | None = None
        if str(row["split"]) in self.label_splits:
            classes = _labels(row.get("labels"))
            if not classes:
                return error_row("points", image_id, index, "no image-level labels")
        try:
            image = load_image(str(row["path"]))
        except ImageDecodeError as exc:
            return error_row("points", image_id, index, str(exc))
        h, w = image.shape[:2]
        cmaps = compute_class_maps(self.model, image, self.cls_cfg.input_size, self.cfg, classes)
        return empty_row(
            "points", image_id, index, height=h, width=w, **points_from_maps(cmaps, self.cfg, h, w)
        )

    def __call__(self, batch: Mapping[str, Any] | pa.Table) -> pa.Table:
        """A batch of manifest columns (a dict of numpy arrays or lists, or an Arrow table;
        ``image_id`` alone for an actor given the ``manifest``) → a ``points`` table."""
        given = _rows(batch)
        if self.rows is not None:
            given = [self.rows[str(r["image_id"])] for r in given]
        rows = [self.process_row(r) for r in given]
        return rows_to_table(rows, "points", self.classes.to_metadata())
