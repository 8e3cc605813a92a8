"""Pure request checks: every bad input becomes an :class:`ApiError` (a 4xx with a code and a
message) before any model sees it. No Ray, no FastAPI: unit-tested directly.

Status codes: 400 unparseable body, 401 missing/wrong API key, 413 too many bytes or pixels,
415 a content type or file format the service does not take, 422 well-formed but invalid
(undecodable image, prompts outside the image, too many prompts, bad field values).

What the OpenAPI document states is what these checks accept: the JSON ``image`` field
matches :data:`IMAGE_FIELD_PATTERN` exactly when :func:`decode_base64_image` takes its syntax;
option values are JSON values of the schema's types, never coerced (``"1"`` is not a number,
``0`` is not a boolean), in JSON bodies and multipart fields alike.
"""

from __future__ import annotations

import binascii
import hmac
import json
import os
import re
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ValidationError

from serve.config import AuthConfig, LimitsConfig
from weaksam.data.imageio import ImageDecodeError, decode_image_bytes

M = TypeVar("M", bound=BaseModel)

# Formats the service decodes, by the media type clients declare for them.
MEDIA_TYPES: dict[str, str] = {
    "PNG": "image/png",
    "JPEG": "image/jpeg",
    "GIF": "image/gif",
    "WEBP": "image/webp",
    "BMP": "image/bmp",
    "TIFF": "image/tiff",
}
_ALIASES = {
    "image/jpg": "JPEG",
    "image/pjpeg": "JPEG",
    "image/x-png": "PNG",
    "image/x-ms-bmp": "BMP",
    "image/x-bmp": "BMP",
    "image/tif": "TIFF",
}
_DECLARED = {v: k for k, v in MEDIA_TYPES.items()} | _ALIASES
# Types that say nothing about the format: the magic bytes decide.
UNSPECIFIED_TYPES = frozenset({"", "application/octet-stream", "binary/octet-stream"})

# The JSON ``image`` field: standard base64 (RFC 4648 alphabet, "=" padding; spaces, tabs and
# line breaks between characters are ignored), optionally as a data URL of an image type.
DATA_URL_TYPES = (*sorted(_DECLARED), "application/octet-stream")
_SPACE = "[\\t\\n\\r ]*"
_B64 = f"[A-Za-z0-9+/]{_SPACE}"
_PAD = f"={_SPACE}"
# (the types are letters, "/" and "-": literal in Python's and ECMA-262's regexes alike)
_DATA_URL_PREFIX = "data:(" + "|".join(DATA_URL_TYPES) + ");base64,"
IMAGE_FIELD_PATTERN = (
    f"^(?:{_DATA_URL_PREFIX})?{_SPACE}(?:(?:{_B64}){{4}})*"
    f"(?:(?:{_B64}){{4}}|(?:{_B64}){{3}}{_PAD}|(?:{_B64}){{2}}{_PAD}{_PAD})$"
)
_DATA_URL = re.compile(_DATA_URL_PREFIX)
_NO_SPACE = str.maketrans("", "", "\t\n\r ")


class ApiError(Exception):
    """A request the service refuses: HTTP ``status``, a stable ``code``, a ``message``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def body(self) -> dict[str, dict[str, str]]:
        return {"error": {"code": self.code, "message": self.message}}


# --------------------------------------------------------------------------- images


def media_type(header: str | None) -> str:
    """The bare, lower-case media type of a Content-Type header (``""`` when absent)."""
    return (header or "").split(";", 1)[0].strip().lower()


def sniff_image_format(data: bytes) -> str | None:
    """The format named by the file's magic bytes (a key of :data:`MEDIA_TYPES`) or None."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if data.startswith(b"BM"):
        return "BMP"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "TIFF"
    return None


def check_image_bytes(data: bytes, declared: str | None, limits: LimitsConfig) -> str:
    """Check an upload's size, declared type and magic bytes; return its format.

    Raises:
        ApiError: 422 empty, 413 over ``max_upload_bytes``, 415 a declared type that is not
            an image type we take, data that is not one of our formats, or a declared type
            that disagrees with the data.
    """
    if not data:
        raise ApiError(422, "invalid_image", "the image is empty (0 bytes)")
    if len(data) > limits.max_upload_bytes:
        raise ApiError(
            413,
            "payload_too_large",
            f"the image is over the limit of {limits.max_upload_bytes} bytes",
        )
    declared_type = media_type(declared)
    declared_format = _DECLARED.get(declared_type)
    if declared_type not in UNSPECIFIED_TYPES and declared_format is None:
        raise ApiError(
            415,
            "unsupported_media_type",
            f"declared content type {declared_type!r} is not a supported image type; "
            f"supported: {', '.join(MEDIA_TYPES.values())}",
        )
    found = sniff_image_format(data)
    if found is None:
        raise ApiError(
            415,
            "unsupported_media_type",
            "the data is not a supported image (PNG, JPEG, GIF, WebP, BMP or TIFF magic bytes)",
        )
    if declared_format is not None and declared_format != found:
        raise ApiError(
            415,
            "unsupported_media_type",
            f"declared content type {declared_type!r} but the data is {found}",
        )
    return found


