"""serve.validation: every bad input is an ApiError with the right status and code (no Ray)."""

from __future__ import annotations

import base64
import re
from typing import Any

import numpy as np
import pytest
from serve_helpers import encode, huge_png_header, scene

from serve.config import AuthConfig, LimitsConfig
from serve.schemas import DetectJsonRequest, DetectOptions, ProposalsOptions, SegmentOptions
from serve.validation import (
    IMAGE_FIELD_PATTERN,
    ApiError,
    check_bearer,
    check_boxes,
    check_image_bytes,
    check_max_detections,
    check_points,
    decode_base64_image,
    decode_image,
    media_type,
    parse_form_fields,
    parse_json_body,
    read_api_key,
    resolve_class_names,
    sniff_image_format,
)

LIMITS = LimitsConfig(max_upload_bytes=100_000, max_pixels=200_000, max_aspect_ratio=8)
PNG = encode(scene())


def _raises(status: int, code: str, fn: object, *args: object) -> ApiError:
    with pytest.raises(ApiError) as info:
        fn(*args)  # type: ignore[operator]
    assert (info.value.status, info.value.code) == (status, code), info.value.message
    assert info.value.body() == {"error": {"code": code, "message": info.value.message}}
    return info.value


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "WEBP", "BMP", "TIFF"])
def test_sniff_every_supported_format(fmt: str) -> None:
    data = encode(scene(16, 16), fmt)
    assert sniff_image_format(data) == fmt
    assert check_image_bytes(data, None, LIMITS) == fmt


def test_sniff_rejects_other_bytes() -> None:
    assert sniff_image_format(b"GIF8") is None
    assert sniff_image_format(b"%PDF-1.7 ...") is None
    assert sniff_image_format(b"") is None


def test_media_type_strips_parameters() -> None:
    assert media_type("Image/PNG; charset=binary") == "image/png"
    assert media_type(None) == ""


def test_declared_types() -> None:
    for declared in (None, "", "application/octet-stream", "image/png", "image/x-png"):
        assert check_image_bytes(PNG, declared, LIMITS) == "PNG"
    err = _raises(415, "unsupported_media_type", check_image_bytes, PNG, "text/plain", LIMITS)
    assert "text/plain" in err.message
    err = _raises(415, "unsupported_media_type", check_image_bytes, PNG, "image/jpeg", LIMITS)
    assert "PNG" in err.message


def test_bytes_that_are_not_an_image() -> None:
    _raises(415, "unsupported_media_type", check_image_bytes, b"hello world", "image/png", LIMITS)
    _raises(422, "invalid_image", check_image_bytes, b"", "image/png", LIMITS)


def test_byte_limit() -> None:
    small = LimitsConfig(max_upload_bytes=len(PNG) - 1)
    _raises(413, "payload_too_large", check_image_bytes, PNG, None, small)


