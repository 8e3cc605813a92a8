"""The service with an RT-DETR ``model.pt``: loaded through weaksam.detection (strict keys) and
served by the same /v1/detect with the same validation."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from serve_helpers import API_KEY, AUTH, encode, make_config, scene
from tiny_models import TINY_DETR

from serve.api import create_api
from serve.backend import LocalBackend
from serve.detectors import TorchDetector, load_detector
from serve.segmenter import Segmenter
from weaksam.data.synth.shapes import SHAPE_CLASSES
from weaksam.detection.inference import export_detector
from weaksam.detection.model import init_detector
from weaksam.runs import file_digest

# the detection tests' tiny RT-DETR with one decoder layer, no denoising, at 128 px
SMALL_DETR = replace(
    TINY_DETR,
    rt_detr=replace(TINY_DETR.rt_detr, decoder_layers=1, num_denoising=0),
    min_size=(128,),
    max_size=128,
    test_size=128,
)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> str:
    model = init_detector(SMALL_DETR, len(SHAPE_CLASSES), seed=2)
    path = tmp_path_factory.mktemp("detr") / "model.pt"
    return export_detector(
        model, str(path), model_config=SMALL_DETR, class_names=SHAPE_CLASSES, variant="random"
    )


@pytest.fixture(scope="module")
def client(sam_checkpoint: str, checkpoint: str) -> Iterator[tuple[TestClient, TorchDetector]]:
    cfg = make_config(
        f"segmenter.sam.checkpoint={sam_checkpoint}",
        "detector.kind=retrain",
        f"detector.checkpoint={checkpoint}",
    )
    det = load_detector(cfg)
    assert isinstance(det, TorchDetector)
    app = create_api(cfg, LocalBackend(det, Segmenter.from_config(cfg.segmenter)), api_key=API_KEY)
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c, det


def test_detect_serves_rt_detr(client: tuple[TestClient, TorchDetector], checkpoint: str) -> None:
    c, det = client
    digest = file_digest(checkpoint)[:12]
    assert det.model_id == f"rtdetr_plainconv-random:{digest}"
    assert not det.card.masks and det.card.kind == "retrain"
    png = encode(scene())
    r = c.post(
        "/v1/detect",
        headers=AUTH,
        json={"image": base64.b64encode(png).decode(), "score_threshold": 0, "max_detections": 4},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    ref = det.predict(scene(), 0.0, 4)
    assert (body["width"], body["height"]) == (128, 96) and body["model_id"] == det.model_id
    dets = body["detections"]
    assert len(dets) == len(ref) == 4
    np.testing.assert_allclose([d["box"] for d in dets], ref.boxes, rtol=1e-5)
    assert [d["class_id"] for d in dets] == ref.classes.tolist()
    assert all("rle" not in d or d["rle"] is None for d in dets)
    assert np.all(ref.boxes[:, [0, 2]] <= 128) and np.all(ref.boxes[:, [1, 3]] <= 96)
    bad = c.post(
        "/v1/detect",
        headers=AUTH,
        json={"image": base64.b64encode(png).decode(), "score_threshold": 2},
    )
    assert 400 <= bad.status_code < 500


def test_strict_load(tmp_path: Path, checkpoint: str) -> None:
    import torch

    ckpt = torch.load(checkpoint, weights_only=True)
    ckpt["model"].pop("detr.model.enc_output.0.weight")
    path = tmp_path / "model.pt"
    torch.save(ckpt, path)
    cfg = make_config("detector.kind=retrain", f"detector.checkpoint={path}")
    with pytest.raises(RuntimeError, match="Missing key"):
        load_detector(cfg)
