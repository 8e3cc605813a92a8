"""serve.api in-process (LocalBackend, no Ray): every endpoint with good and bad inputs."""

from __future__ import annotations

import base64
import io
import json
import re
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image
from serve_helpers import (
    API_KEY,
    AUTH,
    BadRequest,
    bad_requests,
    encode,
    make_config,
    scene,
)

from serve.api import create_api
from serve.backend import LocalBackend
from serve.config import ServeConfig
from serve.detectors import load_detector
from serve.models import Detector, ProposalCall, SegmentCall
from serve.openapi import IMAGE_FORMAT
from serve.segmenter import Segmenter
from serve.validation import IMAGE_FIELD_PATTERN
from weaksam.io.rle import decode_masks

PNG = encode(scene())


@pytest.fixture(scope="module")
def cfg(sam_checkpoint: str) -> ServeConfig:
    return make_config(f"segmenter.sam.checkpoint={sam_checkpoint}")


@pytest.fixture(scope="module")
def models(cfg: ServeConfig) -> tuple[Detector, Segmenter]:
    return load_detector(cfg), Segmenter.from_config(cfg.segmenter)


@pytest.fixture(scope="module")
def app(cfg: ServeConfig, models: tuple[Detector, Segmenter]) -> FastAPI:
    return create_api(cfg, LocalBackend(*models), api_key=API_KEY)


@pytest.fixture(scope="module")
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def _detect(client: TestClient, **fields: Any) -> dict[str, Any]:
    data = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in fields.items()}
    r = client.post(
        "/v1/detect", headers=AUTH, files={"image": ("a.png", PNG, "image/png")}, data=data
    )
    assert r.status_code == 200, r.text
    return dict(r.json())


