"""SPEC 7.4: POST /v1/payments/webhook, signed by the payment provider, pays an order exactly as the
manual payment does; wrong or stale signatures are 401, a replayed event changes nothing."""

from __future__ import annotations

import json
import time
import uuid
from datetime import datetime, timezone
from typing import Any

import asyncpg
import httpx
import pytest

from contracts import topics
from services.order.webhook import sign, signature_header
from tests.support.inproc import WEBHOOK_SECRET, in_process_stack
from tests.support.kafka import TopicReader
from tests.support.services import SECRET, bearer

pytestmark = pytest.mark.integration

CI_LINE = {"sku": "CI-QTY", "quantity": 1000, "storage_years": 2}
PATH = "/v1/payments/webhook"


@pytest.fixture(scope="module")
async def order_svc(real_infra):
    async with in_process_stack(real_infra) as stack, httpx.AsyncClient(
        base_url=stack.urls["order"], timeout=30
    ) as http:
        yield stack, http


@pytest.fixture
async def placed(order_svc, org_id) -> dict[str, Any]:
    _, http = order_svc
    r = await http.put(f"/v1/admin/orgs/{org_id}/agreement", headers=bearer(SECRET),
                       json={"agreement_ref": "AGR", "signed_at": "2026-01-01T00:00:00Z"})
    assert r.status_code == 200
    r = await http.post("/v1/orders", json={"org_id": org_id, "lines": [CI_LINE]}, headers=bearer(SECRET, org_id))
    assert r.status_code == 201
    return r.json()


def _event(order: dict[str, Any], **kw: Any) -> bytes:
    doc = {"event_id": f"evt_{uuid.uuid4().hex}", "order_id": order["order_id"], "amount": order["total"],
           "currency": "USD", "paid_at": datetime.now(timezone.utc).isoformat(), "payment_ref": "psp-1", **kw}
    return json.dumps(doc).encode()


async def _post(http: httpx.AsyncClient, body: bytes, *, t: int | None = None, secret: str = WEBHOOK_SECRET,
                header: str | None = None) -> httpx.Response:
    t = int(time.time()) if t is None else t
    sig = header if header is not None else signature_header(secret, t, body)
    return await http.post(PATH, content=body, headers={"AIMIS-Signature": sig, "Content-Type": "application/json"})


async def _status(http: httpx.AsyncClient, order: dict[str, Any]) -> str:
    return (await http.get(f"/v1/orders/{order['order_id']}", headers=bearer(SECRET))).json()["status"]


async def test_signed_event_pays_the_order_and_publishes_order_paid(order_svc, placed, real_infra):
    _, http = order_svc
    async with TopicReader(real_infra.bootstrap, topics.ORDERS) as orders:
        r = await _post(http, _event(placed))
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "paid" and r.json()["payment_ref"] == "psp-1"
        paid = await orders.wait_for(
            lambda e: e["type"] == "aimis.orders.order_paid" and e["data"]["order_id"] == placed["order_id"], timeout=30)
    assert paid[0]["data"]["total"] == placed["total"]


async def test_the_same_event_again_is_200_and_changes_nothing(order_svc, placed, real_infra):
    stack, http = order_svc
    body = _event(placed)
    mine = lambda e: e["type"] == "aimis.orders.order_paid" and e["data"]["order_id"] == placed["order_id"]  # noqa: E731
    async with TopicReader(real_infra.bootstrap, topics.ORDERS) as orders:
        first = await _post(http, body)
        assert first.status_code == 200
        await orders.wait_for(mine, timeout=30)
        again = await _post(http, body)
        # the same event id with another body (a provider bug, or a forgery with a stolen event id)
        doc = json.loads(body)
        doc["payment_ref"] = "psp-other"
        other = await _post(http, json.dumps(doc).encode())
        await orders.settle(1.5)
        assert len(orders.events(mine)) == 1
    assert again.status_code == other.status_code == 200
    # the order may meanwhile have been credited (status, fulfilled_at): the payment itself is unchanged
    moving = {"status", "fulfilled_at", "fulfilment_overdue", "fulfilment_due_by"}
    same = [{k: v for k, v in r.json().items() if k not in moving} for r in (first, again, other)]
    assert same[0] == same[1] == same[2] and same[0]["paid_at"] is not None
    conn = await asyncpg.connect(stack.dsn, server_settings={"search_path": "ordering"})
    try:
        assert await conn.fetchval("SELECT count(*) FROM payment_webhook_events WHERE order_id = $1",
                                   placed["order_id"]) == 1
    finally:
        await conn.close()


@pytest.mark.parametrize("case", ["wrong_secret", "tampered_body", "no_header", "garbage_header", "no_v1",
                                  "stale", "future", "sig_of_other_time"])
async def test_bad_or_stale_signature_is_401_and_pays_nothing(order_svc, placed, case):
    _, http = order_svc
    body = _event(placed)
    now = int(time.time())
    kw: dict[str, Any] = {
        "wrong_secret": {"secret": "not-the-webhook-secret-0123456789abcdef"},
        "tampered_body": {"header": signature_header(WEBHOOK_SECRET, now, body.replace(b"psp-1", b"psp-2"))},
        "no_header": {"header": ""},
        "garbage_header": {"header": "t=abc,v1=zz,,=,t=1e9"},
        "no_v1": {"header": f"t={now}"},
        "stale": {"t": now - 301},
        "future": {"t": now + 301},
        "sig_of_other_time": {"header": f"t={now},v1={sign(WEBHOOK_SECRET, now - 1, body)}"},
    }[case]
    r = await _post(http, body, **kw)
    assert r.status_code == 401 and r.json()["error"]["code"] == "UNAUTHORIZED", r.text
    assert await _status(http, placed) == "placed"


async def test_a_signature_299_seconds_old_is_accepted(order_svc, placed):
    _, http = order_svc
    r = await _post(http, _event(placed), t=int(time.time()) - 299)
    assert r.status_code == 200


async def test_wrong_amount_is_422_amount_mismatch(order_svc, placed):
    _, http = order_svc
    r = await _post(http, _event(placed, amount="0.01"))
    assert r.status_code == 422 and r.json()["error"]["code"] == "AMOUNT_MISMATCH"
    assert await _status(http, placed) == "placed"
    # not recorded: the corrected event under a new id pays
    assert (await _post(http, _event(placed))).status_code == 200


async def test_unknown_order_is_404(order_svc, placed):
    _, http = order_svc
    r = await _post(http, _event(placed, order_id=f"ord-missing-{uuid.uuid4().hex[:6]}"))
    assert r.status_code == 404 and r.json()["error"]["code"] == "NOT_FOUND"


@pytest.mark.parametrize("change", [{"currency": "EUR"}, {"amount": "abc"}, {"paid_at": "1999-01-01T00:00:00Z"},
                                    {"event_id": "e\u0000"}, {"extra": 1}])
async def test_a_signed_but_invalid_event_is_400(order_svc, placed, change):
    _, http = order_svc
    r = await _post(http, _event(placed, **change))
    assert r.status_code == 400 and r.json()["error"]["code"] == "VALIDATION_ERROR"
    assert await _status(http, placed) == "placed"
