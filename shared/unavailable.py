"""SPEC 7.5: when Kafka or PostgreSQL cannot be reached, answer 503 UNAVAILABLE with Retry-After.

`is_unavailable` names the errors that mean "a dependency is down or too slow" (connection refused
or lost, the server shutting down, a bounded wait that ran out, any Kafka client error); the HTTP
guard (shared/http_limits.py) and the exception handlers installed here turn them into the same 503.
"""

from __future__ import annotations

import asyncpg
from aiokafka.errors import KafkaError
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from contracts.http import ErrorCode

RETRY_AFTER_S = 5

UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,  # connection refused / reset (asyncpg connects raise these)
    TimeoutError,  # a bounded wait ran out: pool acquire, command, Kafka publish, the request deadline
    asyncpg.PostgresConnectionError,  # class 08: connection lost, cannot connect
    asyncpg.exceptions.OperatorInterventionError,  # class 57: admin shutdown, cannot connect now
    asyncpg.exceptions.ConnectionDoesNotExistError,
    KafkaError,
)


def is_unavailable(exc: BaseException) -> bool:
    if isinstance(exc, asyncpg.InterfaceError):  # "connection is closed", "pool is closing"
        return "closed" in str(exc) or "closing" in str(exc)
    return isinstance(exc, UNAVAILABLE_ERRORS)


def response(request_id: str | None, what: str = "a dependency (Kafka or PostgreSQL)") -> JSONResponse:
    err: dict[str, object] = {
        "code": ErrorCode.UNAVAILABLE,
        "message": f"{what} cannot be reached right now; retry after {RETRY_AFTER_S} s",
    }
    if request_id:
        err["request_id"] = request_id
    return JSONResponse({"error": err}, status_code=503, headers={"Retry-After": str(RETRY_AFTER_S)})


def install(app: FastAPI) -> None:
    async def _handler(request: Request, exc: Exception) -> JSONResponse:
        if not is_unavailable(exc):
            raise exc
        return response(getattr(request.state, "request_id", None))

    for cls in (*UNAVAILABLE_ERRORS, asyncpg.InterfaceError):
        app.add_exception_handler(cls, _handler)