def test_status_endpoints(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {
        "ready": True,
        "models": {"detector": True, "segmenter": True},
    }
    assert client.get("/v1/models").status_code == 401
    models = client.get("/v1/models", headers=AUTH).json()["models"]
    det, seg = models
    assert det["role"] == "detector" and det["untrained"] is True and det["kind"] == "untrained"
    assert det["classes"] == ["star", "cross", "ring", "heart", "crescent", "arrow"]
    assert seg["role"] == "segmenter" and seg["untrained"] is False
    assert seg["model_id"] == f"sam-demo:{seg['digest'][:12]}" and len(seg["digest"]) == 64
    assert "checkpoint" not in det and "checkpoint" not in seg  # no server paths


def test_models_show_no_server_paths(client: TestClient, sam_checkpoint: str) -> None:
    text = client.get("/v1/models", headers=AUTH).text
    assert sam_checkpoint not in text and "/" not in text.replace("/v1", "")


def test_detect_multipart_and_json_equal_the_detector(
    client: TestClient, models: tuple[Detector, Segmenter]
) -> None:
    body = _detect(client, score_threshold=0.0, max_detections=5)
    ref = models[0].predict(scene(), 0.0, 5)
    assert (body["width"], body["height"]) == (128, 96)
    assert body["model_id"] == "maskrcnn_small_fpn-untrained:seed0"
    dets = body["detections"]
    assert len(dets) == len(ref) == 5
    np.testing.assert_allclose([d["box"] for d in dets], ref.boxes, rtol=1e-6)
    assert [d["class_id"] for d in dets] == ref.classes.tolist()
    assert [d["class_name"] for d in dets] == [models[0].classes[c] for c in ref.classes]
    masks = [d["rle"]["counts"].encode() for d in dets]
    assert masks == ref.masks and dets[0]["rle"]["size"] == [96, 128]
    js = client.post(
        "/v1/detect",
        headers=AUTH,
        json={"image": base64.b64encode(PNG).decode(), "score_threshold": 0, "max_detections": 5},
    )
    assert js.json() == body


def test_detect_polygons_overlay_and_png(client: TestClient) -> None:
    poly = _detect(client, score_threshold=0.0, max_detections=3, masks="polygon")
    for d in poly["detections"]:
        assert "rle" not in d and isinstance(d["polygons"], list)
        assert all(len(p) >= 6 and len(p) % 2 == 0 for p in d["polygons"])
    none = _detect(client, score_threshold=0.0, max_detections=3, masks="none", overlay=True)
    assert all("rle" not in d and "polygons" not in d for d in none["detections"])
    overlay = Image.open(io.BytesIO(base64.b64decode(none["overlay_png"])))
    assert overlay.size == (128, 96) and overlay.mode == "RGB"
    r = client.post(
        "/v1/detect",
        headers=AUTH,
        files={"image": ("a.png", PNG, "image/png")},
        data={"response_format": "png", "score_threshold": "0"},
    )
    assert r.headers["content-type"] == "image/png" and r.headers["x-model-id"]
    assert Image.open(io.BytesIO(r.content)).size == (128, 96)
    accept = client.post(
        "/v1/detect",
        headers={**AUTH, "Accept": "image/png"},
        files={"image": ("a.png", PNG, "image/png")},
        data={"score_threshold": "0"},
    )
    assert accept.content == r.content


def test_segment_equals_segmenter(client: TestClient, models: tuple[Detector, Segmenter]) -> None:
    r = client.post(
        "/v1/segment",
        headers=AUTH,
        files={"image": ("a.png", PNG, "image/png")},
        data={
            "points": json.dumps([{"x": 30, "y": 30}, {"x": 80.5, "y": 60, "label": 1}]),
            "boxes": "[[10, 5, 60, 50]]",
        },
    )
    assert r.status_code == 200, r.text
    masks = r.json()["masks"]
    ref = models[1].segment(
        scene(),
        SegmentCall(
            points=np.array([[30, 30], [80.5, 60]]),
            labels=np.array([1, 1]),
            boxes=np.array([[10, 5, 60, 50]], np.float32),
        ),
    )
    assert [m["prompt_type"] for m in masks] == ["point", "point", "box"]
    assert [m["prompt_index"] for m in masks] == [0, 1, 0]
    assert [m["rle"]["counts"].encode() for m in masks] == ref.masks
    np.testing.assert_allclose([m["score"] for m in masks], ref.scores, rtol=1e-6)
    dense = decode_masks(ref.masks, 96, 128)
    assert dense.shape == (3, 96, 128)


def test_proposals_equal_segmenter(client: TestClient, models: tuple[Detector, Segmenter]) -> None:
    points = [
        {"x": 30, "y": 30, "class_name": "star"},
        {"x": 80, "y": 60, "class_name": "ring", "kind": "fine"},
        {"x": 90, "y": 62, "class_name": "heart"},
    ]
    r = client.post(
        "/v1/proposals",
        headers=AUTH,
        json={
            "image": base64.b64encode(PNG).decode(),
            "points": points,
            "labels": ["star", "ring"],
            "return_masks": True,
        },
    )
    assert r.status_code == 200, r.text
    props = r.json()["proposals"]
    ref = models[1].proposals(
        scene(),
        ProposalCall(
            points=np.array([[30.0, 30.0], [80.0, 60.0]]),
            classes=np.array([0, 2]),
            kinds=("peak", "fine"),
            return_masks=True,
        ),
    )
    assert [p["source"] for p in props] == ref.sources
    assert {p.get("class_name") for p in props} == {None, "star", "ring"}  # heart: not a label
    np.testing.assert_allclose([p["box"] for p in props], ref.boxes)
    assert [p["rle"]["counts"].encode() for p in props] == ref.masks
    grid_only = client.post("/v1/proposals", headers=AUTH, files={"image": ("a", PNG, "")})
    assert grid_only.status_code == 200
    assert {p["source"] for p in grid_only.json()["proposals"]} == {"grid"}


@pytest.mark.parametrize(
    "image",
    [
        np.zeros((1, 1, 3), np.uint8),
        np.full((1, 32, 3), 200, np.uint8),
        np.full((90, 3, 3), 50, np.uint8),
        scene(300, 17)[:, :, 0],  # grayscale
        np.dstack([scene(), np.full((96, 128), 128, np.uint8)]),  # RGBA
    ],
    ids=["1x1", "1x32", "90x3", "gray", "rgba"],
)
def test_odd_but_valid_images_work_everywhere(client: TestClient, image: np.ndarray) -> None:
    data = encode(image)
    files = {"image": ("x.png", data, "image/png")}
    assert client.post("/v1/detect", headers=AUTH, files=files).status_code == 200
    seg = client.post(
        "/v1/segment", headers=AUTH, files=files, data={"points": '[{"x": 0, "y": 0}]'}
    )
    assert seg.status_code == 200, seg.text
    assert client.post("/v1/proposals", headers=AUTH, files=files).status_code == 200
    gray = image if image.ndim == 2 else image[:, :, 0]
    jpeg = encode(np.repeat(gray[:, :, None], 3, axis=2), "JPEG")
    r = client.post("/v1/detect", headers=AUTH, files={"image": ("x.jpg", jpeg, "image/jpeg")})
    assert r.status_code == 200


@pytest.mark.parametrize("case", bad_requests(make_config().limits.max_body_bytes), ids=str)
def test_bad_requests_are_4xx_json(client: TestClient, case: BadRequest) -> None:
    kwargs = dict(case.kwargs)
    if case.auth:
        kwargs["headers"] = {**AUTH, **kwargs.get("headers", {})}
    r = client.request(case.method, case.path, **kwargs)
    assert r.status_code == case.status, r.text
    body = r.json()
    assert set(body) == {"error"} and body["error"]["code"] == case.code
    assert body["error"]["message"] and "Traceback" not in r.text
    if case.status == 401:
        assert r.headers["www-authenticate"] == "Bearer"


def test_unexpected_errors_are_opaque_500s(
    cfg: ServeConfig, models: tuple[Detector, Segmenter]
) -> None:
    class Broken(LocalBackend):
        async def segment(self, image: Any, call: Any) -> Any:
            raise RuntimeError("secret internal detail")

    app = create_api(cfg, Broken(*models))
    with TestClient(app, raise_server_exceptions=False) as c:
        r = c.post(
            "/v1/segment", files={"image": ("a", PNG, "image/png")}, data={"boxes": "[[0,0,5,5]]"}
        )
        assert r.status_code == 500
        assert r.json() == {"error": {"code": "internal_error", "message": "internal server error"}}
        assert "secret" not in r.text
        assert c.get("/healthz").status_code == 200  # still serving


def test_openapi_documents_both_bodies_and_errors(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    for path in ("/v1/detect", "/v1/segment", "/v1/proposals"):
        op = doc["paths"][path]["post"]
        assert set(op["requestBody"]["content"]) == {"multipart/form-data", "application/json"}
        assert {"400", "401", "413", "415", "422", "500"} <= set(op["responses"])
        assert op["security"] == [{"HTTPBearer": []}]
        encoding = op["requestBody"]["content"]["multipart/form-data"]["encoding"]
        assert "image/png" in encoding["image"]["contentType"]
    schemas = doc["components"]["schemas"]
    assert schemas["DetectOptionsForm"]["properties"]["image"]["format"] == "binary"
    assert schemas["SegmentJsonRequest"]["additionalProperties"] is False
    assert schemas["SegmentOptionsForm"]["additionalProperties"] is False
    assert "security" not in doc["paths"]["/healthz"]["get"]
    assert "image/png" in doc["paths"]["/v1/detect"]["post"]["responses"]["200"]["content"]
    assert client.get("/docs").status_code == 200


def test_openapi_states_what_is_accepted(client: TestClient, cfg: ServeConfig) -> None:
    """The image field's syntax, booleans as booleans, the config's limits and class names."""
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    image = schemas["DetectJsonRequest"]["properties"]["image"]
    assert image["format"] == IMAGE_FORMAT and image["pattern"] == IMAGE_FIELD_PATTERN
    assert image["maxLength"] == cfg.limits.max_body_bytes and "data URL" in image["description"]
    detect = schemas["DetectJsonRequest"]["properties"]
    assert detect["overlay"]["type"] == "boolean"
    assert detect["max_detections"]["maximum"] == cfg.detector.max_detections
    segment = schemas["SegmentOptionsForm"]
    assert segment["properties"]["points"]["maxItems"] == cfg.limits.max_points
    assert segment["properties"]["boxes"]["maxItems"] == cfg.limits.max_boxes
    assert len(segment["anyOf"]) == 2  # at least one prompt
    point = schemas["ProposalPoint"]["properties"]["class_name"]
    assert point["anyOf"][0]["enum"] == list(cfg.detector.classes)
    labels = schemas["ProposalsOptionsForm"]["properties"]["labels"]
    assert labels["type"] == "array" and labels["uniqueItems"] is True
    pattern = re.compile(IMAGE_FIELD_PATTERN)
    b64 = base64.b64encode(PNG).decode()
    for value in (b64, f"data:image/png;base64,{b64}", "QU JD\n", "QQ=="):
        assert pattern.match(value)
    for value in ("0", "QQ", "QQ=", "data:image/png," + b64, "data:text/plain;base64,QQ==", ""):
        assert not pattern.match(value)


def test_schema_valid_requests_are_accepted(client: TestClient) -> None:
    """Requests the document says are valid get 200; one step outside it, a 4xx."""
    b64 = base64.b64encode(PNG).decode()
    ok = [
        ("/v1/detect", {"image": f"data:image/png;base64,{b64}", "max_detections": 3.0}),
        ("/v1/segment", {"image": b64, "boxes": [[0, 0, 5, 5]], "multipoint": False}),
        ("/v1/proposals", {"image": b64, "points": [{"x": 1, "y": 1}], "labels": None}),
    ]
    for path, body in ok:
        r = client.post(path, headers=AUTH, json=body)
        assert r.status_code == 200, (path, r.text)
    bad = [
        ("/v1/detect", {"image": b64, "overlay": 1}),
        ("/v1/detect", {"image": b64, "score_threshold": "0.5"}),
        ("/v1/detect", {"image": b64, "max_detections": 101}),
        ("/v1/segment", {"image": b64, "points": [{"x": 1, "y": 1, "label": True}]}),
        ("/v1/proposals", {"image": b64, "labels": ["star", "star"]}),
    ]
    for path, body in bad:
        r = client.post(path, headers=AUTH, json=body)
        assert r.status_code == 422, (path, body, r.text)
    form = {"overlay": "0"}
    r = client.post("/v1/detect", headers=AUTH, files={"image": ("a", PNG)}, data=form)
    assert r.status_code == 422, r.text
    repeated = {"labels": ["star", "ring"]}
    r = client.post("/v1/proposals", headers=AUTH, files={"image": ("a", PNG)}, data=repeated)
    assert r.status_code == 200, r.text


def test_schemathesis_finds_no_conformance_failures(app: FastAPI) -> None:
    """schemathesis' own run, in-process (ASGI), every phase and check: no 5xx, schema-valid
    requests accepted, schema-invalid ones refused, responses as documented (~5 s)."""
    from serve_fuzz import run_schemathesis

    cases, problems = run_schemathesis(app, max_examples=5, headers=AUTH)
    assert cases > 200
    assert not problems, "\n".join(problems)


def test_chunked_body_over_the_limit_is_cut_off(client: TestClient, cfg: ServeConfig) -> None:
    """Without Content-Length the body limit applies as the bytes arrive."""
    limit = cfg.limits.max_body_bytes

    def chunks() -> Iterator[bytes]:
        for _ in range(limit // 65536 + 2):
            yield b"\0" * 65536

    r = client.post(
        "/v1/detect",
        headers={**AUTH, "content-type": "application/json"},
        content=chunks(),
    )
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"
