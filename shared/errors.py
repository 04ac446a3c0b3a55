"""The HTTP error shape of SPEC 5.3: {"error": {"code", "message", "line"?}}."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from contracts.http import ErrorCode

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


def install(app: FastAPI) -> None:
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
