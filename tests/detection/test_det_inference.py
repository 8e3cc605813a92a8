"""The batch predictor called directly on a dict batch; checkpoint export and strict load."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from weaksam.configlib import to_dict
from weaksam.detection.config import DetectorModelConfig
from weaksam.detection.inference import (
    DetectorBatchPredictor,
    export_checkpoint,
    export_detector,
    inference_inputs,
    load_detector,
)
from weaksam.detection.model import build_detector, init_detector
from weaksam.io.rle import decode_masks
from weaksam.io.schemas import validate_table
from weaksam.io.tables import read_table
from weaksam.runs import manifest_path


def _checkpoint(tmp_path, cfg: DetectorModelConfig, masks: bool) -> str:
    torch.manual_seed(0)
    model = build_detector(cfg, 6, masks=masks)
    # a permissive head so that random weights still produce detections
    model.roi_heads.score_thresh = 0.0
    state = {
        "model": model.state_dict(),
        "model_config": {**to_dict(cfg), "score_thresh": 0.0},
        "roi_drop": {},
        "masks": masks,
        "num_classes": 6,
        "class_names": list("abcdef"),
        "variant": "test",
        "step": 0,
        "history": [],
    }
    return export_checkpoint(state, str(tmp_path / f"model_{masks}.pt"))


@pytest.mark.parametrize("masks", [False, True])
def test_predictor_direct_call_with_bad_image(
    tmp_path, det_run: str, tiny_model: DetectorModelConfig, masks: bool
) -> None:
    rows = [r for r in read_table(manifest_path(det_run)).to_pylist() if r["split"] == "test"]
    rows[1] = {**rows[1], "path": str(tmp_path / "missing.png")}
    rows[2] = {**rows[2], "error": "corrupt at ingest"}
    batch = {k: np.asarray(v) for k, v in inference_inputs(rows).to_pydict().items()}
    pred = DetectorBatchPredictor(_checkpoint(tmp_path, tiny_model, masks))
    out = validate_table(pred(batch), "detections").to_pylist()
    assert [r["image_id"] for r in out] == [r["image_id"] for r in rows]
    assert out[0]["error"] is None and out[1]["error"] and out[2]["error"] == "corrupt at ingest"
    good = out[0]
    n = len(good["scores"])
    assert n > 0 and len(good["boxes"]) == 4 * n and len(good["classes"]) == n
    assert min(good["classes"]) >= 0 and max(good["classes"]) < 6
    if masks:
        dense = decode_masks(good["masks"], good["height"], good["width"])
        assert dense.shape == (n, 96, 96)
    else:
        assert good["masks"] is None


def test_predictor_reads_its_split_from_the_manifest(
    tmp_path, det_run: str, tiny_model: DetectorModelConfig
) -> None:
    """Given the manifest, an actor takes ids alone and looks up their rows itself: the same
    detections as the rows in the batch; ids of another split are dropped."""
    manifest = manifest_path(det_run)
    rows = [r for r in read_table(manifest).to_pylist() if r["split"] == "test"]
    other = next(r for r in read_table(manifest).to_pylist() if r["split"] != "test")
    ckpt = _checkpoint(tmp_path, tiny_model, False)
    full = {k: np.asarray(v) for k, v in inference_inputs(rows).to_pydict().items()}
    want = DetectorBatchPredictor(ckpt)(full).to_pylist()
    pred = DetectorBatchPredictor(ckpt, manifest=manifest, split="test")
    ids = np.asarray([other["image_id"], *(r["image_id"] for r in rows)])
    got = pred({"image_id": ids}).to_pylist()
    assert [r["image_id"] for r in got] == [r["image_id"] for r in rows]
    for g, w in zip(got, want, strict=True):
        assert g["boxes"] == pytest.approx(w["boxes"]) and g["classes"] == w["classes"]


def test_load_is_strict(tmp_path, tiny_model: DetectorModelConfig) -> None:
    path = _checkpoint(tmp_path, tiny_model, False)
    model, meta = load_detector(path)
    assert meta["class_names"] == list("abcdef") and not model.training
    assert model.transform.min_size == (tiny_model.test_size,)
    ckpt = torch.load(path, weights_only=True)
    ckpt["model"].pop(next(iter(ckpt["model"])))
    torch.save(ckpt, path)
    with pytest.raises(RuntimeError, match="Missing key"):
        load_detector(path)


@pytest.mark.parametrize("masks", [False, True])
def test_export_detector_round_trip(tmp_path, tiny_model: DetectorModelConfig, masks: bool) -> None:
    """A model in hand (``init_detector``: seeded, ready for inference) exported as the stages'
    ``model.pt`` loads back, through the stages' loader, to the same weights."""
    model = init_detector(tiny_model, 3, masks=masks, seed=5)
    assert not model.training and model.transform.min_size == (tiny_model.test_size,)
    again = init_detector(tiny_model, 3, masks=masks, seed=5)
    for (k, v), w in zip(model.state_dict().items(), again.state_dict().values(), strict=True):
        torch.testing.assert_close(v, w, msg=k)
    path = export_detector(
        model, str(tmp_path / "model.pt"), model_config=tiny_model, class_names=["a", "b", "c"]
    )
    loaded, meta = load_detector(path)
    assert (
        meta["masks"] is masks
        and meta["num_classes"] == 3
        and meta["class_names"] == ["a", "b", "c"]
    )
    assert meta["model_config"] == to_dict(tiny_model) and meta["roi_drop"]["enabled"] is False
    for (k, v), w in zip(model.state_dict().items(), loaded.state_dict().values(), strict=True):
        torch.testing.assert_close(v, w, msg=k)
