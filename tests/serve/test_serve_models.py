"""serve.detectors and serve.segmenter: the adapters equal the library calls they wrap, and
every detector is built and loaded by weaksam.detection."""

from __future__ import annotations

import argparse
import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from serve_helpers import SMALL_MODEL, make_config, save_small_detector, scene

from serve.config import detector_checkpoint
from serve.detectors import RCNNDetector, load_detector
from serve.models import ModelCard, ProposalCall, SegmentCall
from serve.segmenter import Segmenter
from weaksam.data.synth.shapes import SHAPE_CLASSES
from weaksam.detection.model import init_detector
from weaksam.io.rle import decode_masks, encode_masks
from weaksam.runs import file_digest, model_path
from weaksam.sam.build import SamConfig, build_sam
from weaksam.sam.engine import SamPromptEngine


@pytest.fixture(scope="module")
def untrained() -> RCNNDetector:
    det = load_detector(make_config())
    assert isinstance(det, RCNNDetector)
    return det


def test_untrained_detector_is_seeded_and_marked(untrained: RCNNDetector) -> None:
    card = untrained.card
    assert card.untrained and card.kind == "untrained" and card.masks and card.digest == ""
    assert untrained.model_id == "maskrcnn_small_fpn-untrained:seed0"
    assert untrained.classes == SHAPE_CLASSES
    again = load_detector(make_config())
    image = scene()
    a, b = untrained.predict(image, 0.0, 10), again.predict(image, 0.0, 10)
    np.testing.assert_array_equal(a.boxes, b.boxes)
    assert a.masks == b.masks


