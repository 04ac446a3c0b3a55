"""Every error response an OpenAPI document lists is one the service really answers, in the
project's error shape (issue 15): no FastAPI default `422 HTTPValidationError` (validation errors
are 400 VALIDATION_ERROR), and for each operation of each service and each error status it
documents, a request that gets exactly that status, with `{"error": {"code", "message"}}` whose
code answers with that status. The services run in process on a real database (Kafka never
started; a contract test of the documents, in the integration stage: it walks every operation); the statuses the guard answers for every request (500 for an unexpected error, 503 for
an unreachable dependency) are provoked at the ASGI boundary, where any request can fail so."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from contracts import examples
from contracts.http import ErrorCode
from contracts.limits import MAX_BODY_BYTES
from services.entitlement import app as entitlement
from services.expiry import app as expiry
from services.metering import app as metering
from services.metering import store as metering_store
from services.metering.handlers import OrdersCatchUp
from services.order import app as order
from services.order.webhook import SIGNATURE_HEADER, signature_header
from shared import auth
from shared.clock import FixedClock
from shared.config import Settings
from tests.component.conftest import NOW, Database

pytestmark = pytest.mark.integration

SECRET = "documented-answers-secret-0123456789"
WEBHOOK_SECRET = "webhook-secret-for-the-probe"
ORG, OTHER = "org-w", "org-other"
ROLES: dict[str, dict[str, str]] = {
    r: {"Authorization": f"Bearer {auth.mint(SECRET, r, ORG if r == 'org' else None)}"} for r in auth.ROLES
}
ADMIN = ROLES["admin"]

APPS: dict[str, tuple[Callable[..., FastAPI], Any, str]] = {
    "order": (order.create_app, order.MIGRATIONS, order.SCHEMA),
    "entitlement": (entitlement.create_app, entitlement.MIGRATIONS, "entitlement"),
    "metering": (metering.create_app, metering.MIGRATIONS, "metering"),
    "expiry": (expiry.create_app, expiry.MIGRATIONS, "expiry"),
}


class Service:
    def __init__(self, app: FastAPI, doc: dict[str, Any], hurried: FastAPI):
        self.app, self.doc = app, doc
        self.hurried = hurried  # the same service with a request deadline of 0.2 s
        self.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://svc")

    def example(self, op: dict[str, Any]) -> bytes | None:
        """A body the operation accepts: the example of its request body's schema."""
        schema = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {})
        name = schema.get("$ref", "").rsplit("/", 1)[-1] or schema.get("title", "")
        found = examples.HTTP.get(name)
        return json.dumps(found[0]).encode() if found else None

    async def call(self, method: str, path: str, headers: dict[str, str] | None = None,
                   body: bytes | None = None, **params: str) -> httpx.Response:
        h = {"content-type": "application/json", **(headers or {})}
        return await self.client.request(method, path, headers=h, content=body, params=params or None)


def fill(path: str, org: str = ORG, other: str = "nope-1") -> str:
    return re.sub(r"\{(\w+)\}", lambda m: org if m.group(1) == "org_id" else other, path)


def error_of(r: httpx.Response) -> str:
    body = r.json()
    assert set(body) == {"error"} and {"code", "message"} <= set(body["error"]), body
    return str(body["error"]["code"])


def answers(r: httpx.Response, status: int) -> bool:
    if r.status_code != status:
        return False
    code = error_of(r)
    return code not in ErrorCode.__members__ or ErrorCode[code].status == status


