"""SPEC 7.1 over HTTP, for every service: one ASGI guard in front of the application.

- Every request gets a `request_id` (a well-formed incoming `X-Request-ID`, else a new one), echoed
  in the `X-Request-ID` response header; an unexpected error is logged with it and answered 500
  INTERNAL_ERROR in the standard error shape, never a traceback.
- A body over 1 MiB is refused 413 PAYLOAD_TOO_LARGE: at once when Content-Length says so, else as
  soon as the bytes read (chunked, or a lying length) pass 1 MiB; nothing more is read.
- A body must be UTF-8 JSON, nested at most 32 levels, with no duplicate object keys, and no string
  (key or value) holding a control character (U+0000-U+001F, U+007F) or an unpaired surrogate;
  the path, query and header values hold no control characters. Else 400 VALIDATION_ERROR.
- The whole request runs under a deadline (AIMIS_HTTP_DEADLINE_S): a request still waiting on a
  dependency then answers 503 UNAVAILABLE with Retry-After (SPEC 7.5), as does any error that
  means Kafka or PostgreSQL is unreachable (shared/unavailable.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import uuid
from typing import Any
from urllib.parse import unquote

from fastapi import FastAPI
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from contracts.http import ErrorCode
from contracts.limits import MAX_BODY_BYTES, MAX_JSON_DEPTH
from shared import observability, unavailable

log = logging.getLogger(__name__)

_BAD_CHARS = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]")  # in decoded JSON strings, paths, queries
_BAD_HEADER = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")  # header values: tab allowed
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKETS = re.compile(r"[\[\]{}]")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


class Rejected(Exception):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class _DuplicateKey(ValueError):
    pass


def json_depth(text: str) -> int:
    """Deepest nesting of objects/arrays, without parsing (strings are blanked out first)."""
    depth = deepest = 0
    for m in _BRACKETS.finditer(_STRINGS.sub('""', text)):
        if m.group() in "[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    doc = dict(pairs)
    if len(doc) != len(pairs):
        seen: set[str] = set()
        dup = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
        raise _DuplicateKey(f"duplicate key {dup!r} in a JSON object")
    return doc


def _bad_string(doc: Any) -> str | None:
    """The first string (key or value) with a control character or an unpaired surrogate."""
    stack = [doc]
    while stack:
        x = stack.pop()
        if isinstance(x, str):
            if _BAD_CHARS.search(x):
                return x
        elif isinstance(x, dict):
            stack.extend(x.keys())
            stack.extend(x.values())
        elif isinstance(x, list):
            stack.extend(x)
    return None


def check_json_body(body: bytes) -> None:
    """Raise Rejected(400) unless `body` is acceptable JSON under SPEC 7.1."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise Rejected(400, ErrorCode.VALIDATION_ERROR, f"body is not UTF-8: {e}") from None
    if json_depth(text) > MAX_JSON_DEPTH:
        raise Rejected(400, ErrorCode.VALIDATION_ERROR, f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        doc = json.loads(text, object_pairs_hook=_pairs)
    except _DuplicateKey as e:
        raise Rejected(400, ErrorCode.VALIDATION_ERROR, str(e)) from None
    except (ValueError, RecursionError) as e:  # also: integers of more than 4,300 digits
        raise Rejected(400, ErrorCode.VALIDATION_ERROR, f"body is not JSON: {str(e)[:200]}") from None
    if (bad := _bad_string(doc)) is not None:
        raise Rejected(400, ErrorCode.VALIDATION_ERROR,
                       f"a string holds a control character or an unpaired surrogate: {ascii(bad[:64])}")


def check_target(scope: Scope) -> None:
    """Path, query string and header values: no control characters."""
    path = scope.get("path", "")
    query = unquote(scope.get("query_string", b"").decode("latin-1"), errors="surrogateescape")
    if _BAD_CHARS.search(path) or _BAD_CHARS.search(query):
        raise Rejected(400, ErrorCode.VALIDATION_ERROR, "the path or query holds a control character")
    for _, value in scope.get("headers", ()):
        if _BAD_HEADER.search(value):
            raise Rejected(400, ErrorCode.VALIDATION_ERROR, "a header value holds a control character")


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            if not value.isdigit():
                raise Rejected(400, ErrorCode.VALIDATION_ERROR, "Content-Length is not a number")
            return int(value)
    return None


async def read_body(scope: Scope, receive: Receive, limit: int = MAX_BODY_BYTES) -> bytes:
    """The whole body, refusing (413) as soon as more than `limit` bytes are declared or read."""
    declared = _content_length(scope)
    if declared is not None and declared > limit:
        raise Rejected(413, ErrorCode.PAYLOAD_TOO_LARGE, f"body of {declared} bytes; at most {limit}")
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise Rejected(413, ErrorCode.PAYLOAD_TOO_LARGE, f"body over {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


class HttpGuard:
    """Pure ASGI middleware (outermost): see the module docstring."""

    def __init__(self, app: ASGIApp, deadline_s: float, service: str = ""):
        self.app, self.deadline_s, self.service = app, deadline_s, service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _request_id(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message = {**message, "headers": [*message.get("headers", []),
                                                   (b"x-request-id", request_id.encode())]}
            await send(message)

        try:
            async with asyncio.timeout(self.deadline_s):
                check_target(scope)
                body = await read_body(scope, receive)
                if body.strip():
                    check_json_body(body)
                await self.app(scope, _replay(body, receive), send_with_id)
        except Rejected as e:
            if not started:
                err = {"error": {"code": e.code, "message": e.message}}
                await self._answer(JSONResponse(err, status_code=e.status), scope, receive, send_with_id)
        except Exception as e:  # noqa: BLE001 - the last line of defence: never a traceback
            if unavailable.is_unavailable(e):
                log.warning("%s %s: dependency unavailable (%r) request_id=%s",
                            scope.get("method"), scope.get("path"), e, request_id)
                if not started:
                    await self._answer(unavailable.response(request_id), scope, receive, send_with_id)
                return
            log.exception("%s %s failed unexpectedly; request_id=%s", scope.get("method"),
                          scope.get("path"), request_id, extra={"service": self.service})
            if not started:
                err = {"error": {"code": ErrorCode.INTERNAL_ERROR, "request_id": request_id,
                                 "message": f"unexpected error; the operator can find it by request_id {request_id}"}}
                await self._answer(JSONResponse(err, status_code=500), scope, receive, send_with_id)

    async def _answer(self, response: JSONResponse, scope: Scope, receive: Receive, send: Send) -> None:
        """A response of the guard itself (the app's own are counted inside it)."""
        observability.HTTP_REQUESTS.labels(self.service, str(response.status_code)).inc()
        await response(scope, receive, send)


def _request_id(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            text: str = value.decode("latin-1")
            if _REQUEST_ID.match(text):
                return text
    return uuid.uuid4().hex


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()
    return replay


def install(app: FastAPI, deadline_s: float, service: str = "") -> None:
    """Add the guard as the outermost middleware (call after every other add_middleware)."""
    unavailable.install(app)
    app.add_middleware(HttpGuard, deadline_s=deadline_s, service=service)
