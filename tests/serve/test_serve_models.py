"""serve.detectors and serve.segmenter: the adapters equal the library calls they wrap."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from serve_helpers import make_config, save_tiny_detector, scene

from serve.detectors import (
    ARCHITECTURES,
    DetectorCheckpointError,
    TorchvisionDetector,
    build_detection_model,
    load_detector,
    load_detector_checkpoint,
)
from serve.models import ProposalCall, SegmentCall
from serve.segmenter import Segmenter
from weaksam.io.rle import decode_masks, encode_masks
from weaksam.sam.build import SamConfig, build_sam
from weaksam.sam.engine import SamPromptEngine


@pytest.fixture(scope="module")
def demo() -> TorchvisionDetector:
    det = load_detector(make_config())
    assert isinstance(det, TorchvisionDetector)
    return det


def test_demo_detector_is_seeded_and_marked_untrained(demo: TorchvisionDetector) -> None:
    assert demo.card.untrained and demo.card.kind == "demo" and demo.card.masks
    assert demo.model_id == "demo-tiny_maskrcnn:seed0"
    again = load_detector(make_config())
    image = scene()
    a, b = demo.predict(image, 0.0, 10), again.predict(image, 0.0, 10)
    np.testing.assert_array_equal(a.boxes, b.boxes)
    assert a.masks == b.masks


def test_detections_are_filtered_sorted_and_in_image(demo: TorchvisionDetector) -> None:
    image = scene()
    full = demo.predict(image, 0.0, 100)
    assert len(full) > 3, "the random demo model should give some boxes at threshold 0"
    assert np.all(np.diff(full.scores) <= 0)
    assert full.boxes.dtype == np.float32 and full.classes.dtype == np.int64
    assert np.all((full.classes >= 0) & (full.classes < 6))
    assert np.all(full.boxes[:, [0, 2]] <= 128) and np.all(full.boxes[:, [1, 3]] <= 96)
    assert full.image_size == (96, 128) and full.masks is not None
    assert decode_masks(full.masks, 96, 128).shape == (len(full), 96, 128)
    top = demo.predict(image, 0.0, 2)
    np.testing.assert_array_equal(top.scores, full.scores[:2])
    thr = float(full.scores[len(full) // 2])
    assert np.all(demo.predict(image, thr, 100).scores >= thr)


def test_batch_equals_single_images(demo: TorchvisionDetector) -> None:
    images = [scene(seed=s) for s in range(3)]
    batch = demo.predict_batch(images, [0.0, 0.1, 0.0], [5, 5, 3])
    for im, thr, k, got in zip(images, [0.0, 0.1, 0.0], [5, 5, 3], batch, strict=True):
        one = demo.predict(im, thr, k)
        np.testing.assert_allclose(got.boxes, one.boxes, atol=1e-3)
        np.testing.assert_allclose(got.scores, one.scores, atol=1e-5)
        np.testing.assert_array_equal(got.classes, one.classes)
    assert demo.predict_batch([], [], []) == []


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    path = save_tiny_detector(tmp_path / "det.pt", architecture="tiny_fasterrcnn")
    model, config = load_detector_checkpoint(path)
    assert config["architecture"] == "tiny_fasterrcnn" and len(config["class_names"]) == 6
    torch.manual_seed(1)  # the weights save_tiny_detector drew
    reference = build_detection_model("tiny_fasterrcnn", num_classes=7, min_size=128, max_size=128)
    for key, value in reference.state_dict().items():
        torch.testing.assert_close(model.state_dict()[key], value)
    cfg = make_config("detector.kind=torchvision", f"detector.checkpoint={path}")
    det = load_detector(cfg)
    assert det.card.kind == "torchvision" and not det.card.untrained and not det.card.masks
    assert det.model_id.startswith("tiny_fasterrcnn:") and det.card.checkpoint == path
    assert det.predict(scene(), 0.0, 5).masks is None


def test_checkpoint_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_detector_checkpoint(str(tmp_path / "missing.pt"))
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(DetectorCheckpointError):
        load_detector_checkpoint(str(junk))
    pickled = tmp_path / "object.pt"
    torch.save({"model": {}, "config": {"class_names": ["a"]}, "x": argparse.Namespace()}, pickled)
    with pytest.raises(DetectorCheckpointError, match="not a valid"):  # weights_only refuses it
        load_detector_checkpoint(str(pickled))
    path = save_tiny_detector(tmp_path / "det.pt")
    ckpt = torch.load(path, weights_only=True)
    ckpt["model"].pop(next(iter(ckpt["model"])))
    torch.save(ckpt, tmp_path / "missing_key.pt")
    with pytest.raises(DetectorCheckpointError, match="1 missing keys"):
        load_detector_checkpoint(str(tmp_path / "missing_key.pt"))
    ckpt["config"]["architecture"] = "resnet9000"
    torch.save(ckpt, tmp_path / "arch.pt")
    with pytest.raises(DetectorCheckpointError, match="unknown detector architecture"):
        load_detector_checkpoint(str(tmp_path / "arch.pt"))


def test_architecture_table_and_class_count() -> None:
    with pytest.raises(ValueError, match="known"):
        build_detection_model("nope", num_classes=3, min_size=64, max_size=64)
    assert "maskrcnn_resnet50_fpn" in ARCHITECTURES
    model = build_detection_model("tiny_fasterrcnn", num_classes=3, min_size=64, max_size=64)
    with pytest.raises(ValueError, match="2 classes"):
        TorchvisionDetector(model, classes=["a"], model_id="m", architecture="tiny_fasterrcnn")


# --------------------------------------------------------------------------- segmenter


@pytest.fixture(scope="module")
def segmenter(sam_checkpoint: str) -> Segmenter:
    cfg = make_config(f"segmenter.sam.checkpoint={sam_checkpoint}")
    return Segmenter.from_config(cfg.segmenter)


@pytest.fixture(scope="module")
def engine(segmenter: Segmenter, sam_checkpoint: str) -> SamPromptEngine:
    """The library on the same checkpoint, built independently."""
    model = build_sam(SamConfig(model_type="demo", checkpoint=sam_checkpoint, device="cpu"))
    return SamPromptEngine(model, segmenter.engine_cfg)


def test_segmenter_card(segmenter: Segmenter, sam_checkpoint: str) -> None:
    card = segmenter.card
    assert card.role == "segmenter" and not card.untrained and card.checkpoint == sam_checkpoint
    assert card.model_id.startswith("sam-demo:")


def test_builtin_sam_falls_back_to_seeded_random_weights(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Before the demo SAM is committed, ``builtin`` serves seeded random weights."""
    missing = str(tmp_path / "demo_sam.pt")
    monkeypatch.setattr(
        "serve.segmenter.resolve_checkpoint",
        lambda c: missing if c.checkpoint == "builtin" else c.checkpoint,
    )
    cfg = make_config("segmenter.sam.checkpoint=builtin").segmenter
    a, b = Segmenter.from_config(cfg), Segmenter.from_config(cfg)
    assert a.card.untrained and a.card.model_id == "sam-demo:seed0"
    for (k, v), w in zip(a.model.state_dict().items(), b.model.state_dict().values(), strict=True):
        torch.testing.assert_close(v, w, msg=k)


