"""ASGI middleware of the API: the body-size limit and the catch-all 500, both answering with
the service's JSON error body."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi.responses import JSONResponse

from serve.validation import ApiError

log = logging.getLogger("serve.api")

ASGIApp = Callable[
    [MutableMapping[str, Any], Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]],
    Awaitable[None],
]


def error_json(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    """The service's error response: ``{"error": {"code": code, "message": message}}``."""
    return JSONResponse({"error": {"code": code, "message": message}}, status, headers=headers)


class BodyLimitMiddleware:
    """Refuse bodies over ``max_bytes``: at once from ``Content-Length``, else (chunked) as
    they arrive, before the route holds them in memory."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                await error_json(400, "bad_request", "invalid Content-Length")(scope, receive, send)
                return
            if declared > self.max_bytes:
                msg = f"the request body is over the limit of {self.max_bytes} bytes"
                await error_json(413, "payload_too_large", msg)(scope, receive, send)
                return
        received = 0
        limit = self.max_bytes

        async def limited() -> Any:
            nonlocal received
            message = await receive()
            if message.get("type") == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise ApiError(
                        413, "payload_too_large", f"the request body is over {limit} bytes"
                    )
            return message

        await self.app(scope, limited, send)


class CatchAllMiddleware:
    """The last line: an exception no handler took becomes a 500 JSON without details (the
    traceback goes to the server log), and the replica keeps serving."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Any) -> None:
            nonlocal started
            if message.get("type") == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            log.exception("unhandled error in %s %s", scope.get("method"), scope.get("path"))
            if not started:
                response = error_json(500, "internal_error", "internal server error")
                await response(scope, receive, send)
