"""The OpenAPI parts FastAPI cannot derive from routes that parse their own bodies: each image
endpoint takes ``multipart/form-data`` (an ``image`` file part plus option fields) or
``application/json`` (the same fields, ``image`` as base64)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from serve.validation import is_structured


def request_body(json_model: type[BaseModel], form_model: type[BaseModel]) -> dict[str, Any]:
    """A route's ``openapi_extra``: both body types, by reference to the component schemas
    :func:`add_request_schemas` adds."""
    ref = "#/components/schemas/{}"
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {"$ref": ref.format(f"{form_model.__name__}Form")}
                },
                "application/json": {"schema": {"$ref": ref.format(json_model.__name__)}},
            },
        }
    }


def _form_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The multipart schema of ``model``'s fields: the image as a binary part, scalars as
    themselves, lists and objects as JSON text."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    props: dict[str, Any] = {"image": {"type": "string", "format": "binary"}}
    for name, field in model.model_fields.items():
        if is_structured(field.annotation):
            props[name] = {
                "type": "string",
                "description": f"JSON text. {field.description or ''}".strip(),
            }
        else:
            props[name] = schema["properties"][name]
    return {"type": "object", "properties": props, "required": ["image"]}


def add_request_schemas(
    doc: dict[str, Any], pairs: list[tuple[type[BaseModel], type[BaseModel]]]
) -> None:
    """Add each ``(json_model, form_model)``'s schemas (``<Json>`` and ``<Form>Form``, and the
    models they refer to) to the document's components."""
    comps = doc.setdefault("components", {}).setdefault("schemas", {})
    for json_model, form_model in pairs:
        schema = json_model.model_json_schema(ref_template="#/components/schemas/{model}")
        comps.update(schema.pop("$defs", {}))
        comps[json_model.__name__] = schema
        comps[f"{form_model.__name__}Form"] = _form_schema(form_model)
