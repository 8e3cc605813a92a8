"""A Mask2Former ``wsis`` checkpoint served through the same loader and ``/v1/detect``
endpoint as the R-CNNs (in-process, LocalBackend): masks come back as RLE at the image size."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient
from serve_helpers import API_KEY, AUTH, encode, make_config, scene
from tiny_models import TINY_M2F

from serve.api import create_api
from serve.backend import LocalBackend
from serve.detectors import RCNNDetector, load_detector
from serve.segmenter import Segmenter
from weaksam.data.synth.shapes import SHAPE_CLASSES
from weaksam.detection.inference import export_detector
from weaksam.detection.model import init_detector
from weaksam.io.rle import decode_masks

# the detection tests' tiny Mask2Former, one training side and up to 10 instances
SERVE_M2F = replace(TINY_M2F, min_size=(64,), detections_per_img=10)


def test_serve_one_mask2former_request(tmp_path: Path, sam_checkpoint: str) -> None:
    model = init_detector(SERVE_M2F, len(SHAPE_CLASSES), masks=True, seed=3)
    path = export_detector(
        model,
        str(tmp_path / "model.pt"),
        model_config=SERVE_M2F,
        class_names=SHAPE_CLASSES,
        variant="pgt",
    )
    cfg = make_config(
        "detector.kind=retrain",
        f"detector.checkpoint={path}",
        f"segmenter.sam.checkpoint={sam_checkpoint}",
    )
    det = load_detector(cfg)
    assert isinstance(det, RCNNDetector) and det.card.masks
    assert det.model_id.startswith("mask2former_plainconv-pgt:")
    app = create_api(cfg, LocalBackend(det, Segmenter.from_config(cfg.segmenter)), api_key=API_KEY)
    img = scene()
    with TestClient(app, raise_server_exceptions=False) as client:
        r = client.post(
            "/v1/detect",
            headers=AUTH,
            files={"image": ("a.png", encode(img), "image/png")},
            data={"score_threshold": "0.0", "max_detections": "4"},
        )
    assert r.status_code == 200, r.text
    body = r.json()
    h, w = img.shape[:2]
    assert (body["width"], body["height"]) == (w, h) and body["model_id"] == det.model_id
    dets = body["detections"]
    ref = det.predict(img, 0.0, 4)
    assert len(dets) == len(ref) == 4  # 8 queries x 6 classes, capped by the request
    np.testing.assert_allclose([d["box"] for d in dets], ref.boxes, rtol=1e-5, atol=1e-4)
    assert [d["class_name"] for d in dets] == [SHAPE_CLASSES[c] for c in ref.classes]
    assert all(d["rle"]["size"] == [h, w] for d in dets)
    masks = decode_masks([d["rle"]["counts"].encode() for d in dets], h, w)
    assert masks.shape == (4, h, w)
