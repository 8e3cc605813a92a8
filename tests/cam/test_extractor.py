"""PeakExtractor called directly on dict batches (no Ray): classes, no label leak, errors."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import torch

from weaksam.cam.config import ClassifierConfig, PeakStageConfig
from weaksam.cam.extractor import PeakExtractor
from weaksam.cam.models import build_classifier
from weaksam.cam.training import export_classifier
from weaksam.configlib import to_dict
from weaksam.io.classes import ClassMap
from weaksam.io.schemas import POINTS
from weaksam.io.tables import read_table

PEAKS = PeakStageConfig(kernel=17, kernel_ref_side=80, threshold=0.5, batch_size=4)


@pytest.fixture
def checkpoint(tmp_path: Any, cam_classes: ClassMap, tiny_cls_cfg: ClassifierConfig) -> str:
    torch.manual_seed(0)
    model = build_classifier(tiny_cls_cfg, cam_classes.num_classes)
    state = {"model": model.state_dict(), "classifier_config": to_dict(tiny_cls_cfg),
             "num_classes": cam_classes.num_classes, "epoch": 0}  # fmt: skip
    path = str(tmp_path / "classifier.pt")
    export_classifier(state, path, list(cam_classes.names))
    return path


def _batch(rows: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Columns as Ray Data hands them to a numpy-format UDF (object arrays for lists/None)."""
    out: dict[str, np.ndarray] = {}
    for key in ("image_id", "image_index", "path", "split", "labels", "error"):
        col = np.empty(len(rows), dtype=object)
        for i, r in enumerate(rows):
            v = r.get(key)
            col[i] = np.asarray(v, dtype=np.int32) if key == "labels" and v is not None else v
        out[key] = col if key != "image_index" else col.astype(np.int64)
    return out


def _manifest_rows(manifest: str) -> list[dict[str, Any]]:
    return read_table(manifest, "manifest").to_pylist()


def test_output_follows_the_points_contract(
    checkpoint: str, tiny_manifest: str, cam_classes: ClassMap
) -> None:
    rows = _manifest_rows(tiny_manifest)[:3]
    extractor = PeakExtractor(checkpoint, to_dict(PEAKS), ["train"], cam_classes.to_json())
    tbl = extractor(_batch(rows))
    assert extractor(pa.Table.from_pylist(rows)).to_pylist() == tbl.to_pylist()  # Arrow batches
    assert tbl.schema.remove_metadata() == POINTS.remove_metadata()
    assert tbl.schema.metadata[b"weaksam.table"] == b"points"
    assert b"weaksam.classes" in tbl.schema.metadata
    for out, row in zip(tbl.to_pylist(), rows, strict=True):
        assert out["error"] is None and out["image_id"] == row["image_id"]
        assert (out["height"], out["width"]) == (40, 40)
        n = len(out["point_classes"])
        assert (
            len(out["points"])
            == 2 * n
            == 2 * len(out["point_scores"])
            == 2 * len(out["point_kinds"])
        )
        xy = np.asarray(out["points"]).reshape(-1, 2)
        assert np.all((xy >= 0) & (xy <= 40))
        assert set(out["point_kinds"]) == {"cam", "refined"}
        # training split: the classes are the image-level labels, each with >= 1 point per kind
        assert set(out["point_classes"]) == set(row["labels"])
        for c in row["labels"]:
            for kind in ("cam", "refined"):
                assert any(
                    pc == c and k == kind
                    for pc, k in zip(out["point_classes"], out["point_kinds"], strict=True)
                )
        assert max(out["point_scores"]) == pytest.approx(1.0, abs=1e-3)


def test_test_split_never_reads_labels(checkpoint: str, tiny_manifest: str) -> None:
    extractor = PeakExtractor(checkpoint, PEAKS, ["train"])
    row = next(r for r in _manifest_rows(tiny_manifest) if r["split"] == "test")
    honest = extractor(_batch([row])).to_pylist()[0]
    tampered = extractor(_batch([dict(row, labels=[0, 1, 2])])).to_pylist()[0]
    missing = extractor(_batch([dict(row, labels=None)])).to_pylist()[0]
    assert honest == tampered == missing
    assert honest["error"] is None and honest["point_classes"]
    # the same image as a training image takes its (tampered) labels instead
    as_train = extractor(_batch([dict(row, split="train", labels=[0, 1, 2])])).to_pylist()[0]
    assert set(as_train["point_classes"]) == {0, 1, 2}


def test_actor_given_the_manifest_reads_rows_itself(checkpoint: str, tiny_manifest: str) -> None:
    """Ids alone in the batch: the same points as the full rows; the test split's labels are
    not even held by the actor."""
    rows = _manifest_rows(tiny_manifest)
    extractor = PeakExtractor(checkpoint, PEAKS, ["train"], manifest=tiny_manifest)
    assert extractor.rows is not None
    assert all(
        r["labels"] is None for r in extractor.rows.values() if r["split"] != "train"
    ) and any(r["labels"] for r in extractor.rows.values())
    pick = [next(r for r in rows if r["split"] == s) for s in ("train", "test")]
    by_id = extractor(pa.table({"image_id": [r["image_id"] for r in pick]})).to_pylist()
    full = PeakExtractor(checkpoint, PEAKS, ["train"])(_batch(pick)).to_pylist()
    assert by_id == full and all(r["error"] is None for r in by_id)


def test_bad_rows_become_error_rows(checkpoint: str, tiny_manifest: str, tmp_path: Any) -> None:
    good = _manifest_rows(tiny_manifest)[0]
    broken = str(tmp_path / "broken.png")
    with open(broken, "wb") as fh:
        fh.write(b"\x89PNG\r\n\x1a\n not really")
    rows = [
        dict(good, image_id="missing", path=str(tmp_path / "nope.png")),
        dict(good, image_id="broken", path=broken),
        dict(good, image_id="ingest", error="unknown class 'cat'"),
        dict(good, image_id="nolabels", labels=[]),
        good,
        dict(good, image_id="nan-error", error=float("nan")),  # a null as Ray's numpy batches
    ]
    out = PeakExtractor(checkpoint, PEAKS, ["train"])(_batch(rows)).to_pylist()
    errors = {r["image_id"]: r["error"] for r in out}
    assert errors["missing"] == "file not found"
    assert errors["broken"] and errors["ingest"] == "ingest: unknown class 'cat'"
    assert errors["nolabels"] == "no image-level labels" and errors[good["image_id"]] is None
    assert errors["nan-error"] is None
    for r in out[:4]:
        assert r["points"] == [] and r["point_classes"] == []
    assert os.path.exists(good["path"])


def test_kernel_scales_with_image_size() -> None:
    cfg = PeakStageConfig(kernel=17, kernel_ref_side=500)
    assert cfg.kernel_for(375, 500) == 17
    assert cfg.kernel_for(256, 256) == 9
    assert cfg.kernel_for(20, 20) == 3
    assert PeakStageConfig(kernel=17).kernel_for(256, 256) == 17  # fixed by default (WeakSAM)
    with pytest.raises(ValueError):
        PeakStageConfig(scales=(0.8, 1.0))
    with pytest.raises(ValueError):
        PeakStageConfig(map_kinds=("cross",))
