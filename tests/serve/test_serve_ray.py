"""The service on Ray Serve, over real HTTP on 127.0.0.1: started once for the module.

Results are compared with the library called directly on the same image and checkpoints.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

import httpx
import numpy as np
import pytest
from serve_helpers import (
    API_KEY,
    AUTH,
    KEY_ENV,
    BadRequest,
    bad_requests,
    encode,
    free_port,
    fuzz_schema,
    make_config,
    scene,
)

from serve.config import ServeConfig
from serve.detectors import load_detector
from weaksam.runs import file_digest
from weaksam.sam.build import SamConfig, build_sam
from weaksam.sam.engine import SamPromptEngine

pytestmark = pytest.mark.ray
APP = "weaksam-test"


@dataclass(frozen=True)
class Service:
    url: str
    cfg: ServeConfig
    client: httpx.Client


@pytest.fixture(scope="module")
def service(ray_local: None, sam_checkpoint: str, detector_checkpoint: str) -> Iterator[Service]:
    from ray import serve

    from serve.app import build_app

    cfg = make_config(
        "detector.kind=retrain",
        f"detector.checkpoint={detector_checkpoint}",
        f"segmenter.sam.checkpoint={sam_checkpoint}",
        f"auth.api_key_env={KEY_ENV}",
        "detector.batching.max_batch_size=4",
        "detector.batching.batch_wait_timeout_s=0.05",
    )
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        serve.run(build_app(cfg, ingress_env={KEY_ENV: API_KEY}), name=APP, route_prefix="/")
        url = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=url, timeout=60) as client:
            yield Service(url, cfg, client)
    finally:
        serve.shutdown()


def _post(svc: Service, path: str, **kwargs: Any) -> httpx.Response:
    return svc.client.post(path, headers={**AUTH, **kwargs.pop("headers", {})}, **kwargs)


def _files(data: bytes) -> dict[str, Any]:
    return {"image": ("x.png", data, "image/png")}


def test_status_and_models(service: Service, detector_checkpoint: str) -> None:
    c = service.client
    assert c.get("/healthz").json() == {"status": "ok"}  # no key needed
    ready = c.get("/readyz")
    assert ready.status_code == 200 and ready.json()["ready"] is True
    assert c.get("/v1/models").status_code == 401
    det, seg = c.get("/v1/models", headers=AUTH).json()["models"]
    assert det["kind"] == "retrain" and det["digest"] == file_digest(detector_checkpoint)
    assert det["model_id"].startswith("maskrcnn_small_fpn-random:") and det["untrained"] is False
    assert "checkpoint" not in det
    assert seg["kind"] == "sam" and seg["masks"] is True
    assert c.get("/openapi.json").json()["info"]["title"] == "weaksam"


def test_detect_equals_library(service: Service) -> None:
    image = scene()
    png = encode(image)
    r = _post(service, "/v1/detect", files=_files(png), data={"score_threshold": "0.0"})
    assert r.status_code == 200, r.text
    body = r.json()
    ref = load_detector(service.cfg).predict(image, 0.0, 100)
    assert len(body["detections"]) == len(ref) > 0
    np.testing.assert_allclose([d["box"] for d in body["detections"]], ref.boxes, atol=1e-4)
    np.testing.assert_allclose([d["score"] for d in body["detections"]], ref.scores, atol=1e-6)
    assert [d["class_id"] for d in body["detections"]] == ref.classes.tolist()
    assert [d["rle"]["counts"].encode() for d in body["detections"]] == ref.masks
    as_json = _post(
        service, "/v1/detect", json={"image": base64.b64encode(png).decode(), "score_threshold": 0}
    )
    assert as_json.json() == body
    overlay = _post(service, "/v1/detect", files=_files(png), headers={"Accept": "image/png"})
    assert overlay.headers["content-type"] == "image/png"
    assert overlay.content.startswith(b"\x89PNG")


def test_batched_concurrent_requests_equal_single_ones(service: Service) -> None:
    from ray import serve

    images = [scene(seed=s) for s in range(8)]
    detector = load_detector(service.cfg)

    def one(i: int) -> dict[str, Any]:
        r = _post(
            service,
            "/v1/detect",
            files=_files(encode(images[i])),
            data={"score_threshold": "0.1", "masks": "none"},
        )
        assert r.status_code == 200, r.text
        return dict(r.json())

    with ThreadPoolExecutor(8) as pool:
        bodies = list(pool.map(one, range(8)))
    for image, body in zip(images, bodies, strict=True):
        ref = detector.predict(image, 0.1, 100)
        got = np.asarray([d["box"] for d in body["detections"]]).reshape(-1, 4)
        np.testing.assert_allclose(got, ref.boxes, atol=1e-3)  # same-size images: no padding
    handle = serve.get_deployment_handle("detector", app_name=APP)
    stats = handle.batch_stats.remote().result()
    assert max(stats) > 1, f"no batch of more than one image was formed: {stats}"


def test_segment_equals_engine(service: Service, sam_checkpoint: str) -> None:
    image = scene()
    boxes = [[10, 5, 60, 50], [64, 48, 106, 72]]
    r = _post(
        service, "/v1/segment", files=_files(encode(image)), data={"boxes": json.dumps(boxes)}
    )
    assert r.status_code == 200, r.text
    masks = r.json()["masks"]
    model = build_sam(SamConfig(model_type="demo", checkpoint=sam_checkpoint, device="cpu"))
    # the service keeps the best of three masks per box
    engine = SamPromptEngine(model, replace(service.cfg.segmenter.engine, box_mask="best_iou"))
    ref = engine.predict_boxes(engine.embed_image(image), np.asarray(boxes, np.float32))
    assert [m["rle"]["counts"].encode() for m in masks] == ref.masks
    np.testing.assert_allclose([m["box"] for m in masks], ref.boxes)
    np.testing.assert_allclose([m["score"] for m in masks], ref.scores, rtol=1e-6)


def test_proposals_equal_generate(service: Service, sam_checkpoint: str) -> None:
    image = scene()
    points = [{"x": 30, "y": 30, "class_name": "star"}, {"x": 80, "y": 60, "class_name": "ring"}]
    r = _post(
        service,
        "/v1/proposals",
        json={"image": base64.b64encode(encode(image)).decode(), "points": points},
    )
    assert r.status_code == 200, r.text
    props = r.json()["proposals"]
    model = build_sam(SamConfig(model_type="demo", checkpoint=sam_checkpoint, device="cpu"))
    engine = SamPromptEngine(model, service.cfg.segmenter.engine)
    ref = engine.generate(image, np.array([[30.0, 30.0], [80.0, 60.0]]), np.array([0, 2]))
    assert [p["source"] for p in props] == ref.sources
    np.testing.assert_allclose([p["box"] for p in props], ref.boxes)
    np.testing.assert_allclose([p["score"] for p in props], ref.scores, rtol=1e-6)
    assert [p.get("class_id", -1) for p in props] == ref.class_hints.tolist()


def test_bad_requests_get_4xx_and_the_service_keeps_answering(service: Service) -> None:
    cases: list[BadRequest] = bad_requests(service.cfg.limits.max_body_bytes)
    wrong = []
    for case in cases:
        kwargs = dict(case.kwargs)
        if case.auth:
            kwargs["headers"] = {**AUTH, **kwargs.get("headers", {})}
        r = service.client.request(case.method, case.path, **kwargs)
        try:
            code = r.json()["error"]["code"]
        except (ValueError, KeyError, TypeError):
            code = f"<not a JSON error: {r.text[:80]!r}>"
        if (r.status_code, code) != (case.status, case.code):
            wrong.append(f"{case.name}: {r.status_code} {code}, expected {case.status} {case.code}")
    assert not wrong, "\n".join(wrong)
    assert service.client.get("/readyz").json()["ready"] is True
    ok = _post(service, "/v1/detect", files=_files(encode(scene())))
    assert ok.status_code == 200


def test_schema_fuzz_finds_no_5xx(service: Service) -> None:
    """schemathesis strategies from the live OpenAPI document, over HTTP (bounded)."""
    import schemathesis
    from serve_fuzz import registered

    doc = service.client.get("/openapi.json").json()
    statuses: list[int] = []

    def call(case: Any) -> None:
        response = case.call(base_url=service.url, headers=dict(AUTH), timeout=60)
        statuses.append(response.status_code)
        assert response.status_code < 500, (case.path, case.media_type, response.text[:300])

    with registered():
        api = schemathesis.openapi.from_dict(doc)
        sent = fuzz_schema(api, call, max_examples=6)
    assert sent >= 30 and 200 in statuses and 422 in statuses
    assert service.client.get("/readyz").json()["ready"] is True