def decode_image(data: bytes, limits: LimitsConfig) -> npt.NDArray[np.uint8]:
    """Decode checked bytes to ``HxWx3`` uint8 RGB with the project's one decoder.

    Raises:
        ApiError: 413 over ``max_pixels`` (read from the header, before decoding) or the
            aspect-ratio limit; 422 truncated, corrupt or otherwise undecodable.
    """
    try:
        image = decode_image_bytes(data, max_pixels=limits.max_pixels)
    except ImageDecodeError as exc:
        if "over the limit" in exc.reason:
            raise ApiError(413, "image_too_large", exc.reason) from None
        raise ApiError(422, "invalid_image", f"cannot decode the image: {exc.reason}") from None
    h, w = int(image.shape[0]), int(image.shape[1])
    if max(h, w) > limits.max_aspect_ratio * min(h, w):
        raise ApiError(
            422,
            "invalid_image",
            f"the image is {w}x{h}: aspect ratio over the limit of {limits.max_aspect_ratio:g}",
        )
    return image


def decode_base64_image(text: str, limits: LimitsConfig) -> tuple[bytes, str | None]:
    """Bytes and declared media type (from a ``data:`` URL prefix, else None) of the JSON
    ``image`` field; accepts exactly the strings :data:`IMAGE_FIELD_PATTERN` matches (without
    the regex, which is slow on megabytes). Raises ``ApiError`` 413 when too long, 422 when
    not base64 or a data URL of an image type."""
    declared: str | None = None
    if text.startswith("data:"):
        match = _DATA_URL.match(text)
        if match is None:
            raise ApiError(
                422,
                "invalid_image",
                "a data URL image must be 'data:<type>;base64,<data>' with <type> one of "
                + ", ".join(DATA_URL_TYPES),
            )
        declared = match.group(1)
        text = text[match.end() :]
    if len(text) > limits.max_body_bytes:
        raise ApiError(
            413,
            "payload_too_large",
            f"the image is over the limit of {limits.max_upload_bytes} bytes",
        )
    try:
        # line-wrapped base64 is common; strict mode refuses what the pattern refuses
        data = binascii.a2b_base64(text.translate(_NO_SPACE), strict_mode=True)
    except (binascii.Error, ValueError):
        raise ApiError(
            422,
            "invalid_image",
            "the 'image' field is not valid base64 (standard alphabet, '=' padding)",
        ) from None
    if not data:
        raise ApiError(422, "invalid_image", "the image is empty (0 bytes)")
    return data, declared


# --------------------------------------------------------------------------- prompts


def _where(n: int, width: int, height: int) -> str:
    return f"{n} for a {width}x{height} image"


def check_points(
    points: Sequence[tuple[float, float]], width: int, height: int, max_count: int, what: str
) -> npt.NDArray[np.float64]:
    """``Nx2`` float64 ``(x, y)`` after checking the count and that every point lies in the
    image (``0 <= x <= W``, ``0 <= y <= H``). Raises ``ApiError`` 422."""
    if len(points) > max_count:
        raise ApiError(
            422, "too_many_prompts", f"{len(points)} {what} given; the limit is {max_count}"
        )
    arr = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    for i, (x, y) in enumerate(arr):
        if not (np.isfinite(x) and np.isfinite(y) and 0 <= x <= width and 0 <= y <= height):
            raise ApiError(
                422,
                "invalid_prompt",
                f"{what}[{i}] = ({x:g}, {y:g}) is outside the {width}x{height} image",
            )
    return arr


def check_boxes(
    boxes: Sequence[Sequence[float]], width: int, height: int, max_count: int
) -> npt.NDArray[np.float32]:
    """``Nx4`` float32 XYXY after checking the count, ``x1 < x2``, ``y1 < y2`` and that each
    box lies in ``[0, W] x [0, H]``. Raises ``ApiError`` 422."""
    if len(boxes) > max_count:
        raise ApiError(
            422, "too_many_prompts", f"{len(boxes)} boxes given; the limit is {max_count}"
        )
    arr = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    for i, (x1, y1, x2, y2) in enumerate(arr):
        if not np.isfinite([x1, y1, x2, y2]).all() or x1 >= x2 or y1 >= y2:
            raise ApiError(
                422, "invalid_prompt", f"boxes[{i}] must have x1 < x2 and y1 < y2 (finite)"
            )
        if x1 < 0 or y1 < 0 or x2 > width or y2 > height:
            raise ApiError(
                422,
                "invalid_prompt",
                f"boxes[{i}] = [{x1:g}, {y1:g}, {x2:g}, {y2:g}] is outside the "
                f"{width}x{height} image",
            )
    return arr.astype(np.float32)


