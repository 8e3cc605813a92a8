"""The OpenAPI document: what FastAPI derives from the routes, plus what it cannot.

- Each image endpoint takes ``multipart/form-data`` (an ``image`` file part of an image type,
  option fields in their JSON spelling, lists as ``application/json`` parts) or
  ``application/json`` (the same fields, ``image`` as base64 or a data URL): both request
  bodies, with the multipart ``encoding``.
- The service's own rules, as JSON Schema states them: the ``image`` field's pattern
  (:data:`serve.validation.IMAGE_FIELD_PATTERN`), the limits of the config (``maxItems``,
  ``maximum``, ``maxLength``), the detector's class names (``enum``), "at least one prompt"
  (``anyOf``) and "every point has a class or none has" (``if``/``then``).

What JSON Schema cannot state is in the descriptions: the image must decode (415/422/413),
prompts must lie inside it and boxes need ``x1 < x2``, ``y1 < y2`` (422).
"""

from __future__ import annotations

import copy
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from serve.config import LimitsConfig
from serve.models import ModelCard
from serve.schemas import (
    DetectJsonRequest,
    DetectOptions,
    ProposalsJsonRequest,
    ProposalsOptions,
    SegmentJsonRequest,
    SegmentOptions,
)
from serve.validation import IMAGE_FIELD_PATTERN, MEDIA_TYPES, is_structured, is_text_list

# (the JSON model, the form model) of each image endpoint
REQUEST_MODELS: tuple[tuple[type[BaseModel], type[BaseModel]], ...] = (
    (DetectJsonRequest, DetectOptions),
    (SegmentJsonRequest, SegmentOptions),
    (ProposalsJsonRequest, ProposalsOptions),
)
# The content types an ``image`` file part may declare (the data decides when it says nothing).
IMAGE_PART_TYPES = (*MEDIA_TYPES.values(), "application/octet-stream")
# The ``format`` of the JSON ``image`` field (an annotation; the pattern is what is checked).
IMAGE_FORMAT = "image-base64"
_REF = "#/components/schemas/{model}"


def request_body(json_model: type[BaseModel], form_model: type[BaseModel]) -> dict[str, Any]:
    """A route's ``openapi_extra``: both body types, by reference to the component schemas
    :func:`build_openapi` adds, and the parts' content types of the multipart one."""
    encoding = {"image": {"contentType": ", ".join(IMAGE_PART_TYPES)}}
    for name, field in form_model.model_fields.items():
        if is_structured(field.annotation) and not is_text_list(field.annotation):
            encoding[name] = {"contentType": "application/json"}
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {"$ref": _REF.format(model=f"{form_model.__name__}Form")},
                    "encoding": encoding,
                },
                "application/json": {"schema": {"$ref": _REF.format(model=json_model.__name__)}},
            },
        }
    }


def _form_schema(json_schema: dict[str, Any], form_model: type[BaseModel]) -> dict[str, Any]:
    """The multipart schema of a JSON request schema: the same fields and rules, the image as
    a binary file part, and a list of strings as one part per item (so never null)."""
    schema = copy.deepcopy(json_schema)
    schema["title"] = f"{form_model.__name__} (multipart)"
    schema["description"] = (form_model.__doc__ or "").strip()
    props = schema["properties"]
    props["image"] = {
        "type": "string",
        "format": "binary",
        "minLength": 1,
        "description": "The image file: PNG, JPEG, GIF, WebP, BMP or TIFF (a declared type "
        "must match the data).",
    }
    for name, field in form_model.model_fields.items():
        if is_text_list(field.annotation) and "anyOf" in props[name]:
            (array,) = [s for s in props[name].pop("anyOf") if s.get("type") == "array"]
            props[name].pop("default", None)
            props[name].update(array)
    return schema


def _lower(schema: dict[str, Any], key: str, value: int) -> None:
    """Set a bound to the config's value unless the request model's own is lower."""
    schema[key] = min(value, schema.get(key, value))


def _apply_service_rules(comps: dict[str, Any], limits: LimitsConfig, detector: ModelCard) -> None:
    """Write the config's limits, the class names and the cross-field rules into the JSON
    request schemas (and the models they refer to)."""
    image = {
        "format": IMAGE_FORMAT,
        "pattern": IMAGE_FIELD_PATTERN,
        "maxLength": limits.max_body_bytes,
    }
    for json_model, _ in REQUEST_MODELS:
        comps[json_model.__name__]["properties"]["image"].update(image)
    detect = comps[DetectJsonRequest.__name__]["properties"]
    if detector.max_detections is not None:
        _lower(detect["max_detections"], "maximum", detector.max_detections)
    segment = comps[SegmentJsonRequest.__name__]["properties"]
    _lower(segment["points"], "maxItems", limits.max_points)
    _lower(segment["boxes"], "maxItems", limits.max_boxes)
    classes = {"type": "string", "enum": list(detector.classes)}
    comps["ProposalPoint"]["properties"]["class_name"]["anyOf"] = [classes, {"type": "null"}]
    proposals = comps[ProposalsJsonRequest.__name__]["properties"]
    _lower(proposals["points"], "maxItems", limits.max_proposal_points)
    # a point with a class makes every point need one
    classed = {"required": ["class_name"], "properties": {"class_name": {"type": "string"}}}
    proposals["points"].update({"if": {"contains": classed}, "then": {"items": classed}})
    for branch in proposals["labels"]["anyOf"]:
        if branch.get("type") == "array":
            branch.update(items=classes, uniqueItems=True)


def build_openapi(app: FastAPI, limits: LimitsConfig, detector: ModelCard) -> dict[str, Any]:
    """The service's OpenAPI document (see the module docstring)."""
    doc = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    comps = doc.setdefault("components", {}).setdefault("schemas", {})
    for json_model, _ in REQUEST_MODELS:
        schema = json_model.model_json_schema(ref_template=_REF)
        comps.update(schema.pop("$defs", {}))
        comps[json_model.__name__] = schema
    _apply_service_rules(comps, limits, detector)
    for json_model, form_model in REQUEST_MODELS:
        comps[f"{form_model.__name__}Form"] = _form_schema(comps[json_model.__name__], form_model)
    return doc
