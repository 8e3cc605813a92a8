"""Images, checkpoints, configs and the schema fuzzer shared by the service tests.

Detectors are built and exported by :mod:`weaksam.detection` (:data:`SMALL_MODEL`, a CPU-sized
Faster/Mask R-CNN), as the pipeline's ``retrain``/``wsis`` stages export theirs."""

from __future__ import annotations

import base64
import io
import json
import socket
import struct
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from PIL import Image

from serve.config import ServeConfig, load_serve_config
from weaksam.data.synth.shapes import SHAPE_CLASSES
from weaksam.detection.config import DetectorModelConfig
from weaksam.detection.inference import export_detector
from weaksam.detection.model import init_detector
from weaksam.sam.build import build_sam_model, save_sam_checkpoint

API_KEY = "test-key-0123456789"
KEY_ENV = "WEAKSAM_TEST_API_KEY"
AUTH = {"Authorization": f"Bearer {API_KEY}"}

# A cheap SAM setup whose random-weight outputs are not all filtered out: no IoU/stability
# filters, a 4x4 grid.
ENGINE_OVERRIDES = (
    "segmenter.engine.points_per_side=4",
    "segmenter.engine.pred_iou_thresh=0.0",
    "segmenter.engine.stability_score_thresh=0.0",
)
# A CPU-sized detector of the library (128-px test side, narrow heads).
SMALL_MODEL = DetectorModelConfig(
    backbone="small_fpn",
    width=8,
    fpn_channels=16,
    min_size=(128,),
    max_size=128,
    test_size=128,
    rpn_pre_nms_test=200,
    rpn_post_nms_test=100,
    box_head_dim=32,
    mask_head_channels=8,
    mask_head_layers=1,
)
# The same model as the service's explicitly untrained detector (overrides of detector.model).
UNTRAINED_OVERRIDES = (
    "detector.kind=untrained",
    "detector.model.width=8",
    "detector.model.fpn_channels=16",
    "detector.model.min_size=[128]",
    "detector.model.max_size=128",
    "detector.model.test_size=128",
    "detector.model.rpn_pre_nms_test=200",
    "detector.model.box_head_dim=32",
    "detector.model.mask_head_channels=8",
    "detector.model.mask_head_layers=1",
)


