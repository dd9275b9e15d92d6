"""Per-request plumbing as one pure ASGI middleware: request id, JSON access log, body limits.

Pure ASGI (not BaseHTTPMiddleware) so it adds no task or buffering per request.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable
from typing import Protocol

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.http.problems import REQUEST_ID_SCOPE_KEY, problem_response
from app.logs import request_id_var

MAX_REQUEST_ID = 128
_REQUEST_ID_RE = re.compile(rf"^[A-Za-z0-9._:-]{{1,{MAX_REQUEST_ID}}}$")
_BODY_METHODS = {b"POST", b"PUT", b"PATCH"}
_access_log = logging.getLogger("app.access")


class RequestObserver(Protocol):
    """Where finished requests are counted (the metrics registry, in the app)."""

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None: ...


def _is_json(content_type: str) -> bool:
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type == "application/json" or media_type.endswith("+json")


def _is_form(content_type: str) -> bool:
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type == "application/x-www-form-urlencoded"


class RequestContextMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        max_body_bytes: int,
        observer: Callable[[], RequestObserver | None],
        form_paths: str | None = None,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        # Paths under this prefix also take HTML forms (the dashboard's, without script).
        self.form_paths = form_paths
        # Asked per request: the registry is built in the lifespan, after the middleware.
        self.observer = observer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        given = headers.get(b"x-request-id", b"").decode("latin-1")
        request_id = given if _REQUEST_ID_RE.fullmatch(given) else str(uuid.uuid4())
        token = request_id_var.set(request_id)
        scope[REQUEST_ID_SCOPE_KEY] = request_id
        started = time.perf_counter()
        status_holder = [500]

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder[0] = message["status"]
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-request-id", request_id.encode()),
                ]
            await send(message)

        try:
            rejection = (
                self._reject(scope, headers)
                if len(given) <= MAX_REQUEST_ID
                else problem_response(
                    None,
                    400,
                    f"X-Request-ID is longer than {MAX_REQUEST_ID} characters",
                    instance=scope["path"],
                )
            )
            if rejection is not None:
                await rejection(scope, receive, send_with_id)
            else:
                await self.app(scope, self._limited(receive), send_with_id)
        finally:
            seconds = time.perf_counter() - started
            route = getattr(scope.get("route"), "path", "unmatched")
            observer = self.observer()
            if observer is not None:
                observer.observe_request(route, scope["method"], status_holder[0], seconds)
            _access_log.info(
                "request",
                extra={
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": status_holder[0],
                    "duration_ms": round(seconds * 1000, 2),
                },
            )
            request_id_var.reset(token)

    def _reject(self, scope: Scope, headers: dict[bytes, bytes]) -> ASGIApp | None:
        """Refuse oversized or non-JSON bodies before the app reads them."""
        if scope["method"].encode() not in _BODY_METHODS:
            return None
        length_text = headers.get(b"content-length")
        has_body = headers.get(b"transfer-encoding") is not None
        if length_text is not None:
            try:
                length = int(length_text)
            except ValueError:
                return problem_response(
                    None, 400, "Content-Length is not a number", instance=scope["path"]
                )
            if length > self.max_body_bytes:
                return self._too_large(scope["path"])
            has_body = has_body or length > 0
        content_type = headers.get(b"content-type", b"").decode("latin-1")
        if (
            has_body
            and self.form_paths is not None
            and scope["path"].startswith(self.form_paths)
            and _is_form(content_type)
        ):
            return None
        if has_body and not _is_json(content_type):
            return problem_response(
                None,
                415,
                f"send JSON (application/json), not {content_type or 'no type'!r}",
                instance=scope["path"],
            )
        return None

    def _too_large(self, path: str) -> ASGIApp:
        return problem_response(
            None, 413, f"the request body is larger than {self.max_body_bytes} bytes", instance=path
        )

    def _limited(self, receive: Receive) -> Receive:
        """Counts streamed bodies too (chunked requests carry no Content-Length)."""
        received = 0
        limit = self.max_body_bytes

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # FastAPI lets HTTPException through body parsing; problems.py renders it.
                    raise HTTPException(413, f"the request body is larger than {limit} bytes")
            return message

        return limited_receive