async def raw_asgi(app: FastAPI, method: str, path: str, failure: BaseException | None) -> tuple[int, dict[str, Any]]:
    """The request reaches the app, and reading it fails with `failure` (what any request may meet),
    or (None) never ends."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if failure is None:
            await asyncio.Event().wait()
        raise failure  # type: ignore[misc]

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method.upper(),
             "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "headers": [(b"host", b"svc"), *[(k.lower().encode(), v.encode()) for k, v in ADMIN.items()]],
             "client": ("127.0.0.1", 1), "server": ("svc", 80), "state": {}}
    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], json.loads(body)


Probe = Callable[[Service, str, str, dict[str, Any]], Awaitable[bool]]


async def p400(s: Service, method: str, path: str, op: dict[str, Any]) -> bool:
    return answers(await s.call(method, fill(path), ADMIN, s.example(op), probe="\x01"), 400)


async def p401(s: Service, method: str, path: str, op: dict[str, Any]) -> bool:
    return answers(await s.call(method, fill(path), {}, s.example(op)), 401)


async def p403(s: Service, method: str, path: str, op: dict[str, Any]) -> bool:
    for headers in ROLES.values():
        if answers(await s.call(method, fill(path), headers, s.example(op)), 403):
            return True
    return False


async def p404(s: Service, method: str, path: str, op: dict[str, Any]) -> bool:
    another_org = await s.call(method, fill(path, org=OTHER), ROLES["org"], s.example(op))
    unknown = await s.call(method, fill(path), ADMIN, s.example(op))
    return answers(another_org, 404) or answers(unknown, 404)


async def p413(s: Service, method: str, path: str, op: dict[str, Any]) -> bool:
    return answers(await s.call(method, fill(path), ADMIN, b" " * (MAX_BODY_BYTES + 1)), 413)


async def p500(s: Service, method: str, path: str, op: dict[str, Any]) -> bool:
    status, body = await raw_asgi(s.app, method, fill(path), RuntimeError("an unexpected failure"))
    return status == 500 and body["error"]["code"] == "INTERNAL_ERROR" and bool(body["error"]["request_id"])


async def p503(s: Service, method: str, path: str, op: dict[str, Any]) -> bool:
    if path == "/readyz":  # Kafka never started: not ready, in its own body
        r = await s.call(method, path)
        return r.status_code == 503 and r.json()["status"] == "not ready"
    # what waits on a dependency (PostgreSQL, Kafka) past the request deadline answers 503: here the
    # wait is for the request body, which the guard reads first for every operation
    status, body = await raw_asgi(s.hurried, method, fill(path), None)
    return status == 503 and body["error"]["code"] == "UNAVAILABLE"


PROBES: dict[int, Probe] = {400: p400, 401: p401, 403: p403, 404: p404, 413: p413, 500: p500, 503: p503}


# The statuses only a state reaches (a conflict, a billing rule): one scenario each, in order.
async def order_scenarios(s: Service) -> set[tuple[str, str, int]]:
    seen: set[tuple[str, str, int]] = set()

    async def expect(method: str, path: str, status: int, body: Any, headers: dict[str, str] = ADMIN,
                     template: str | None = None) -> httpx.Response:
        r = await s.call(method, path, headers, json.dumps(body).encode())
        ok = r.status_code == status if status < 400 else answers(r, status)
        assert ok, (method, path, r.status_code, r.text)
        seen.add((method.lower(), template or path, status))
        return r

    line = {"sku": "AI-QTY", "quantity": 1000}
    await expect("POST", "/v1/orders", 422, {"org_id": ORG, "lines": [line]})  # AGREEMENT_REQUIRED
    await expect("PUT", f"/v1/admin/orgs/{ORG}/agreement", 200,
                 {"agreement_ref": "AGR-1", "signed_at": "2026-01-01T00:00:00Z"})
    placed = (await expect("POST", "/v1/orders", 201, {"order_id": "o-1", "org_id": ORG, "lines": [line]})).json()
    await expect("POST", "/v1/orders", 409, {"order_id": "o-1", "org_id": ORG, "lines": [line, line]})
    pay = "/v1/orders/{order_id}/payment"
    await expect("POST", "/v1/orders/o-1/payment", 422, {"payment_ref": "p-1", "amount": "0.01"}, template=pay)
    webhook = {"event_id": "ev-1", "order_id": "o-1", "amount": "0.01", "currency": "USD",
               "paid_at": NOW.isoformat(), "payment_ref": "p-9"}
    for event, status in ((webhook, 422), ({**webhook, "order_id": "o-none"}, 404)):
        body = json.dumps(event).encode()
        sig = {SIGNATURE_HEADER: signature_header(WEBHOOK_SECRET, int(NOW.timestamp()), body)}
        r = await s.call("POST", "/v1/payments/webhook", sig, body)
        assert answers(r, status), r.text
        seen.add(("post", "/v1/payments/webhook", status))
    await expect("POST", "/v1/orders/o-1/payment", 200, {"payment_ref": "p-1", "amount": placed["total"]},
                 template=pay)
    await expect("POST", "/v1/orders/o-1/payment", 409, {"payment_ref": "p-2", "amount": placed["total"]},
                 template=pay)  # PAYMENT_CONFLICT
    paid_twice = {**webhook, "event_id": "ev-2", "amount": placed["total"]}
    body = json.dumps(paid_twice).encode()
    sig = {SIGNATURE_HEADER: signature_header(WEBHOOK_SECRET, int(NOW.timestamp()), body)}
    assert answers(await s.call("POST", "/v1/payments/webhook", sig, body), 409)
    seen.add(("post", "/v1/payments/webhook", 409))
    await expect("POST", "/v1/orders/o-1/cancel", 409, None, template="/v1/orders/{order_id}/cancel")
    imported = {"order_id": "i-1", "org_id": ORG, "lines": [line], "paid_at": (NOW + timedelta(days=1)).isoformat(),
                "payment_ref": "imp-1"}
    await expect("POST", "/v1/admin/orders/import", 422, imported)  # PAID_AT_IN_FUTURE
    await expect("POST", "/v1/admin/orders/import", 201, {**imported, "paid_at": NOW.isoformat()})
    await expect("POST", "/v1/admin/orders/import", 409, {**imported, "paid_at": NOW.isoformat(),
                                                           "payment_ref": "imp-2"})
    return seen


async def entitlement_scenarios(s: Service) -> set[tuple[str, str, int]]:
    """An expired service cannot be accepted (409 SERVICE_NOT_ACCEPTABLE)."""
    async with s.app.state.runtime.pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO services (service_id, org_id, order_id, line, sku, mode, status, purchased_at, accept_by)"
            " VALUES ('s-1', $1, 'o-1', 0, 'SVC-DELIVERY', 'remote', 'expired', $2, $2)", ORG, NOW)
    r = await s.call("POST", f"/v1/orgs/{ORG}/services/s-1/acceptance", ADMIN)
    assert answers(r, 409), r.text
    return {("post", "/v1/orgs/{org_id}/services/{service_id}/acceptance", 409)}


async def parked_row_scenarios(s: Service) -> set[tuple[str, str, int]]:
    """Every service: re-publishing or discarding an outbox row that is not parked is 409 NOT_PARKED,
    one that does not exist 404 NOT_FOUND."""
    seq = await s.app.state.runtime.pool.fetchval(
        "INSERT INTO outbox (event_id, topic, key, payload, sent_at) VALUES ('e-1', 't', 'k', '{}', now())"
        " RETURNING seq")
    seen = set()
    for action in ("republish", "discard"):
        r = await s.call("POST", f"/v1/admin/outbox/parked/{seq}/{action}", ADMIN, b'{"reason": "probe"}')
        assert answers(r, 409) and error_of(r) == "NOT_PARKED", r.text
        seen.add(("post", f"/v1/admin/outbox/parked/{{seq}}/{action}", 409))
        r = await s.call("POST", f"/v1/admin/outbox/parked/{seq + 1}/{action}", ADMIN, b'{"reason": "probe"}')
        assert answers(r, 404) and error_of(r) == "NOT_FOUND", r.text
        seen.add(("post", f"/v1/admin/outbox/parked/{{seq}}/{action}", 404))
    return seen


SCENARIOS = {"order": order_scenarios, "entitlement": entitlement_scenarios}


@pytest.mark.parametrize("name", list(APPS))
async def test_every_documented_error_response_is_answered(name: str, database: Database, monkeypatch):
    create, migrations, schema = APPS[name]
    dsn = await database.create(schema, migrations)
    monkeypatch.setattr(OrdersCatchUp, "settled_known_orgs",
                        lambda self, pool, orgs, wait_s, **_: metering_store.known_orgs(pool, orgs))
    settings = Settings(kafka_bootstrap="127.0.0.1:9", database_url=dsn, auth_secret=SECRET,
                        payment_webhook_secret=WEBHOOK_SECRET)
    app = create(settings, FixedClock(NOW))
    await app.state.runtime.open_database()
    try:
        s = Service(app, app.openapi(), create(settings.model_copy(update={"http_deadline_s": 0.2}), FixedClock(NOW)))
        documented = {(m, p, int(st)) for p, ops in s.doc["paths"].items() for m, op in ops.items()
                      for st in op["responses"] if st.isdigit() and int(st) >= 400}
        assert "HTTPValidationError" not in json.dumps(s.doc)
        witnessed = set(await SCENARIOS[name](s)) if name in SCENARIOS else set()
        witnessed |= await parked_row_scenarios(s)
        for method, path, status in sorted(documented - witnessed):
            probe = PROBES.get(status)
            if probe is not None and await probe(s, method, path, s.doc["paths"][path][method]):
                witnessed.add((method, path, status))
        assert sorted(documented - witnessed) == [], "documented, never answered"
    finally:
        await s.client.aclose()
        await app.state.runtime.close_database()
