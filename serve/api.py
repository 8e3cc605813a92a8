"""The HTTP API: a FastAPI app built by :func:`create_api` around a :class:`~serve.backend.Backend`.

Ray Serve's ingress builds it with a :class:`~serve.backend.RayBackend`; tests and tools build
it with a :class:`~serve.backend.LocalBackend` and call it in-process, without Ray.

Requests with an image are ``multipart/form-data`` (an ``image`` file part plus option
fields in their JSON spelling; lists as JSON text) or ``application/json`` (the same fields,
``image`` as base64 or a data URL). ``/openapi.json`` states what is accepted, with the
config's limits and the detector's classes (:mod:`serve.openapi`).
Every refusal is a 4xx with ``{"error": {"code", "message"}}``; an unexpected failure is a 500
with a fixed message, logged here with its traceback and never sent to the client.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from serve.backend import Backend
from serve.config import LimitsConfig, ServeConfig
from serve.middleware import BodyLimitMiddleware, CatchAllMiddleware, error_json
from serve.models import Image, ProposalCall, SegmentCall
from serve.openapi import build_openapi, request_body
from serve.render import (
    detect_response,
    model_info,
    proposals_response,
    render_detections,
    segment_response,
)
from serve.schemas import (
    DetectJsonRequest,
    DetectOptions,
    DetectResponse,
    ErrorResponse,
    HealthResponse,
    ModelsResponse,
    ProposalsJsonRequest,
    ProposalsOptions,
    ProposalsResponse,
    ReadyResponse,
    SegmentJsonRequest,
    SegmentOptions,
    SegmentResponse,
)
from serve.validation import (
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
    resolve_class_names,
)

log = logging.getLogger("serve.api")
MAX_FORM_FIELDS = 256

_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "too_many_requests",
    503: "unavailable",
}
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": desc}
    for code, desc in (
        (400, "Unparseable body (malformed JSON or multipart, empty body)"),
        (401, "Missing or wrong API key"),
        (413, "Body, image bytes or image pixels over the limit"),
        (415, "Unsupported content type or image format"),
        (422, "Invalid image, prompts or options"),
        (500, "Unexpected server error (no details)"),
    )
}


# Declares the bearer scheme in the OpenAPI document; the check itself is check_bearer's.
_BEARER = HTTPBearer(auto_error=False, description="The API key (when the service has one)")


# --------------------------------------------------------------------------- requests


async def read_request(
    request: Request, json_model: type[BaseModel], form_model: type[BaseModel], limits: LimitsConfig
) -> tuple[bytes, str | None, Any]:
    """``(image bytes, declared media type, options)`` of a JSON or multipart request.

    ``json_model`` extends ``form_model`` with the base64 ``image``; the options returned are
    an instance of either (both carry every option field).
    """
    ctype = media_type(request.headers.get("content-type"))
    if ctype == "application/json":
        req: Any = parse_json_body(await request.body(), json_model)
        data, declared = decode_base64_image(req.image, limits)
        return data, declared, req
    if ctype == "multipart/form-data":
        return await _read_multipart(request, form_model)
    if not ctype and not await request.body():
        raise ApiError(400, "empty_body", "the request body is empty; send an image")
    raise ApiError(
        415,
        "unsupported_media_type",
        f"content type {ctype or '(none)'!r} is not accepted: send multipart/form-data with an "
        "'image' file, or application/json with a base64 'image'",
    )


async def _read_multipart(
    request: Request, form_model: type[BaseModel]
) -> tuple[bytes, str | None, Any]:
    try:
        # one part per field, and per label: COCO's 80 classes fit
        form = await request.form(max_files=1, max_fields=MAX_FORM_FIELDS)
    except ApiError:
        raise
    except Exception as exc:  # python-multipart / Starlette parse errors of a client body
        detail = getattr(exc, "detail", None) or getattr(exc, "message", None) or ""
        raise ApiError(
            400, "malformed_multipart", f"malformed multipart body {detail}".strip()
        ) from None
    try:
        image: UploadFile | None = None
        fields: dict[str, list[str]] = {}
        for key, value in form.multi_items():
            if key == "image":
                if not isinstance(value, UploadFile):
                    raise ApiError(422, "invalid_request", "'image' must be a file part")
                if image is not None:
                    raise ApiError(422, "invalid_request", "only one 'image' part is accepted")
                image = value
            elif isinstance(value, UploadFile):
                raise ApiError(422, "invalid_request", f"form field {key!r} must be text")
            else:
                fields.setdefault(key, []).append(value)
        if image is None:
            raise ApiError(422, "invalid_request", "missing the file part 'image'")
        data = await image.read()
        return data, image.content_type, parse_form_fields(fields, form_model)
    finally:
        await form.close()


def _load_image(data: bytes, declared: str | None, limits: LimitsConfig) -> Image:
    check_image_bytes(data, declared, limits)
    return decode_image(data, limits)


def _accepts_png(accept: str | None) -> bool:
    types = {media_type(part) for part in (accept or "").split(",")}
    return "image/png" in types and "application/json" not in types


def _json(model: BaseModel) -> JSONResponse:
    return JSONResponse(model.model_dump(mode="json", exclude_none=True))


# --------------------------------------------------------------------------- the app


def create_api(cfg: ServeConfig, backend: Backend, api_key: str | None = None) -> FastAPI:
    """The FastAPI app of the service.

    Args:
        cfg: limits and settings.
        backend: where decoded images go (local models or Ray Serve handles).
        api_key: the bearer token every ``/v1`` endpoint requires; None = no authentication.
    """
    limits = cfg.limits
    app = FastAPI(
        title="weaksam",
        version="1.0.0",
        description="WeakSAM inference: detection, prompted segmentation (SAM) and WeakSAM "
        "proposals. Boxes are XYXY in original-image pixels (continuous convention); masks "
        'are COCO RLE. Errors are JSON: {"error": {"code", "message"}}.',
        # served below: the document needs the detector's classes, an async call
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return error_json(exc.status, exc.code, exc.message, headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        loc = ".".join(str(p) for p in first.get("loc", ()))
        return error_json(422, "invalid_request", f"{loc}: {first.get('msg', 'invalid')}")

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _STATUS_CODES.get(exc.status_code, "error")
        message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
        return error_json(exc.status_code, code, message, dict(exc.headers or {}) or None)

    app.add_middleware(BodyLimitMiddleware, max_bytes=limits.max_body_bytes)
    app.add_middleware(CatchAllMiddleware)

    async def authorize(
        request: Request, _: Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)]
    ) -> None:
        check_bearer(request.headers.get("authorization"), api_key)

    v1 = APIRouter(prefix="/v1", dependencies=[Depends(authorize)] if api_key else [])

    @app.get("/healthz", response_model=HealthResponse, tags=["status"])
    async def healthz() -> HealthResponse:
        """Liveness: the HTTP layer answers (no model is called)."""
        return HealthResponse()

    @app.get(
        "/readyz",
        response_model=ReadyResponse,
        responses={503: {"model": ReadyResponse, "description": "A model is not loaded"}},
        tags=["status"],
    )
    async def readyz() -> JSONResponse:
        """Readiness: every model deployment answers."""
        models = await backend.ready()
        body = ReadyResponse(ready=all(models.values()), models=models)
        return JSONResponse(body.model_dump(), 200 if body.ready else 503)

    @v1.get("/models", response_model=ModelsResponse, responses=_ERRORS, tags=["status"])
    async def models() -> JSONResponse:
        """The loaded models: names, classes, checkpoint ids, whether untrained."""
        cards = await backend.cards()
        return _json(ModelsResponse(models=[model_info(c) for c in cards.values()]))

    @v1.post(
        "/detect",
        response_model=DetectResponse,
        responses={
            **_ERRORS,
            200: {"content": {"image/png": {}}, "description": "Detections (JSON) or overlay"},
        },
        openapi_extra=request_body(DetectJsonRequest, DetectOptions),
        tags=["inference"],
    )
    async def detect(request: Request) -> Response:
        """Detect objects: boxes, classes, scores and (for mask models) instance masks.

        Multipart: ``image`` file + option fields. JSON: ``image`` as base64 + options.
        ``response_format=png`` (or ``Accept: image/png``) answers with the rendered overlay.
        """
        data, declared, opts = await read_request(request, DetectJsonRequest, DetectOptions, limits)
        card = (await backend.cards())["detector"]
        k = check_max_detections(opts.max_detections, card.max_detections or opts.max_detections)
        image = await run_in_threadpool(_load_image, data, declared, limits)
        dets = await backend.detect(image, opts.score_threshold, k)
        want_png = opts.response_format == "png" or _accepts_png(request.headers.get("accept"))
        overlay = None
        if want_png or opts.overlay:
            overlay = await run_in_threadpool(render_detections, image, dets, card.classes)
        if want_png:
            return Response(overlay, media_type="image/png", headers={"X-Model-Id": card.model_id})
        body = await run_in_threadpool(
            detect_response, dets, card.classes, card.model_id, opts, overlay
        )
        return _json(body)

    @v1.post(
        "/segment",
        response_model=SegmentResponse,
        responses=_ERRORS,
        openapi_extra=request_body(SegmentJsonRequest, SegmentOptions),
        tags=["inference"],
    )
    async def segment(request: Request) -> Response:
        """SAM masks for point and/or box prompts (COCO RLE, with predicted IoU and boxes)."""
        data, declared, opts = await read_request(
            request, SegmentJsonRequest, SegmentOptions, limits
        )
        if not opts.points and not opts.boxes:
            raise ApiError(422, "invalid_prompt", "give at least one point or box prompt")
        image = await run_in_threadpool(_load_image, data, declared, limits)
        h, w = int(image.shape[0]), int(image.shape[1])
        call = SegmentCall(
            points=check_points(
                [(p.x, p.y) for p in opts.points], w, h, limits.max_points, "points"
            ),
            labels=np.asarray([p.label for p in opts.points], dtype=np.int64),
            boxes=check_boxes(opts.boxes, w, h, limits.max_boxes),
            multipoint=opts.multipoint,
            multimask=opts.multimask_output,
        )
        result = await backend.segment(image, call)
        card = (await backend.cards())["segmenter"]
        return _json(await run_in_threadpool(segment_response, result, card.model_id))

    @v1.post(
        "/proposals",
        response_model=ProposalsResponse,
        responses=_ERRORS,
        openapi_extra=request_body(ProposalsJsonRequest, ProposalsOptions),
        tags=["inference"],
    )
    async def proposals(request: Request) -> Response:
        """WeakSAM proposals (``SamPromptEngine.generate``): the point grid plus optional peak
        points with classes (class-wise prompts). The service has no classifier: points come
        from the client; ``labels`` keeps only points of those classes."""
        data, declared, opts = await read_request(
            request, ProposalsJsonRequest, ProposalsOptions, limits
        )
        cards = await backend.cards()
        classes = cards["detector"].classes
        named = [p.class_name is not None for p in opts.points]
        if any(named) and not all(named):
            raise ApiError(422, "invalid_prompt", "either every point has a class_name or none has")
        label_ids = None
        if opts.labels is not None:
            label_ids = set(resolve_class_names(opts.labels, classes, "labels"))
            if len(label_ids) != len(opts.labels):
                raise ApiError(422, "invalid_request", "labels must be distinct")
        names = [p.class_name for p in opts.points if p.class_name is not None]
        ids = resolve_class_names(names, classes, "points.class_name")
        image = await run_in_threadpool(_load_image, data, declared, limits)
        h, w = int(image.shape[0]), int(image.shape[1])
        pts = check_points(
            [(p.x, p.y) for p in opts.points], w, h, limits.max_proposal_points, "points"
        )
        keep = np.ones(len(opts.points), dtype=bool)
        if ids and label_ids is not None:
            keep = np.asarray([c in label_ids for c in ids], dtype=bool)
        call = ProposalCall(
            points=pts[keep],
            classes=np.asarray(ids, dtype=np.int64)[keep] if ids else None,
            kinds=tuple(p.kind for p, k in zip(opts.points, keep, strict=True) if k),
            include_grid=opts.include_grid,
            return_masks=opts.return_masks,
            max_proposals=opts.max_proposals,
        )
        props = await backend.proposals(image, call)
        model_id = cards["segmenter"].model_id
        return _json(await run_in_threadpool(proposals_response, props, classes, model_id))

    app.include_router(v1)

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi_json() -> JSONResponse:
        if app.openapi_schema is None:
            try:
                detector = (await backend.cards())["detector"]
            except Exception:  # a model deployment that does not answer yet
                log.warning("openapi: the detector did not answer", exc_info=True)
                return error_json(503, "unavailable", "the models are not ready; try again")
            app.openapi_schema = build_openapi(app, limits, detector)
        return JSONResponse(app.openapi_schema)

    @app.get("/docs", include_in_schema=False)
    async def docs(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")
        return get_swagger_ui_html(openapi_url=f"{root}/openapi.json", title="weaksam")

    return app