def resolve_class_names(names: Sequence[str], classes: Sequence[str], what: str) -> list[int]:
    """Project class ids of ``names``; 422 naming the known classes for an unknown one."""
    index = {name: i for i, name in enumerate(classes)}
    ids = []
    for i, name in enumerate(names):
        if name not in index:
            raise ApiError(
                422,
                "unknown_class",
                f"{what}[{i}] = {name!r} is not a class of this service; known: {list(classes)}",
            )
        ids.append(index[name])
    return ids


def check_max_detections(requested: int, cap: int) -> int:
    if requested > cap:
        raise ApiError(
            422, "invalid_request", f"max_detections is {requested}; this model allows <= {cap}"
        )
    return requested


# --------------------------------------------------------------------------- bodies


def validation_message(exc: ValidationError, limit: int = 3) -> str:
    """A short human message from a pydantic error: ``field: problem; ...``."""
    parts = []
    for err in exc.errors(include_url=False)[:limit]:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        parts.append(f"{loc}: {err.get('msg', 'invalid')}")
    more = len(exc.errors()) - limit
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def parse_json_body(body: bytes, model: type[M]) -> M:
    """Validate a JSON body: 400 when it is not JSON, 422 when it does not fit ``model``."""
    if not body.strip():
        raise ApiError(400, "empty_body", "the request body is empty")
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        if any(e.get("type") == "json_invalid" for e in exc.errors()):
            raise ApiError(400, "malformed_json", "the request body is not valid JSON") from None
        raise ApiError(422, "invalid_request", validation_message(exc)) from None


def is_text_field(annotation: Any) -> bool:
    """Whether a field takes plain text in a form (a string or a choice of strings); every
    other field's form value is the JSON spelling of its value (``0.3``, ``true``, ``[...]``)."""
    if annotation is str:
        return True
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return is_text_field(typing.get_args(annotation)[0])
    if origin is typing.Literal:
        return all(isinstance(a, str) for a in typing.get_args(annotation))
    return False


def is_structured(annotation: Any) -> bool:
    """Whether a field takes a list, dict or model (a JSON part in a form)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(is_structured(a) for a in typing.get_args(annotation) if a is not type(None))
    if origin is typing.Annotated:
        return is_structured(typing.get_args(annotation)[0])
    if origin in (list, dict, tuple):
        return True
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def is_text_list(annotation: Any) -> bool:
    """Whether a field takes a list of strings (one plain-text part per item in a form)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return len(args) == 1 and is_text_list(args[0])
    if origin is typing.Annotated:
        return is_text_list(typing.get_args(annotation)[0])
    return origin is list and typing.get_args(annotation) == (str,)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def parse_form_fields(fields: Mapping[str, Sequence[str]], model: type[M]) -> M:
    """Build ``model`` from multipart text fields (each with the texts of its parts): a list of
    strings takes one part per item; any other field one part, a string (or a choice of
    strings) as its text, every other value as its JSON spelling (``0.3``, ``true``,
    ``[{"x": 1, "y": 2}]``); then validated as strictly as a JSON body. 422 for unknown or
    repeated fields, bad JSON or bad values."""
    data: dict[str, Any] = {}
    for name, texts in fields.items():
        field = model.model_fields.get(name)
        if field is None:
            raise ApiError(
                422,
                "invalid_request",
                f"unknown form field {name!r}; known: image, {', '.join(model.model_fields)}",
            )
        if is_text_list(field.annotation):
            data[name] = list(texts)
            continue
        if len(texts) != 1:
            raise ApiError(422, "invalid_request", f"form field {name!r} is repeated")
        if is_text_field(field.annotation):
            data[name] = texts[0]
            continue
        try:
            data[name] = json.loads(texts[0], parse_constant=_no_constant)
        except ValueError:
            raise ApiError(
                422,
                "invalid_request",
                f"form field {name!r} must be a JSON value (e.g. 0.5, 10, true, [...])",
            ) from None
    try:
        return model.model_validate(data, strict=True)
    except ValidationError as exc:
        raise ApiError(422, "invalid_request", validation_message(exc)) from None


# --------------------------------------------------------------------------- auth


def read_api_key(auth: AuthConfig, environ: Mapping[str, str] | None = None) -> str | None:
    """The configured bearer token, or None when authentication is off.

    Raises ``RuntimeError`` when ``api_key_env`` names a variable that is unset or empty
    (a service configured to require a key must not start open).
    """
    if not auth.api_key_env:
        return None
    env = os.environ if environ is None else environ
    key = env.get(auth.api_key_env, "")
    if not key:
        raise RuntimeError(
            f"auth.api_key_env names {auth.api_key_env!r}, but that environment variable "
            "is unset or empty"
        )
    return key


def check_bearer(header: str | None, expected: str | None) -> None:
    """Accept when no key is configured or ``Authorization: Bearer <key>`` matches (in
    constant time). Raises ``ApiError`` 401 otherwise."""
    if expected is None:
        return
    scheme, _, token = (header or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "unauthorized", "missing API key: send 'Authorization: Bearer <key>'")
    if not hmac.compare_digest(token.strip().encode(), expected.encode()):
        raise ApiError(401, "unauthorized", "invalid API key")
