"""SPEC 7.1 over HTTP, against all four running services: each kind of hostile request is refused
with a 4xx (never a 500, never a hang), and right after it another organisation is still billed:
its usage, posted by the platform, is deducted within seconds."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest

from tests.support.inproc import stack_with_orgs
from tests.support.rawhttp import exchange, status_of
from tests.support.services import SECRET, bearer

pytestmark = pytest.mark.integration

MIB = 1024 * 1024
NOW = datetime.now(timezone.utc)
PLATFORM = bearer(SECRET, role="platform")
ADMIN = bearer(SECRET)


@dataclass
class Target:
    stack: Any
    http: httpx.AsyncClient
    attacker: str  # an org with an agreement whose token sends the hostile input
    other: str  # the org that must still be billed

    def url(self, service: str) -> str:
        return self.stack.urls[service]

    async def balance_used(self) -> int:
        r = await self.http.get(f"{self.url('entitlement')}/v1/orgs/{self.other}/balances", headers=bearer(SECRET, self.other))
        assert r.status_code == 200, r.text
        return r.json()["resources"]["cloud_inspection"]["used"]

    async def other_org_is_billed(self) -> None:
        """A use of the other org is accepted and deducted within 10 s."""
        before = await self.balance_used()
        r = await self.http.post(f"{self.url('metering')}/v1/usage", json=usage(self.other), headers=PLATFORM)
        assert r.status_code == 202, r.text
        deadline = time.monotonic() + 10
        while await self.balance_used() != before + 1:
            assert time.monotonic() < deadline, "the other organisation's use was not deducted within 10 s"
            await asyncio.sleep(0.1)


def usage(org: str, **data: Any) -> dict[str, Any]:
    return {"specversion": "1.0", "id": f"u-{uuid.uuid4().hex}", "source": "/platform",
            "type": "aimis.usage.cloud_inspection", "subject": org, "time": NOW.isoformat(),
            "data": {"inspection_id": f"insp-{uuid.uuid4().hex[:8]}", **data}}


@pytest.fixture(scope="module")
async def target(real_infra):
    async with stack_with_orgs(real_infra, "mallory", "victim") as (stack, http, (attacker, other)):
        t = Target(stack, http, attacker, other)
        for org in (attacker, other):
            r = await http.post(f"{t.url('order')}/v1/admin/orders/import", headers=ADMIN, json={
                "order_id": f"imp-{org}", "org_id": org, "lines": [{"sku": "CI-QTY", "quantity": 1000, "storage_years": 1}],
                "paid_at": (NOW - timedelta(days=1)).isoformat(), "payment_ref": "wire"})
            assert r.status_code == 201, r.text
        deadline = time.monotonic() + 30
        while True:  # the lots are credited (orders topic -> entitlement)
            r = await http.get(f"{t.url('entitlement')}/v1/orgs/{other}/balances", headers=ADMIN)
            if r.json()["resources"]["cloud_inspection"]["purchased"] == 1000:
                break
            assert time.monotonic() < deadline
            await asyncio.sleep(0.2)
        await t.other_org_is_billed()  # the probe itself works before any hostile input
        yield t


Send = Callable[[Target], Awaitable[tuple[int, bytes]]]


def post(service: str, path: str, *, json_body: Any = None, content: bytes | None = None,
         headers: dict[str, str] | None = None, as_role: str = "platform", method: str = "POST") -> Send:
    async def send(t: Target) -> tuple[int, bytes]:
        h = {"Content-Type": "application/json", **(PLATFORM if as_role == "platform" else bearer(SECRET, t.attacker)
                                                  if as_role == "org" else ADMIN), **(headers or {})}
        r = await t.http.request(method, f"{t.url(service)}{path}", json=json_body, content=content, headers=h)
        return r.status_code, r.content
    return send


def raw(service: str, request: bytes, body_parts: list[bytes] | None = None) -> Send:
    async def send(t: Target) -> tuple[int, bytes]:
        answer = await exchange(t.url(service), request, body_parts or [])
        return status_of(answer), answer
    return send


def _auth_line() -> bytes:
    return ("Authorization: " + PLATFORM["Authorization"] + "\r\n").encode()


def _usage_with(t: Target, **data: Any) -> dict[str, Any]:
    return usage(t.attacker, **data)


def usage_post(make: Callable[[Target], Any]) -> Send:
    async def send(t: Target) -> tuple[int, bytes]:
        return await post("metering", "/v1/usage", json_body=make(t))(t)
    return send


def usage_bytes(make: Callable[[Target], bytes]) -> Send:
    async def send(t: Target) -> tuple[int, bytes]:
        return await post("metering", "/v1/usage", content=make(t))(t)
    return send


def _event_text(t: Target, inspection_json: str) -> bytes:
    doc = json.dumps(usage(t.attacker)).replace('"insp-', '"X').encode()
    return doc.replace(b'"inspection_id": "X', b'"inspection_id": ' + inspection_json.encode() + b', "_": "')


BIG = b"[" + b"0," * (MIB // 2) + b"0]"  # 1 MiB + 3 bytes of valid JSON
HOSTILE: dict[str, tuple[Send, set[int]]] = {
    "oversized body (Content-Length)": (usage_bytes(lambda t: BIG), {413}),
    "oversized body, chunked, never finished": (raw("metering", b"POST /v1/usage HTTP/1.1\r\nHost: x\r\n" + _auth_line()
                                                    + b"Transfer-Encoding: chunked\r\n\r\n",
                                                    [b"40000\r\n" + b" " * 0x40000 + b"\r\n"] * 5), {413}),
    "declared 10 GB, no body sent": (raw("metering", b"POST /v1/usage HTTP/1.1\r\nHost: x\r\n" + _auth_line()
                                         + b"Content-Length: 10000000000\r\n\r\n"), {413}),
    "non-numeric Content-Length": (raw("metering", b"POST /v1/usage HTTP/1.1\r\nHost: x\r\nContent-Length: 1e3\r\n\r\n{}"),
                                   {400}),
    "nesting 100,000 deep": (usage_bytes(lambda t: b"[" * 100_000 + b"]" * 100_000), {400}),
    "nesting 33 deep in data.attributes": (usage_post(lambda t: _usage_with(t, attributes=json.loads("[" * 33 + "]" * 33))),
                                           {400}),
    "NUL in usage id": (usage_post(lambda t: {**usage(t.attacker), "id": "u\u0000x"}), {400}),
    "NUL in inspection_id": (usage_post(lambda t: _usage_with(t, inspection_id="a\u0000b")), {400}),
    "lone surrogate escape": (usage_bytes(lambda t: _event_text(t, '"\\ud800"')), {400}),
    "raw control character in a JSON string": (usage_bytes(lambda t: _event_text(t, '"a\x01b"')), {400}),
    "escaped control characters in attributes": (usage_post(lambda t: _usage_with(t, attributes={"k\u001b": "v\u007f"})),
                                                 {400}),
    "33 attributes": (usage_post(lambda t: _usage_with(t, attributes={f"k{i}": "v" for i in range(33)})), {400}),
    "attribute value of 257 characters": (usage_post(lambda t: _usage_with(t, attributes={"k": "v" * 257})), {400}),
    "usage id of 129 characters": (usage_post(lambda t: {**usage(t.attacker), "id": "u" * 129}), {400}),
    "integer of 5,000 digits": (usage_bytes(lambda t: json.dumps(usage(t.attacker)).replace(
        '"data": {', '"data": {"quantity": ' + "9" * 5000 + ", ").encode()), {400}),
    "float 1e400 as quantity": (usage_bytes(lambda t: json.dumps(usage(t.attacker)).replace(
        '"data": {', '"data": {"quantity": 1e400, ').encode()), {400}),
    "time in year 1 at +01:00": (usage_post(lambda t: {**usage(t.attacker), "time": "0001-01-01T00:30:00+01:00"}), {400}),
    "time in year 9999 at -01:00": (usage_post(lambda t: {**usage(t.attacker), "time": "9999-12-31T23:59:59-01:00"}),
                                    {400}),
    "time in 1999": (usage_post(lambda t: {**usage(t.attacker), "time": "1999-12-31T23:59:59Z"}), {400}),
    "wrong types": (usage_post(lambda t: {**usage(t.attacker), "data": ["quantity", 3]}), {400}),
    "duplicate keys (subject twice)": (usage_bytes(lambda t: json.dumps(usage(t.attacker)).replace(
        '"subject": ', f'"subject": "{t.other}", "subject": ').encode()), {400}),
    "non-UTF-8 bytes": (usage_bytes(lambda t: json.dumps(usage(t.attacker)).encode().replace(b"insp-", b"\xff\xfe")),
                        {400}),
    "UTF-8 BOM before the JSON": (usage_bytes(lambda t: b"\xef\xbb\xbf" + json.dumps(usage(t.attacker)).encode()), {400}),
    "1,001 events": (usage_post(lambda t: [usage(t.attacker) for _ in range(1001)]), {400}),
    "control character in a header": (raw("order", b"GET /v1/catalog HTTP/1.1\r\nHost: x\r\nX-Evil: a\x01b\r\n\r\n"),
                                      {400}),
    "NUL in a path parameter": (raw("order", b"GET /v1/orders/a%00b HTTP/1.1\r\nHost: x\r\n" + _auth_line() + b"\r\n"),
                                {400}),
    "UTF-8 surrogate bytes in a path parameter": (
        raw("order", b"GET /v1/orders/a%ED%A0%80b HTTP/1.1\r\nHost: x\r\n" + _auth_line() + b"\r\n"), {400, 403, 404}),
    "control character in a query": (raw("entitlement", b"GET /v1/orgs/x/ledger?after=%01 HTTP/1.1\r\nHost: x\r\n"
                                         + _auth_line() + b"\r\n"), {400}),
    "100 KB bearer token": (raw("order", b"GET /v1/orders/x HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                                + b"A" * 100_000 + b"\r\n\r\n"), {400, 401, 431}),
    "huge amount in a payment": (post("order", "/v1/orders/x/payment", content=b'{"payment_ref": "p", "amount": 1e400}',
                                      as_role="admin"), {400}),
    "agreement signed in year 1": (post("order", "/v1/admin/orgs/acme/agreement", as_role="admin", method="PUT",
                                        json_body={"agreement_ref": "A", "signed_at": "0001-01-01T00:30:00+01:00"}), {400}),
    "order line sku with NUL": (post("order", "/v1/orders", as_role="admin",
                                     json_body={"org_id": "acme", "lines": [{"sku": "CI-QTY\u0000"}]}), {400}),
    "import with a 200-character payment_ref": (post("order", "/v1/admin/orders/import", as_role="admin", json_body={
        "order_id": "imp-x", "org_id": "acme", "lines": [{"sku": "CI-QTY", "quantity": 1000, "storage_years": 1}],
        "paid_at": "2026-01-01T00:00:00Z", "payment_ref": "r" * 200}), {400}),
}


def test_at_least_fifteen_kinds_of_hostile_http_input():
    assert len(HOSTILE) >= 15


@pytest.mark.parametrize("name", list(HOSTILE))
async def test_hostile_request_is_refused_and_another_org_is_still_billed(target: Target, name: str):
    send, expected = HOSTILE[name]
    started = time.monotonic()
    status, body = await send(target)
    assert status in expected, (status, body[:300])
    assert time.monotonic() - started < 5
    if b"{" in body and b'"error"' in body:  # answered by the service, not the HTTP parser
        err = json.loads(body[body.index(b"{"):].split(b"\r\n")[0] if body.startswith(b"HTTP/") else body)["error"]
        assert err["code"] in ("VALIDATION_ERROR", "PAYLOAD_TOO_LARGE", "TOO_MANY_EVENTS", "UNAUTHORIZED",
                               "FORBIDDEN", "NOT_FOUND")
    await target.other_org_is_billed()