def test_decode_good_truncated_huge_and_strips() -> None:
    image = decode_image(PNG, LIMITS)
    assert image.shape == (96, 128, 3) and image.dtype == np.uint8
    np.testing.assert_array_equal(image, scene())
    err = _raises(422, "invalid_image", decode_image, PNG[: len(PNG) // 2], LIMITS)
    assert "truncated" in err.message
    err = _raises(413, "image_too_large", decode_image, huge_png_header(), LIMITS)
    assert "50000x50000" in err.message
    err = _raises(
        422, "invalid_image", decode_image, encode(np.zeros((2, 40, 3), np.uint8)), LIMITS
    )
    assert "aspect ratio" in err.message


def test_base64_and_data_urls() -> None:
    text = base64.b64encode(PNG).decode()
    assert decode_base64_image(text, LIMITS) == (PNG, None)
    wrapped = "\n".join(text[i : i + 76] for i in range(0, len(text), 76))
    assert decode_base64_image(wrapped, LIMITS) == (PNG, None)
    assert decode_base64_image("data:image/png;base64," + text, LIMITS) == (PNG, "image/png")
    assert decode_base64_image("data:image/jpg;base64," + text, LIMITS)[1] == "image/jpg"
    _raises(422, "invalid_image", decode_base64_image, "data:image/png," + text, LIMITS)
    _raises(422, "invalid_image", decode_base64_image, "data:text/plain;base64," + text, LIMITS)
    _raises(422, "invalid_image", decode_base64_image, "not base64 at all!", LIMITS)
    _raises(
        413, "payload_too_large", decode_base64_image, "A" * (LIMITS.max_body_bytes + 4), LIMITS
    )


@pytest.mark.parametrize(
    "text",
    [
        "QUJD",
        "QQ==",
        "QUI=",
        " QU\tJD\r\n",
        "QQ= =",
        "data:image/png;base64,QUJD",
        "data:application/octet-stream;base64,QQ==",
        "",
        "QQ",
        "QQ=",
        "QQ===",
        "QQ==QQ==",
        "=QUJD",
        "AB=C",
        "QU\x0bJD",
        "data:image/png;base64,",
        "data:IMAGE/PNG;base64,QUJD",
        "data:image/png;charset=x;base64,QUJD",
        "QUJDé",
    ],
)
def test_image_field_pattern_is_what_decoding_accepts(text: str) -> None:
    """The OpenAPI pattern of the JSON ``image`` field and the decoder agree on its syntax."""
    try:
        decode_base64_image(text, LIMITS)
        accepted = True
    except ApiError:
        accepted = False
    assert accepted == bool(re.match(IMAGE_FIELD_PATTERN, text))


def test_points_inside_count_and_edges() -> None:
    pts = check_points([(0.0, 0.0), (128.0, 96.0), (10.5, 3.25)], 128, 96, 3, "points")
    assert pts.dtype == np.float64 and pts.shape == (3, 2)
    assert check_points([], 128, 96, 3, "points").shape == (0, 2)
    err = _raises(422, "invalid_prompt", check_points, [(1, 1), (129, 5)], 128, 96, 3, "points")
    assert "points[1]" in err.message and "128x96" in err.message
    _raises(422, "invalid_prompt", check_points, [(-0.5, 5)], 128, 96, 3, "points")
    _raises(422, "too_many_prompts", check_points, [(1, 1)] * 4, 128, 96, 3, "points")


def test_boxes() -> None:
    boxes = check_boxes([[0, 0, 128, 96], [1, 2, 3, 4]], 128, 96, 2)
    assert boxes.dtype == np.float32 and boxes.shape == (2, 4)
    _raises(422, "invalid_prompt", check_boxes, [[5, 5, 5, 9]], 128, 96, 2)
    _raises(422, "invalid_prompt", check_boxes, [[9, 5, 5, 9]], 128, 96, 2)
    _raises(422, "invalid_prompt", check_boxes, [[0, 0, 129, 9]], 128, 96, 2)
    _raises(422, "too_many_prompts", check_boxes, [[0, 0, 1, 1]] * 3, 128, 96, 2)


def test_class_names_and_detection_cap() -> None:
    assert resolve_class_names(["b", "a"], ("a", "b"), "labels") == [1, 0]
    err = _raises(422, "unknown_class", resolve_class_names, ["z"], ("a", "b"), "labels")
    assert "'z'" in err.message and "['a', 'b']" in err.message
    assert check_max_detections(5, 10) == 5
    _raises(422, "invalid_request", check_max_detections, 11, 10)


def test_json_bodies() -> None:
    req = parse_json_body(b'{"image": "aGk=", "score_threshold": 0.25}', DetectJsonRequest)
    assert req.score_threshold == 0.25 and req.masks == "rle"
    _raises(400, "empty_body", parse_json_body, b"  ", DetectJsonRequest)
    _raises(400, "malformed_json", parse_json_body, b'{"image": ', DetectJsonRequest)
    err = _raises(422, "invalid_request", parse_json_body, b'{"image": 3}', DetectJsonRequest)
    assert "image" in err.message
    err = _raises(
        422, "invalid_request", parse_json_body, b'{"image": "x", "zz": 1}', DetectJsonRequest
    )
    assert "zz" in err.message
    body = b'{"image": "x", "score_threshold": 2}'
    _raises(422, "invalid_request", parse_json_body, body, DetectJsonRequest)


def test_form_fields() -> None:
    fields = {"score_threshold": ["0.3"], "overlay": ["true"], "max_detections": ["7.0"]}
    opts = parse_form_fields(fields, DetectOptions)
    assert opts.score_threshold == 0.3 and opts.overlay is True and opts.max_detections == 7
    assert parse_form_fields({"masks": ["polygon"]}, DetectOptions).masks == "polygon"
    seg = parse_form_fields({"points": ['[{"x": 1, "y": 2, "label": 0}]']}, SegmentOptions)
    assert (seg.points[0].x, seg.points[0].label) == (1.0, 0)
    props = parse_form_fields({"labels": ["star", "ring"]}, ProposalsOptions)
    assert props.labels == ["star", "ring"]

    def refused(fields: dict[str, list[str]], model: Any = DetectOptions) -> None:
        _raises(422, "invalid_request", parse_form_fields, fields, model)

    refused({"nope": ["1"]})
    refused({"points": ["[{"]}, SegmentOptions)
    refused({"max_detections": ["many"]})
    refused({"points": ['[{"x": NaN, "y": 2}]']}, SegmentOptions)
    # values are JSON of the schema's type, never coerced
    for overlay in ("0", "1", "True", "yes", '"true"'):
        refused({"overlay": [overlay]})
    refused({"score_threshold": ['"0.5"']})
    refused({"max_detections": ["2.5"]})
    refused({"points": ['[{"x": 1, "y": 2, "label": true}]']}, SegmentOptions)
    refused({"overlay": ["true", "false"]})  # repeated


def test_api_key() -> None:
    assert read_api_key(AuthConfig()) is None
    assert read_api_key(AuthConfig("K"), {"K": "secret"}) == "secret"
    with pytest.raises(RuntimeError, match="'K'"):
        read_api_key(AuthConfig("K"), {})
    check_bearer(None, None)
    check_bearer("Bearer secret", "secret")
    check_bearer("bearer  secret ", "secret")
    for header in (None, "", "Bearer", "Basic secret", "Bearer nope", "secret"):
        _raises(401, "unauthorized", check_bearer, header, "secret")
