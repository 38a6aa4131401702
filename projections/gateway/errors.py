"""Every error the gateway answers, in one shape.

A 4xx or 5xx body is always
`{"error": {"code": "...", "message": "...", "problems": [{"field": "...", "reason": "..."}]}}`
(plus, for some codes, extra keys such as `position`). Routes raise `ApiError`; request
validation, unknown routes and unexpected exceptions are turned into the same shape here.
An unexpected exception is logged with its traceback and answered with an id that finds it
in the log, never with the traceback itself.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("taskfold.gateway")

Problem = tuple[str, str] | Mapping[str, str]


class ProblemBody(BaseModel):
    field: str
    reason: str


class ErrorDetail(BaseModel):
    model_config = ConfigDict(extra="allow")

    code: str
    message: str
    problems: list[ProblemBody] = []


class ErrorBody(BaseModel):
    """The body of every error answer."""

    error: ErrorDetail


class ApiError(Exception):
    """An error answered as the gateway's error body; `problems` name fields and reasons."""

    def __init__(self, status: int, code: str, message: str, problems: Sequence[Problem] = (),
                 *, headers: Mapping[str, str] | None = None, extra: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.problems = [_problem(p) for p in problems]
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})

    def body(self) -> dict[str, Any]:
        """The JSON body of this error."""
        return error_body(self.code, self.message, self.problems, **self.extra)

    def response(self) -> JSONResponse:
        """The HTTP response of this error."""
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers or None)


def _problem(problem: Problem) -> dict[str, str]:
    if isinstance(problem, Mapping):
        return {"field": str(problem["field"]), "reason": str(problem["reason"])}
    field, reason = problem
    return {"field": str(field), "reason": str(reason)}


def error_body(code: str, message: str, problems: Iterable[Problem] = (), **extra: Any) -> dict[str, Any]:
    """`{"error": {...}}` with the problems as field/reason objects."""
    return {"error": {"code": code, "message": message, "problems": [_problem(p) for p in problems], **extra}}


def field_path(loc: Sequence[Any]) -> str:
    """A validation error's location as a dotted path; the body is implied (`tasks.3.priority`)."""
    parts = [str(part) for part in loc]
    if parts and parts[0] == "body":
        parts = parts[1:]
    return ".".join(parts) or "(body)"


def validation_problems(errors: Iterable[Mapping[str, Any]], prefix: str = "") -> list[tuple[str, str]]:
    """pydantic's error list as (dotted field, reason) pairs."""
    out = []
    for error in errors:
        path = field_path(error.get("loc", ()))
        if prefix:
            path = prefix + path if path != "(body)" else prefix.rstrip(".")
        out.append((path, error["msg"]))
    return out


HTTP_CODES = {400: "bad_request", 401: "unauthenticated", 403: "forbidden", 404: "not_found",
              405: "method_not_allowed", 406: "not_acceptable", 409: "conflict", 413: "payload_too_large",
              415: "unsupported_media_type", 422: "invalid_request", 429: "too_many_requests",
              503: "unavailable"}


async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
    return exc.response()


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    broken = next((e for e in exc.errors() if e.get("type") == "json_invalid"), None)
    if broken is not None:
        reason = json_problem(exc.body, broken)
        return JSONResponse(error_body("invalid_json", f"the body is not valid JSON: {reason}", [("body", reason)]),
                            status_code=400)
    problems = validation_problems(exc.errors())
    fields = ", ".join(sorted({field for field, _ in problems}))
    return JSONResponse(error_body("invalid_request", f"the request is not valid: {fields}", problems),
                        status_code=422)


def json_problem(document: Any, error: Mapping[str, Any]) -> str:
    """`invalid JSON at line L column C: <what>` for a body that did not parse."""
    what = (error.get("ctx") or {}).get("error", "not JSON")
    loc = error.get("loc", ())
    position = loc[1] if len(loc) > 1 and isinstance(loc[1], int) else None
    if position is None or not isinstance(document, (str, bytes)):
        return f"invalid JSON: {what}"
    text = document.decode("utf-8", "replace") if isinstance(document, bytes) else document
    line = text.count("\n", 0, position) + 1
    column = position - (text.rfind("\n", 0, position) + 1) + 1
    return f"invalid JSON at line {line} column {column}: {what}"


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    code = HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
    message = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
    return JSONResponse(error_body(code, message), status_code=exc.status_code, headers=exc.headers)


def install(app: FastAPI) -> None:
    """Answer ApiError, validation errors and HTTP errors with the error body."""
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)


class PayloadTooLarge(Exception):
    """A request body past the limit, found while it streams in."""


class Guard:
    """ASGI middleware: refuse bodies over `max_body_bytes` (413) and answer crashes with a 500.

    1. A Content-Length over the limit is refused before the body is read.
    2. A body without a length (chunked) is counted as it arrives; past the limit the
       read stops and the answer is 413, so the body is never parsed. Whatever the app
       answers to a body cut short (FastAPI makes it a 400 "error parsing the body") is
       replaced by that 413.
    3. An exception nobody handled is logged with its traceback and answered with a 500
       body holding an id to find it in the log; if the response had already started,
       it is re-raised for the server to close the connection.
    """

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_body_bytes
        length = _content_length(scope)
        if length is not None and length > limit:
            await _send_json(send, 413, _too_large(limit))
            return
        started = overflow = False
        seen = 0

        async def counted() -> Message:
            nonlocal seen, overflow
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    overflow = True
                    raise PayloadTooLarge()
            return message

        async def tracked(message: Message) -> None:
            nonlocal started
            if overflow:  # the app's answer to a body cut short: 413 instead
                if message["type"] == "http.response.start" and not started:
                    started = True
                    await _send_json(send, 413, _too_large(limit))
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except PayloadTooLarge:
            if not started:
                await _send_json(send, 413, _too_large(limit))
            elif not overflow:
                raise
        except Exception:
            incident = uuid.uuid4().hex[:12]
            log.exception("unhandled error %s in %s %s", incident, scope.get("method"), scope.get("path"))
            if started:
                raise
            await _send_json(send, 500, error_body(
                "internal_error", f"the gateway failed to handle this request (incident {incident}); "
                "the gateway's log has the details", incident=incident))


JSON_TYPE = "application/json"


class JsonBodies:
    """ASGI middleware: a request body must be JSON (`Content-Type: application/json` or `+json`), else 415.

    A POST without a body (cancel, heartbeat) needs no Content-Type. Without this, a body
    sent without one (curl -d sends form encoding) fails validation with a message that
    does not say the header is the problem.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and _has_body(scope):
            content_type = _header(scope, b"content-type")
            media = (content_type or "").split(";")[0].strip().lower()
            if media != JSON_TYPE and not (media.startswith("application/") and media.endswith("+json")):
                got = f"got {content_type!r}" if content_type else "the request has no Content-Type"
                await _send_json(send, 415, error_body(
                    "unsupported_media_type", f"a request body must be JSON: send Content-Type: {JSON_TYPE} ({got})",
                    [("content-type", f"expected {JSON_TYPE}")]))
                return
        await self.app(scope, receive, send)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None


def _has_body(scope: Scope) -> bool:
    length = _content_length(scope)
    return (length is not None and length > 0) or _header(scope, b"transfer-encoding") is not None


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _too_large(limit: int) -> dict[str, Any]:
    return error_body("payload_too_large", f"the request body is larger than the limit of {limit} bytes",
                      limit=limit)


async def _send_json(send: Send, status: int, body: dict[str, Any]) -> None:
    raw = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode())]})
    await send({"type": "http.response.body", "body": raw})