def scene(h: int = 96, w: int = 128, seed: int = 0) -> npt.NDArray[np.uint8]:
    """A small RGB picture: noisy background and a few flat shapes."""
    rng = np.random.default_rng(seed)
    img = rng.integers(60, 120, (h, w, 3), dtype=np.uint8)
    yy, xx = np.mgrid[0:h, 0:w]
    img[(yy - h // 3) ** 2 + (xx - w // 4) ** 2 < (h // 6) ** 2] = (230, 40, 40)
    img[h // 2 : h // 2 + h // 4, w // 2 : w // 2 + w // 3] = (40, 200, 60)
    return img


def encode(image: npt.NDArray[np.uint8], fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format=fmt)
    return buf.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def huge_png_header(width: int = 50_000, height: int = 50_000) -> bytes:
    """A ~60-byte PNG whose header claims ``width x height`` RGB (a decompression bomb)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(b"\0" * 16))
    return b"\x89PNG\r\n\x1a\n" + body + _png_chunk(b"IEND", b"")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def save_random_sam(path: Path, seed: int = 0) -> str:
    """A demo-architecture SAM checkpoint with seeded random weights."""
    torch.manual_seed(seed)
    save_sam_checkpoint(build_sam_model("demo"), path, {"model_type": "demo"})
    return str(path)


def save_small_detector(path: Path, seed: int = 1, masks: bool = True) -> str:
    """A ``model.pt`` of :data:`SMALL_MODEL` (random weights from ``seed``) for the six shape
    classes, in the format of the ``retrain`` (``masks=False``) and ``wsis`` stages."""
    model = init_detector(SMALL_MODEL, len(SHAPE_CLASSES), masks=masks, seed=seed)
    return export_detector(
        model, str(path), model_config=SMALL_MODEL, class_names=SHAPE_CLASSES, variant="random"
    )


def make_config(*overrides: str) -> ServeConfig:
    """Defaults + the small untrained detector + the cheap engine + small Ray resources +
    ``overrides``."""
    base = (
        *UNTRAINED_OVERRIDES,
        *ENGINE_OVERRIDES,
        "segmenter.sam.checkpoint=''",
        "segmenter.sam.device=cpu",
        "detector.device=cpu",
        "ingress.num_cpus=0.05",
        "detector.deployment.num_cpus=0.2",
        "segmenter.deployment.num_cpus=0.2",
        "limits.max_points=8",
        "limits.max_boxes=8",
        "limits.max_proposal_points=16",
        f"limits.max_upload_bytes={2**20}",
    )
    return load_serve_config(None, [*base, *overrides])


def fuzz_schema(
    api: Any,
    call: Callable[[Any], Any],
    *,
    max_examples: int,
    modes: Sequence[str] = ("positive", "negative"),
) -> int:
    """Property-based requests for every operation of a loaded schemathesis schema ``api``
    (hypothesis-driven, derandomised); ``call(case)`` sends one and checks it. Returns the
    number of cases sent. Valid (positive) cases get real pictures and prompts inside them
    (``serve_fuzz``: register its strategies around the call, :func:`serve_fuzz.registered`).
    """
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from hypothesis.errors import Unsatisfiable
    from serve_fuzz import fit_request

    sent = 0
    for result in api.get_all_operations():
        op = result.ok()
        for mode in modes:
            strategy = op.as_strategy(generation_mode=schemathesis.GenerationMode(mode))

            @settings(
                max_examples=max_examples,
                deadline=None,
                database=None,
                derandomize=True,
                suppress_health_check=list(HealthCheck),
            )
            @given(case=strategy)
            def run(case: Any) -> None:
                nonlocal sent
                sent += 1
                if case.meta is not None and case.meta.generation.mode.is_positive:
                    fit_request(case.body, case.path, case.media_type, case.multipart_content_types)
                call(case)

            try:
                run()
            except Unsatisfiable:
                if mode == "positive":
                    raise
                # nothing to make invalid (e.g. a GET without parameters)
    return sent


# --------------------------------------------------------------------------- bad requests


@dataclass(frozen=True)
class BadRequest:
    """One bad request: ``kwargs`` of ``httpx``'s ``request`` (files, data, json, content,
    headers) and the status and error code the service must answer with."""

    name: str
    method: str
    path: str
    kwargs: dict[str, Any]
    status: int
    code: str
    auth: bool = True


def _file(data: bytes, ctype: str = "image/png", **fields: str) -> dict[str, Any]:
    return {"files": {"image": ("x.png", data, ctype)}, "data": fields}


def bad_requests(max_body_bytes: int) -> list[BadRequest]:
    """Bad requests for a service configured by :func:`make_config` (8 points/boxes, 16
    proposal points, 100 detections, a 1 MiB upload limit)."""
    png = encode(scene())
    b64 = base64.b64encode(png).decode()
    pts = json.dumps([{"x": 5, "y": 5}] * 9)
    json_ct = {"content-type": "application/json"}
    cases = [
        BadRequest("empty body", "POST", "/v1/detect", {"content": b""}, 400, "empty_body"),
        BadRequest(
            "empty json",
            "POST",
            "/v1/detect",
            {"content": b"", "headers": json_ct},
            400,
            "empty_body",
        ),
        BadRequest(
            "malformed json",
            "POST",
            "/v1/detect",
            {"content": b'{"image": "abc", ', "headers": json_ct},
            400,
            "malformed_json",
        ),
        BadRequest(
            "json not an object", "POST", "/v1/segment", {"json": [1, 2]}, 422, "invalid_request"
        ),
        BadRequest(
            "json without image", "POST", "/v1/detect", {"json": {}}, 422, "invalid_request"
        ),
        BadRequest(
            "bad base64", "POST", "/v1/detect", {"json": {"image": "***"}}, 422, "invalid_image"
        ),
        BadRequest(
            "unknown json field",
            "POST",
            "/v1/detect",
            {"json": {"image": b64, "foo": 1}},
            422,
            "invalid_request",
        ),
        BadRequest(
            "threshold out of range",
            "POST",
            "/v1/detect",
            {"json": {"image": b64, "score_threshold": 1.5}},
            422,
            "invalid_request",
        ),
        BadRequest(
            "max_detections over the cap",
            "POST",
            "/v1/detect",
            {"json": {"image": b64, "max_detections": 500}},
            422,
            "invalid_request",
        ),
        BadRequest(
            "wrong content type",
            "POST",
            "/v1/detect",
            {"content": png, "headers": {"content-type": "text/plain"}},
            415,
            "unsupported_media_type",
        ),
        BadRequest(
            "raw image body",
            "POST",
            "/v1/detect",
            {"content": png, "headers": {"content-type": "image/png"}},
            415,
            "unsupported_media_type",
        ),
        BadRequest(
            "not an image",
            "POST",
            "/v1/detect",
            _file(b"hello, world"),
            415,
            "unsupported_media_type",
        ),
        BadRequest(
            "declared type disagrees",
            "POST",
            "/v1/detect",
            _file(png, "image/jpeg"),
            415,
            "unsupported_media_type",
        ),
        BadRequest(
            "text declared for a file",
            "POST",
            "/v1/detect",
            _file(png, "text/plain"),
            415,
            "unsupported_media_type",
        ),
        BadRequest("empty image", "POST", "/v1/detect", _file(b""), 422, "invalid_image"),
        BadRequest(
            "truncated image",
            "POST",
            "/v1/detect",
            _file(png[: len(png) // 2]),
            422,
            "invalid_image",
        ),
        BadRequest(
            "huge dimensions",
            "POST",
            "/v1/detect",
            _file(huge_png_header()),
            413,
            "image_too_large",
        ),
        BadRequest(
            "huge dimensions (json)",
            "POST",
            "/v1/proposals",
            {"json": {"image": base64.b64encode(huge_png_header()).decode()}},
            413,
            "image_too_large",
        ),
        BadRequest(
            "image over the byte limit",
            "POST",
            "/v1/detect",
            _file(png + b"\0" * (2**20)),
            413,
            "payload_too_large",
        ),
        BadRequest(
            "body over the limit",
            "POST",
            "/v1/detect",
            {"content": b"\0" * (max_body_bytes + 1), "headers": json_ct},
            413,
            "payload_too_large",
        ),
        BadRequest(
            "multipart without image",
            "POST",
            "/v1/detect",
            {"files": {"other": ("x.png", png, "image/png")}},
            422,
            "invalid_request",
        ),
        BadRequest(
            "malformed multipart",
            "POST",
            "/v1/detect",
            {"content": b"--xx\r\nnot a part", "headers": {"content-type": "multipart/form-data"}},
            400,
            "malformed_multipart",
        ),
        BadRequest(
            "unknown form field",
            "POST",
            "/v1/detect",
            _file(png, zz="1"),
            422,
            "invalid_request",
        ),
        BadRequest(
            "segment without prompts", "POST", "/v1/segment", _file(png), 422, "invalid_prompt"
        ),
        BadRequest(
            "point outside the image",
            "POST",
            "/v1/segment",
            _file(png, points='[{"x": 500, "y": 5}]'),
            422,
            "invalid_prompt",
        ),
        BadRequest(
            "box outside the image",
            "POST",
            "/v1/segment",
            _file(png, boxes="[[0, 0, 200, 50]]"),
            422,
            "invalid_prompt",
        ),
        BadRequest(
            "inverted box",
            "POST",
            "/v1/segment",
            _file(png, boxes="[[50, 5, 10, 50]]"),
            422,
            "invalid_prompt",
        ),
        BadRequest(
            "too many points",
            "POST",
            "/v1/segment",
            _file(png, points=pts),
            422,
            "too_many_prompts",
        ),
        BadRequest(
            "too many boxes",
            "POST",
            "/v1/segment",
            {"json": {"image": b64, "boxes": [[0, 0, 5, 5]] * 9}},
            422,
            "too_many_prompts",
        ),
        BadRequest(
            "points not JSON",
            "POST",
            "/v1/segment",
            _file(png, points="x=1"),
            422,
            "invalid_request",
        ),
        BadRequest(
            "point label not 0/1",
            "POST",
            "/v1/segment",
            {"json": {"image": b64, "points": [{"x": 1, "y": 1, "label": 2}]}},
            422,
            "invalid_request",
        ),
        BadRequest(
            "unknown class",
            "POST",
            "/v1/proposals",
            {"json": {"image": b64, "points": [{"x": 1, "y": 1, "class_name": "dog"}]}},
            422,
            "unknown_class",
        ),
        BadRequest(
            "unknown label",
            "POST",
            "/v1/proposals",
            {"json": {"image": b64, "labels": ["dog"]}},
            422,
            "unknown_class",
        ),
        BadRequest(
            "mixed classed points",
            "POST",
            "/v1/proposals",
            {
                "json": {
                    "image": b64,
                    "points": [{"x": 1, "y": 1, "class_name": "star"}, {"x": 2, "y": 2}],
                }
            },
            422,
            "invalid_prompt",
        ),
        BadRequest(
            "proposal point outside",
            "POST",
            "/v1/proposals",
            {"json": {"image": b64, "points": [{"x": 1, "y": 97}]}},
            422,
            "invalid_prompt",
        ),
        BadRequest(
            "too many proposal points",
            "POST",
            "/v1/proposals",
            {"json": {"image": b64, "points": [{"x": 1, "y": 1}] * 17}},
            422,
            "too_many_prompts",
        ),
        BadRequest("unknown path", "GET", "/v1/nothing", {}, 404, "not_found"),
        BadRequest("wrong method", "GET", "/v1/detect", {}, 405, "method_not_allowed"),
        BadRequest(
            "missing API key", "POST", "/v1/detect", _file(png), 401, "unauthorized", auth=False
        ),
        BadRequest(
            "wrong API key",
            "GET",
            "/v1/models",
            {"headers": {"Authorization": "Bearer nope"}},
            401,
            "unauthorized",
            auth=False,
        ),
    ]
    return cases
