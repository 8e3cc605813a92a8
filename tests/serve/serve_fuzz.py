"""What JSON Schema cannot say about a valid request, for schemathesis.

The service's OpenAPI document states every rule that JSON Schema can (types, the ``image``
field's pattern, limits, class names, "at least one prompt"). Three rules need the image
itself: the ``image`` must be a picture that decodes, prompts must lie inside it, and a box
needs ``x1 < x2`` and ``y1 < y2``. For schemathesis' valid (positive) requests to be valid in
those respects too:

- :func:`register` gives schemathesis real image files: for each content type the multipart
  ``image`` part may declare (the document's ``encoding``), and for the JSON field's
  ``format`` (:data:`serve.openapi.IMAGE_FORMAT`: base64 or a data URL of the file's type);
- :func:`fit_request` puts a picture where a valid request's image satisfies its schema but
  is none (schemathesis' coverage phase derives the JSON field from the pattern alone, e.g.
  ``"0000"``; a binary part may be any bytes) and moves the prompts into the picture. It also
  gives a ``/v1/segment`` body without prompts a box: the coverage phase builds multipart
  bodies from ``required`` alone, ignoring the schema's ``anyOf``.

Invalid (negative) requests are left alone, and so is a "valid" image the document's pattern
would refuse (the document is then wrong, and the run should say so).
:func:`run_schemathesis` runs schemathesis' own engine (its phases and checks, as the CLI
does) in-process; ``schemathesis_hooks.py`` applies the same in a CLI run.
"""

from __future__ import annotations

import base64
import io
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
from hypothesis import strategies as st
from PIL import Image

from serve.openapi import IMAGE_FORMAT
from serve.validation import IMAGE_FIELD_PATTERN

# content type -> PIL format, the types the multipart ``image`` part may declare
IMAGE_TYPES = {
    "image/png": "PNG",
    "image/jpeg": "JPEG",
    "image/gif": "GIF",
    "image/webp": "WEBP",
    "image/bmp": "BMP",
    "image/tiff": "TIFF",
}
_TYPE_OF = {fmt: media_type for media_type, fmt in IMAGE_TYPES.items()}


def picture(fmt: str, width: int, height: int, seed: int) -> bytes:
    """A ``width x height`` RGB noise picture encoded as ``fmt`` (a PIL format name)."""
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format=fmt)
    return buf.getvalue()


def pictures(fmt: str | None = None) -> st.SearchStrategy[tuple[str, bytes]]:
    """``(format, file bytes)`` of 8..64-px pictures (aspect ratio at most 8)."""
    formats = st.just(fmt) if fmt else st.sampled_from(sorted(IMAGE_TYPES.values()))
    return formats.flatmap(
        lambda f: st.builds(
            lambda w, h, seed: (f, picture(f, w, h, seed)),
            st.integers(8, 64),
            st.integers(8, 64),
            st.integers(0, 2**16),
        )
    )


def image_field_values() -> st.SearchStrategy[str]:
    """Values of the JSON ``image`` field: base64 of a picture, or a data URL of its type."""

    def spell(pic: tuple[str, bytes], data_url: bool) -> str:
        fmt, data = pic
        text = base64.b64encode(data).decode("ascii")
        return f"data:{_TYPE_OF[fmt]};base64,{text}" if data_url else text

    return st.builds(spell, pictures(), st.booleans())


def register() -> None:
    """Register the image strategies with schemathesis (global, as its hooks are)."""
    import schemathesis

    for media_type, fmt in IMAGE_TYPES.items():
        schemathesis.openapi.media_type(media_type, pictures(fmt).map(lambda p: p[1]))
    schemathesis.openapi.media_type("application/octet-stream", pictures().map(lambda p: p[1]))
    schemathesis.openapi.format(IMAGE_FORMAT, image_field_values())


def unregister() -> None:
    from schemathesis.specs.openapi import unregister_string_format
    from schemathesis.specs.openapi.media_types import unregister_all

    unregister_all()
    unregister_string_format(IMAGE_FORMAT)


@contextmanager
def registered() -> Iterator[None]:
    register()
    try:
        yield
    finally:
        unregister()


