"""The HTTP error shape of SPEC 5.3: {"error": {"code", "message", "line"?}}."""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException

from contracts.http import ErrorBody, ErrorCode

# statuses the framework answers itself (unknown route, wrong method, ...) -> their code
_FRAMEWORK_CODES = {c.status: c for c in (
    ErrorCode.UNAUTHORIZED, ErrorCode.FORBIDDEN, ErrorCode.NOT_FOUND, ErrorCode.METHOD_NOT_ALLOWED,
)}


class ApiError(Exception):
    """An HTTP error: the status is the code's own (`ErrorCode.status`)."""

    def __init__(
        self, code: ErrorCode, message: str, *, line: int | None = None,
        items: list[dict[str, Any]] | None = None,
    ):
        super().__init__(message)
        self.code, self.message, self.line, self.items = code, message, line, items

    @property
    def status(self) -> int:
        return self.code.status

    def body(self) -> dict[str, Any]:
        err: dict[str, Any] = {"code": str(self.code), "message": self.message}
        if self.line is not None:
            err["line"] = self.line
        if self.items is not None:
            err["items"] = self.items
        return {"error": err}


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for e in exc.errors()[:5]:
        loc = ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body"
        parts.append(f"{loc}: {e.get('msg')}")
    return "; ".join(parts) or "invalid request"


# ---------------------------------------------------------------- what the OpenAPI documents say

ANSWERS: dict[int, str] = {  # status -> what it means here (the body is always ErrorBody)
    400: "VALIDATION_ERROR: a malformed body, parameter or header (the item errors in `items`)",
    401: "UNAUTHORIZED: no token, or a bad one",
    403: "FORBIDDEN: this token's role may not do this",
    404: "NOT_FOUND: unknown, or another organisation's (answered alike)",
    409: "a conflict with the current state (see the code)",
    413: "PAYLOAD_TOO_LARGE: a body over 1 MiB",
    422: "a billing rule refused it (see the code)",
    500: "INTERNAL_ERROR: unexpected; quote the request_id to the operator",
    503: "UNAVAILABLE: Kafka or PostgreSQL cannot be reached now; retry after Retry-After seconds",
}
_FASTAPI_422 = "#/components/schemas/HTTPValidationError"


def document(schema: dict[str, Any], app: FastAPI) -> dict[str, Any]:
    """Make every operation document what the service really answers, in its own error shape:
    FastAPI's default 422 `HTTPValidationError` goes (validation errors are answered 400
    VALIDATION_ERROR by `install`); every operation may answer 400 (the HTTP guard checks every
    request), 500 and 503; 413 when it takes a body; the statuses of its authority rule (401, 403,
    404: `answers` of the shared.auth dependency); and what its route declares (`responses=`)."""
    routes = {(path, m.lower()): route for path, methods, route in _api_routes(app) for m in methods}
    for path, operations in schema.get("paths", {}).items():
        for method, op in operations.items():
            responses = op.setdefault("responses", {})
            for status in [s for s, r in responses.items() if _FASTAPI_422 in json.dumps(r)]:
                del responses[status]
            route = routes.get((path, method))
            answers = {400, 500, 503} | ({413} if "requestBody" in op else set())
            answers |= _rule_answers(route.dependant) if route is not None else set()
            for status in sorted(answers):
                responses.setdefault(str(status), _error_response(status))
            for status, r in responses.items():  # FastAPI names a declared one by its status ("Conflict")
                if status.isdigit() and int(status) in ANSWERS and "/ErrorBody" in json.dumps(r.get("content")):
                    r["description"] = ANSWERS[int(status)]
            op["responses"] = dict(sorted(responses.items()))
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    error_body = ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, definition in {**error_body.pop("$defs", {}), "ErrorBody": error_body}.items():
        components.setdefault(name, definition)
    schema["components"]["schemas"] = dict(sorted(components.items()))
    return schema


def _api_routes(app: FastAPI) -> list[tuple[str, set[str], APIRoute]]:
    """(path, methods, route) of every API route, also those of included routers (FastAPI 0.16x
    keeps them behind `iter_route_contexts`; earlier versions copy them into `app.routes`)."""
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:
        return [(r.path_format, set(r.methods or ()), r) for r in app.routes if isinstance(r, APIRoute)]
    return [(c.path_format, set(c.methods or ()), c.original_route) for c in iter_route_contexts(app.routes)
            if isinstance(c.original_route, APIRoute) and c.path_format]


def _error_response(status: int) -> dict[str, Any]:
    return {"description": ANSWERS[status],
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}}


def _rule_answers(dependant: Any) -> set[int]:
    out: set[int] = set(getattr(dependant.call, "answers", ()))
    for d in dependant.dependencies:
        out |= _rule_answers(d)
    return out


def install(app: FastAPI) -> None:
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document(build(), app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(
            ApiError(ErrorCode.VALIDATION_ERROR, _validation_message(exc)).body(),
            status_code=ErrorCode.VALIDATION_ERROR.status,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = str(_FRAMEWORK_CODES.get(exc.status_code, "HTTP_ERROR"))
        return JSONResponse({"error": {"code": code, "message": str(exc.detail)}}, status_code=exc.status_code)