def test_segment_boxes_equal_predict_boxes(segmenter: Segmenter, engine: SamPromptEngine) -> None:
    image = scene()
    boxes = np.array([[10, 5, 60, 50], [64, 48, 106, 72]], np.float32)
    got = segmenter.segment(image, SegmentCall(boxes=boxes))
    ref = engine.predict_boxes(engine.embed_image(image), boxes)
    assert got.prompt_types == ["box", "box"]
    np.testing.assert_array_equal(got.boxes, ref.boxes)
    np.testing.assert_array_equal(got.scores, ref.scores)
    assert got.masks == ref.masks


def test_segment_points_best_and_multimask(segmenter: Segmenter, engine: SamPromptEngine) -> None:
    image = scene()
    pts = np.array([[30.0, 30.0], [80.0, 60.0]])
    labels = np.array([1, 1])
    eng3 = SamPromptEngine(
        engine.model,
        dataclasses.replace(engine.cfg, keep_multimask_tokens=(0, 1, 2), return_masks=True),
    )
    ref = eng3.predict_points(eng3.embed_image(image), pts, labels)
    multi = segmenter.segment(image, SegmentCall(points=pts, labels=labels, multimask=True))
    assert multi.masks == ref.masks and len(multi) == 6
    best = segmenter.segment(image, SegmentCall(points=pts, labels=labels))
    assert best.prompt_index.tolist() == [0, 1]
    for i in range(2):
        rows = np.flatnonzero(ref.prompt_index == i)
        j = rows[np.argmax(ref.scores[rows])]
        assert best.scores[i] == ref.scores[j] and best.masks[i] == ref.masks[j]


def test_segment_multipoint_is_one_prompt(segmenter: Segmenter, engine: SamPromptEngine) -> None:
    image = scene()
    pts, labels = np.array([[30.0, 30.0], [80.0, 60.0]]), np.array([1, 0])
    got = segmenter.segment(image, SegmentCall(points=pts, labels=labels, multipoint=True))
    assert got.prompt_types == ["points"] and got.prompt_index.tolist() == [0]
    eng3 = SamPromptEngine(
        engine.model,
        dataclasses.replace(engine.cfg, keep_multimask_tokens=(0, 1, 2), return_masks=True),
    )
    ref = eng3.predict_multipoint(eng3.embed_image(image), [(pts, labels)])
    j = int(np.argmax(ref.scores))
    assert ref.masks is not None
    assert got.scores[0] == ref.scores[j] and got.masks[0] == ref.masks[j]


