"""The HTTP guard of every service (shared/http_limits.py) on a small app under uvicorn: no broker,
no database. SPEC 7.1 (limits, 500 shape with request_id) and 7.5 (503 + Retry-After, no hang)."""

from __future__ import annotations

import asyncio
import logging
import time

import asyncpg
import httpx
import pytest
from aiokafka.errors import KafkaConnectionError
from fastapi import FastAPI
from pydantic import BaseModel

from contracts.limits import Id128
from shared import errors, http_limits
from tests.support.rawhttp import exchange
from tests.support.services import serve_in_process

MIB = 1024 * 1024


class Body(BaseModel):
    id: Id128


def _app() -> FastAPI:
    app = FastAPI()
    errors.install(app)

    @app.post("/echo")
    async def echo(body: Body) -> dict[str, str]:
        return {"id": body.id}

    @app.post("/raw")
    async def raw(request: __import__("fastapi").Request) -> dict[str, int]:
        return {"bytes": len(await request.body())}

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret internals /etc/passwd")

    @app.get("/pg-down")
    async def pg_down() -> None:
        raise asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed in the middle of operation")

    @app.get("/refused")
    async def refused() -> None:
        raise ConnectionRefusedError(111, "Connect call failed")

    @app.get("/kafka-down")
    async def kafka_down() -> None:
        raise KafkaConnectionError("Unable to bootstrap from [('127.0.0.1', 1)]")

    @app.get("/hang")
    async def hang() -> None:
        await asyncio.sleep(60)

    http_limits.install(app, deadline_s=1.0, service="test")
    return app


@pytest.fixture(scope="module")
async def url():
    async with serve_in_process(_app()) as u:
        yield u


async def test_unexpected_error_is_500_in_the_error_shape_with_a_request_id_and_no_traceback(url, caplog):
    caplog.set_level(logging.ERROR)
    async with httpx.AsyncClient(base_url=url) as c:
        r = await c.get("/boom")
    assert r.status_code == 500
    err = r.json()["error"]
    assert err["code"] == "INTERNAL_ERROR" and err["request_id"] == r.headers["x-request-id"]
    assert "passwd" not in r.text and "Traceback" not in r.text
    assert any(err["request_id"] in rec.getMessage() for rec in caplog.records)


async def test_request_id_is_echoed_or_made_up(url):
    async with httpx.AsyncClient(base_url=url) as c:
        mine = await c.post("/echo", json={"id": "a"}, headers={"X-Request-ID": "req-123"})
        forged = await c.post("/echo", json={"id": "a"}, headers={"X-Request-ID": "bad id\twith tab"})
    assert mine.headers["x-request-id"] == "req-123"
    assert forged.headers["x-request-id"] != "bad id\twith tab" and len(forged.headers["x-request-id"]) == 32


@pytest.mark.parametrize("path", ["/pg-down", "/refused", "/kafka-down"])
async def test_dependency_errors_are_503_with_retry_after(url, path):
    async with httpx.AsyncClient(base_url=url) as c:
        r = await c.get(path)
    assert r.status_code == 503 and r.headers["retry-after"] == "5"
    assert r.json()["error"]["code"] == "UNAVAILABLE"


async def test_a_hanging_request_answers_503_at_the_deadline(url):
    started = time.monotonic()
    async with httpx.AsyncClient(base_url=url) as c:
        r = await c.get("/hang")
    assert r.status_code == 503 and r.headers["retry-after"] == "5"
    assert time.monotonic() - started < 3


async def test_body_of_exactly_1_mib_passes_and_one_byte_more_is_413(url):
    ok = b'"' + b"a" * (MIB - 2) + b'"'
    async with httpx.AsyncClient(base_url=url) as c:
        assert (await c.post("/raw", content=ok)).json() == {"bytes": MIB}
        r = await c.post("/raw", content=ok + b" ")
    assert r.status_code == 413 and r.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"


async def test_chunked_body_over_1_mib_is_413_before_the_body_ends(url):
    head = b"POST /raw HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n"
    chunk = b"%x\r\n" % (256 * 1024) + b" " * (256 * 1024) + b"\r\n"
    answer = await exchange(url, head, [chunk] * 6)  # 1.5 MiB sent, no terminating chunk
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"PAYLOAD_TOO_LARGE" in answer


async def test_declared_length_over_1_mib_is_413_without_sending_the_body(url):
    head = b"POST /raw HTTP/1.1\r\nHost: x\r\nContent-Length: 1048577\r\n\r\n"
    answer = await exchange(url, head, [])
    assert answer.startswith(b"HTTP/1.1 413") and b"PAYLOAD_TOO_LARGE" in answer


async def test_understated_length_reads_only_what_was_declared(url):
    # Content-Length 10 followed by 2 MiB: the request is the first 10 bytes (not JSON: 400); the
    # rest is garbage on the connection, which the HTTP parser refuses; nothing reaches 500.
    head = b"POST /raw HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n"
    answer = await exchange(url, head, [b"x" * (2 * MIB)])
    assert answer.startswith(b"HTTP/1.1 400") and b" 500 " not in answer


async def test_model_types_refuse_control_characters_with_400(url):
    async with httpx.AsyncClient(base_url=url) as c:
        r = await c.post("/echo", json={"id": "x" * 129})
    assert r.status_code == 400 and r.json()["error"]["code"] == "VALIDATION_ERROR"


async def test_refusals_of_the_guard_are_counted_in_the_request_metric(url):
    from shared.observability import HTTP_REQUESTS

    before = HTTP_REQUESTS.labels("test", "400")._value.get()
    async with httpx.AsyncClient(base_url=url) as c:
        r = await c.post("/raw", content=b"[" * 40 + b"]" * 40)
    assert r.status_code == 400 and r.json()["error"]["code"] == "VALIDATION_ERROR"
    assert HTTP_REQUESTS.labels("test", "400")._value.get() == before + 1