def test_detections_are_filtered_sorted_and_in_image(untrained: RCNNDetector) -> None:
    image = scene()
    full = untrained.predict(image, 0.0, 100)
    assert len(full) > 3, "the random model should give some boxes at threshold 0"
    assert np.all(np.diff(full.scores) <= 0)
    assert full.boxes.dtype == np.float32 and full.classes.dtype == np.int64
    assert np.all((full.classes >= 0) & (full.classes < 6))
    assert np.all(full.boxes[:, [0, 2]] <= 128) and np.all(full.boxes[:, [1, 3]] <= 96)
    assert full.image_size == (96, 128) and full.masks is not None
    assert decode_masks(full.masks, 96, 128).shape == (len(full), 96, 128)
    top = untrained.predict(image, 0.0, 2)
    np.testing.assert_array_equal(top.scores, full.scores[:2])
    thr = float(full.scores[len(full) // 2])
    assert np.all(untrained.predict(image, thr, 100).scores >= thr)


def test_batch_equals_single_images(untrained: RCNNDetector) -> None:
    images = [scene(seed=s) for s in range(3)]
    batch = untrained.predict_batch(images, [0.0, 0.1, 0.0], [5, 5, 3])
    for im, thr, k, got in zip(images, [0.0, 0.1, 0.0], [5, 5, 3], batch, strict=True):
        one = untrained.predict(im, thr, k)
        np.testing.assert_allclose(got.boxes, one.boxes, atol=1e-3)
        np.testing.assert_allclose(got.scores, one.scores, atol=1e-5)
        np.testing.assert_array_equal(got.classes, one.classes)
    assert untrained.predict_batch([], [], []) == []


def test_run_serves_wsis_else_retrain(tmp_path: Path) -> None:
    """Kind ``run`` (the default) finds the run's trained detector through weaksam.runs."""
    run = tmp_path / "run"
    cfg = make_config("detector.kind=run", f"detector.run={run}")
    with pytest.raises(FileNotFoundError, match="make demo"):
        detector_checkpoint(cfg.detector)
    boxes = save_small_detector(Path(model_path(str(run), "retrain")), masks=False)
    assert detector_checkpoint(cfg.detector) == boxes
    det = load_detector(cfg)
    assert det.card.kind == "retrain" and not det.card.masks and not det.card.untrained
    assert det.card.digest == file_digest(boxes)
    assert det.model_id == f"fasterrcnn_small_fpn-random:{file_digest(boxes)[:12]}"
    masks = save_small_detector(Path(model_path(str(run), "wsis")), masks=True)
    assert detector_checkpoint(cfg.detector) == masks
    assert load_detector(cfg).card.masks


def test_relative_model_paths_are_under_the_project_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("serve.config.PROJECT_ROOT", tmp_path)
    monkeypatch.chdir(tmp_path / "..")
    run = str(tmp_path / "runs" / "demo")
    with pytest.raises(FileNotFoundError, match=re.escape(f"no trained detector in {run} ")):
        detector_checkpoint(make_config("detector.kind=run").detector)
    path = save_small_detector(Path(model_path(run, "retrain")), masks=False)
    assert detector_checkpoint(make_config("detector.kind=run").detector) == path
    cfg = make_config("detector.kind=retrain", "detector.checkpoint=runs/demo/retrain/model.pt")
    assert detector_checkpoint(cfg.detector) == path
    with pytest.raises(FileNotFoundError, match="detector checkpoint not found"):
        detector_checkpoint(
            make_config("detector.kind=retrain", "detector.checkpoint=x.pt").detector
        )


def test_checkpoints_load_weights_only_with_strict_keys(tmp_path: Path) -> None:
    """The service loads nothing the library would not: weights_only, every key, the format."""
    path = save_small_detector(tmp_path / "model.pt")
    ckpt = torch.load(path, weights_only=True)

    def load(name: str, payload: object) -> None:
        torch.save(payload, tmp_path / name)
        cfg = make_config("detector.kind=retrain", f"detector.checkpoint={tmp_path / name}")
        load_detector(cfg)

    with pytest.raises(Exception, match=r"weights_only|Unsupported global"):
        load("object.pt", {**ckpt, "history": [argparse.Namespace()]})
    missing = dict(ckpt["model"])
    missing.pop(next(iter(missing)))
    with pytest.raises(RuntimeError, match="Missing key"):
        load("missing_key.pt", {**ckpt, "model": missing})
    with pytest.raises(RuntimeError, match="Unexpected key"):
        load("extra_key.pt", {**ckpt, "model": {**ckpt["model"], "extra": torch.zeros(1)}})
    with pytest.raises(ValueError, match="not a detector checkpoint"):
        load("other.pt", {"model": ckpt["model"], "config": {}})
    with pytest.raises(ValueError, match="7 class names for 6 classes"):
        load("names.pt", {**ckpt, "class_names": [*SHAPE_CLASSES, "extra"]})


def test_class_count_must_match_the_model() -> None:
    model = init_detector(SMALL_MODEL, 3)
    card = ModelCard("detector", "retrain", "a", "m", "", ("a",), False, False, "cpu", 0.0, 10)
    with pytest.raises(ValueError, match="3 classes, 1 names"):
        RCNNDetector(model, card)


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
    assert card.role == "segmenter" and not card.untrained
    assert card.digest == file_digest(sam_checkpoint)
    assert card.model_id == f"sam-demo:{card.digest[:12]}"


def test_sam_random_weights_only_when_asked(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """``checkpoint: ""`` serves seeded random weights, reported untrained; a missing builtin
    file is an error, never a silent fallback."""
    cfg = make_config("segmenter.sam.checkpoint=''").segmenter
    a, b = Segmenter.from_config(cfg), Segmenter.from_config(cfg)
    assert a.card.untrained and a.card.model_id == "sam-demo:seed0" and a.card.digest == ""
    for (k, v), w in zip(a.model.state_dict().items(), b.model.state_dict().values(), strict=True):
        torch.testing.assert_close(v, w, msg=k)
    missing = str(tmp_path / "demo_sam.pt")
    monkeypatch.setattr(
        "serve.segmenter.resolve_checkpoint",
        lambda c: missing if c.checkpoint == "builtin" else c.checkpoint,
    )
    monkeypatch.setattr("weaksam.sam.build.resolve_checkpoint", lambda c: missing)
    with pytest.raises((FileNotFoundError, ValueError)):
        Segmenter.from_config(make_config("segmenter.sam.checkpoint=builtin").segmenter)


def test_segment_boxes_equal_predict_boxes(segmenter: Segmenter, engine: SamPromptEngine) -> None:
    image = scene()
    boxes = np.array([[10, 5, 60, 50], [64, 48, 106, 72]], np.float32)
    got = segmenter.segment(image, SegmentCall(boxes=boxes))
    best = SamPromptEngine(engine.model, dataclasses.replace(engine.cfg, box_mask="best_iou"))
    ref = best.predict_boxes(best.embed_image(image), boxes)  # the service's box-mask choice
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
    from weaksam.detection.data import image_tensor
    from weaksam.detection.inference import load_detector as load_pipeline_detector

    path = save_small_detector(tmp_path / "model.pt", masks=masks)
    cfg = make_config(
        "detector.kind=retrain", f"detector.checkpoint={path}", "detector.min_score=0"
    )
    det = load_detector(cfg)
    assert det.card.kind == "retrain" and det.card.masks == masks and not det.card.untrained
    assert det.model_id.startswith(("maskrcnn_small_fpn-random:", "fasterrcnn_small_fpn-random:"))
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