def test_proposals_equal_generate(segmenter: Segmenter, engine: SamPromptEngine) -> None:
    image = scene()
    pts = np.array([[30.0, 30.0], [80.0, 60.0], [90.0, 62.0]])
    classes = np.array([0, 2, 2])
    kinds = ("peak", "fine", "fine")
    call = ProposalCall(points=pts, classes=classes, kinds=kinds, return_masks=True)
    got = segmenter.proposals(image, call)
    eng = SamPromptEngine(engine.model, dataclasses.replace(engine.cfg, return_masks=True))
    ref = eng.generate(image, pts, classes, list(kinds))
    assert got.sources == ref.sources and "grid" in got.sources and "class:fine" in got.sources
    np.testing.assert_array_equal(got.boxes, ref.boxes)
    np.testing.assert_array_equal(got.class_hints, ref.class_hints)
    assert got.masks == ref.masks
    no_grid = segmenter.proposals(image, dataclasses.replace(call, include_grid=False))
    assert "grid" not in no_grid.sources and len(no_grid) > 0
    assert len(segmenter.proposals(image, ProposalCall(max_proposals=1))) == 1


def test_wsod_detector_runs_on_sam_proposals(tmp_path: Path, sam_checkpoint: str) -> None:
    from weaksam.configlib import to_dict
    from weaksam.data.synth.shapes import SHAPE_CLASSES
    from weaksam.wsod.config import WSODModelConfig, WSODTestConfig
    from weaksam.wsod.inference import detect, export_checkpoint
    from weaksam.wsod.model import build_wsod_model

    model_cfg = WSODModelConfig(backbone="small", width=8, hidden=32)
    torch.manual_seed(0)
    model = build_wsod_model(model_cfg, 6, "oicr")
    state = {
        "model": model.state_dict(),
        "model_config": to_dict(model_cfg),
        "method": "oicr",
        "num_classes": 6,
        "class_names": list(SHAPE_CLASSES),
        "step": 0,
        "history": [],
    }
    path = export_checkpoint(state, str(tmp_path / "model.pt"))
    cfg = make_config(
        "detector.kind=wsod",
        f"detector.checkpoint={path}",
        "detector.wsod_scales=[96]",
        "detector.wsod_max_side=128",
        "detector.min_score=0.0",
        f"segmenter.sam.checkpoint={sam_checkpoint}",
    )
    det = load_detector(cfg)
    assert det.card.kind == "wsod" and det.classes == SHAPE_CLASSES and not det.card.masks
    image = scene()
    got = det.predict(image, 0.0, 10)
    props = Segmenter.from_config(cfg.segmenter).proposals(image, ProposalCall()).boxes
    test = WSODTestConfig(scales=(96,), flip=False, score_thresh=0.0, max_detections=100)
    tensor = torch.from_numpy(image).permute(2, 0, 1)
    boxes, scores, _ = detect(model.eval(), tensor, torch.from_numpy(props), test, 128)
    assert 0 < len(got) <= 10 and got.masks is None
    np.testing.assert_allclose(got.scores, scores[: len(got)], rtol=1e-5)
    np.testing.assert_allclose(got.boxes, boxes[: len(got)], atol=1e-3)


@pytest.mark.parametrize("masks", [False, True])
def test_retrain_checkpoint_is_served_as_the_pipeline_predicts(tmp_path: Path, masks: bool) -> None:
    """``kind: retrain`` loads the pipeline's own ``model.pt`` with its own loader."""
    from weaksam.configlib import to_dict
    from weaksam.data.synth.shapes import SHAPE_CLASSES
    from weaksam.detection.config import DetectorModelConfig
    from weaksam.detection.data import image_tensor
    from weaksam.detection.inference import export_checkpoint
    from weaksam.detection.inference import load_detector as load_pipeline_detector
    from weaksam.detection.model import build_detector

    model_cfg = DetectorModelConfig(
        backbone="small_fpn",
        width=8,
        fpn_channels=16,
        min_size=(64,),
        max_size=96,
        test_size=64,
        box_head_dim=32,
        mask_head_channels=8,
        mask_head_layers=1,
    )
    torch.manual_seed(0)
    state = {
        "model": build_detector(model_cfg, 6, masks=masks).state_dict(),
        "model_config": to_dict(model_cfg),
        "roi_drop": {},
        "masks": masks,
        "num_classes": 6,
        "class_names": list(SHAPE_CLASSES),
        "variant": "drop",
        "step": 0,
        "history": [],
    }
    path = export_checkpoint(state, str(tmp_path / "model.pt"))
    cfg = make_config(
        "detector.kind=retrain", f"detector.checkpoint={path}", "detector.min_score=0"
    )
    det = load_detector(cfg)
    assert det.card.kind == "retrain" and det.card.masks == masks and not det.card.untrained
    assert det.model_id.startswith(("maskrcnn_small_fpn-drop:", "fasterrcnn_small_fpn-drop:"))
    image = scene()
    got = det.predict(image, 0.0, 100)
    model, _ = load_pipeline_detector(path)
    model.roi_heads.score_thresh = 0.0
    with torch.inference_mode():
        out = model([image_tensor(image)])[0]
    assert len(got) == len(out["scores"]) > 0
    np.testing.assert_allclose(got.boxes, out["boxes"].numpy(), atol=1e-4)
    np.testing.assert_allclose(got.scores, out["scores"].numpy(), atol=1e-6)
    np.testing.assert_array_equal(got.classes, out["labels"].numpy() - 1)
    if masks:
        assert got.masks == encode_masks((out["masks"][:, 0] >= 0.5).numpy())
    else:
        assert got.masks is None