def image_size(value: Any) -> tuple[int, int] | None:
    """``(width, height)`` of a generated ``image`` value (file bytes, or base64 / data URL
    text), or None when it is not a picture."""
    data = getattr(value, "data", value)  # schemathesis wraps bytes in `Binary`
    if isinstance(data, str):
        text = data.split(";base64,", 1)[-1]
        try:
            data = base64.b64decode("".join(text.split()), validate=True)
        except ValueError:
            return None
    if not isinstance(data, bytes | bytearray):
        return None
    try:
        with Image.open(io.BytesIO(data)) as im:
            return int(im.size[0]), int(im.size[1])
    except Exception:  # anything PIL cannot open is not a picture
        return None


def fit_request(
    body: Any, path: str, media_type: str | None, part_types: dict[str, str] | None = None
) -> None:
    """Make a valid (positive) request body valid where JSON Schema cannot say (module
    docstring), in place. ``part_types``: the declared content types of multipart parts."""
    if not isinstance(body, dict) or "image" not in body:
        return
    size = image_size(body["image"])
    json_body = media_type == "application/json"
    if size is None:
        if json_body and not re.match(IMAGE_FIELD_PATTERN, str(body["image"])):
            return
        declared = (part_types or {}).get("image", "image/png")
        data = picture(IMAGE_TYPES.get(declared, "PNG"), 32, 24, seed=0)
        body["image"] = base64.b64encode(data).decode("ascii") if json_body else data
        size = (32, 24)
    w, h = size
    if path.endswith("/segment") and not body.get("points") and not body.get("boxes"):
        body["boxes"] = [[0.0, 0.0, float(w), float(h)]]
    for point in body.get("points") or []:
        if isinstance(point, dict):
            point["x"] = min(float(point.get("x", 0)), w)
            point["y"] = min(float(point.get("y", 0)), h)
    boxes = body.get("boxes")
    if isinstance(boxes, list):
        body["boxes"] = [_fit_box(b, w, h) for b in boxes]


def _fit_box(box: Any, w: int, h: int) -> Any:
    if not isinstance(box, list) or len(box) != 4:
        return box
    x1, x2 = sorted(min(float(v), w) for v in (box[0], box[2]))
    y1, y2 = sorted(min(float(v), h) for v in (box[1], box[3]))
    if x1 == x2:
        x1, x2 = 0.0, float(w)
    if y1 == y2:
        y1, y2 = 0.0, float(h)
    return [x1, y1, x2, y2]


def map_case(context: Any, case: Any) -> Any:
    """The schemathesis ``map_case`` hook: :func:`fit_request` on valid cases."""
    meta = case.meta
    if meta is not None and meta.generation.mode.is_positive:
        fit_request(case.body, case.path, case.media_type, case.multipart_content_types)
    return case


def run_schemathesis(
    app: Any, *, max_examples: int, headers: dict[str, str] | None = None, seed: int = 1
) -> tuple[int, list[str]]:
    """schemathesis' engine on an ASGI ``app`` (its ``/openapi.json``), in-process, as
    ``schemathesis run --checks all --max-examples N`` would: every phase that applies,
    every check, the image strategies registered and :func:`map_case`. Returns the number of
    cases and one line per failure or error."""
    import schemathesis
    from schemathesis.config import SchemathesisConfig
    from schemathesis.engine import Status, events

    config = SchemathesisConfig(seed=seed)
    config.projects.override.checks.update(included_check_names=["all"])
    config.projects.override.generation.update(max_examples=max_examples, deterministic=True)
    config.projects.override.update(headers=headers or {}, continue_on_failure=True)
    cases, problems = 0, []
    with registered():
        schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=config)
        schema.hook(map_case)
        for event in schemathesis.engine.from_schema(schema).execute():
            if isinstance(event, events.ScenarioFinished):
                cases += len(event.recorder.cases)
                for checks in event.recorder.checks.values():
                    problems += [
                        f"{event.recorder.label}: {c.name}: {c.failure_info.failure.title}"
                        for c in checks
                        if c.status == Status.FAILURE and c.failure_info is not None
                    ]
            elif isinstance(event, events.NonFatalError):
                problems.append(f"{event.label}: error: {event.value!r}")
            elif isinstance(event, events.FatalError):
                problems.append(f"fatal: {event.exception!r}")
    return cases, sorted(set(problems))
