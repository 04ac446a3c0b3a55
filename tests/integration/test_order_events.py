"""Order service on the real broker: what it publishes on aimis.orders.v1 (through the outbox)
and how it consumes aimis.ledger.v1 (order_fulfilled marks the order fulfilled)."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from datetime import datetime, timezone

import pytest

from contracts import topics
from contracts.events import (
    LotExpiredData,
    OrderFulfilledData,
    OrderPaidData,
    encode,
    new_event,
    parse_event,
)
from tests.integration.test_order_api import ADMIN, org_token, start
from tests.support.kafka import TopicReader, producer, wait_until

pytestmark = pytest.mark.integration

GOOD = {"sku": "AI-QTY", "quantity": 1000}


@pytest.fixture(scope="module")
async def svc(real_infra):
    async for s in start(real_infra):
        yield s


@pytest.fixture
async def orders_topic(svc):
    async with TopicReader(svc.settings.kafka_bootstrap, topics.ORDERS) as reader:
        yield reader


def _of(org: str, kind: str):
    return lambda e: e["subject"] == org and e["type"] == f"aimis.orders.{kind}"


def _records_of(reader: TopicReader, org: str) -> list:
    return [r for r in reader.records if json.loads(r.value).get("subject") == org]


async def test_agreement_recorded_is_published_once_as_a_cloudevent_keyed_by_org(svc, orders_topic, org_id):
    assert (await svc.agree(org_id, ref="AGR-9")).status_code == 200
    assert (await svc.agree(org_id, ref="AGR-9")).status_code == 200  # same body again
    (ev,) = await orders_topic.wait_for(_of(org_id, "agreement_recorded"))
    parsed = parse_event(json.dumps(ev))
    assert parsed.specversion == "1.0" and parsed.source == "/aimis/order"
    assert parsed.subject == org_id and parsed.data.agreement_ref == "AGR-9"
    await orders_topic.settle()
    assert len(orders_topic.events(_of(org_id, "agreement_recorded"))) == 1
    assert {r.key for r in _records_of(orders_topic, org_id)} == {org_id.encode()}


async def test_a_replaced_agreement_is_announced_again(svc, orders_topic, org_id):
    await svc.agree(org_id, ref="AGR-1")
    await svc.agree(org_id, ref="AGR-2")
    events = await orders_topic.wait_for(_of(org_id, "agreement_recorded"), count=2)
    assert [e["data"]["agreement_ref"] for e in events] == ["AGR-1", "AGR-2"]


async def test_order_paid_is_published_exactly_once_when_payment_is_repeated(svc, orders_topic, org_id):
    await svc.agree(org_id)
    lines = [
        {"sku": "CI-QTY", "quantity": 10_000, "storage_years": 15},
        {"sku": "SW-BASIC", "months": 12},
        {"sku": "SW-OPT", "months": 6, "feature": "cloud_film"},
        {"sku": "SVC-DELIVERY", "mode": "remote"},
        {"sku": "SVC-MAINTENANCE", "years": 2},
    ]
    order = (await svc.place(org_id, lines)).json()
    # the same payment three times, two of them concurrently
    first = await svc.pay(org_id, order, ref="pay-X")
    repeats = await asyncio.gather(svc.pay(org_id, order, ref="pay-X"), svc.pay(org_id, order, ref="pay-X"))
    assert [r.status_code for r in (first, *repeats)] == [200, 200, 200]

    (paid,) = await orders_topic.wait_for(_of(org_id, "order_paid"))
    await orders_topic.wait_for(_of(org_id, "order_placed"))
    await orders_topic.settle()
    assert len(orders_topic.events(_of(org_id, "order_paid"))) == 1
    assert len(orders_topic.events(_of(org_id, "order_placed"))) == 1
    assert {r.key for r in _records_of(orders_topic, org_id)} == {org_id.encode()}

    ev = parse_event(json.dumps(paid))
    data: OrderPaidData = ev.data
    assert ev.subject == org_id and data.order_id == order["order_id"] and data.imported is False
    assert data.payment_ref == "pay-X" and data.paid_at == datetime.fromisoformat(first.json()["paid_at"])
    assert f"{data.total:.2f}" == order["total"]
    got = [ln.model_dump(exclude_none=True, mode="json") for ln in data.lines]
    want = [{**ln, "line": i, "price": order["lines"][i]["price"]} for i, ln in enumerate(lines)]
    assert got == want


async def test_order_placed_carries_every_line_and_the_price_book_version(svc, orders_topic, org_id):
    await svc.agree(org_id)
    order = (await svc.place(org_id, [GOOD, {"sku": "SVC-SCHEDULED", "quantity": 3}])).json()
    (placed,) = await orders_topic.wait_for(_of(org_id, "order_placed"))
    data = parse_event(json.dumps(placed)).data
    assert data.order_id == order["order_id"] and data.price_book_version == "2026-11-01"
    assert [(ln.line, ln.sku, ln.quantity) for ln in data.lines] == [(0, "AI-QTY", 1000), (1, "SVC-SCHEDULED", 3)]


async def test_import_emits_order_placed_and_order_paid_with_the_past_paid_at(svc, orders_topic, org_id):
    await svc.agree(org_id)
    paid_at = "2026-02-03T04:05:06+00:00"
    oid = f"imp-{uuid.uuid4().hex[:8]}"
    resp = await svc.import_(org_id, [{"sku": "AI-PERPETUAL"}], paid_at=paid_at, order_id=oid)
    assert resp.status_code == 201
    assert (await svc.import_(org_id, [{"sku": "AI-PERPETUAL"}], paid_at=paid_at, order_id=oid)).status_code == 200
    (paid,) = await orders_topic.wait_for(_of(org_id, "order_paid"))
    await orders_topic.wait_for(_of(org_id, "order_placed"))
    data = parse_event(json.dumps(paid)).data
    assert data.imported is True and data.paid_at == datetime.fromisoformat(paid_at)
    assert [(ln.sku, ln.quantity) for ln in data.lines] == [("AI-PERPETUAL", 1)]
    await orders_topic.settle()
    assert len(orders_topic.events(_of(org_id, "order_paid"))) == 1


async def test_cancel_emits_order_cancelled_once(svc, orders_topic, org_id):
    await svc.agree(org_id)
    order = (await svc.place(org_id, [GOOD])).json()
    for _ in range(2):
        resp = await svc.http.post(f"/v1/orders/{order['order_id']}/cancel", headers=org_token(org_id))
        assert resp.status_code == 200
    (ev,) = await orders_topic.wait_for(_of(org_id, "order_cancelled"))
    assert ev["data"]["order_id"] == order["order_id"]
    await orders_topic.settle()
    assert len(orders_topic.events(_of(org_id, "order_cancelled"))) == 1


def _dead_letters_total(metrics_text: str) -> float:
    return sum(
        float(m.group(1))
        for m in re.finditer(r'^aimis_dead_letters_total\{[^}]*service="order"[^}]*\} (\S+)$', metrics_text, re.M)
    )


async def test_order_fulfilled_on_the_ledger_marks_the_order_fulfilled_past_bad_records(svc, org_id):
    await svc.agree(org_id)
    order = (await svc.place(org_id, [GOOD])).json()
    assert (await svc.pay(org_id, order)).status_code == 200
    dead_before = _dead_letters_total((await svc.http.get("/metrics")).text)

    fulfilled_at = datetime(2026, 11, 26, 12, 0, tzinfo=timezone.utc)
    src = "/aimis/entitlement"
    other_kind = new_event(org_id, LotExpiredData(
        org_id=org_id, lot_id="x#0", resource="ai_review", forfeited=0,
        expires_at=fulfilled_at, expired_at=fulfilled_at), src)
    fulfilled = new_event(org_id, OrderFulfilledData(
        org_id=org_id, order_id=order["order_id"], fulfilled_at=fulfilled_at), src)
    bad_schema = json.loads(encode(fulfilled))
    bad_schema["id"], bad_schema["data"] = "bad-1", {"order_id": order["order_id"]}
    key = org_id.encode()
    p = await producer(svc.settings.kafka_bootstrap)
    try:
        for value in (b"\x00not json at all", json.dumps(bad_schema).encode(), encode(other_kind),
                      encode(fulfilled), encode(fulfilled)):  # the last one a redelivery
            await p.send_and_wait(topics.LEDGER, value, key=key)
    finally:
        await p.stop()

    async def is_fulfilled():
        got = (await svc.http.get(f"/v1/orders/{order['order_id']}", headers=ADMIN)).json()
        return got if got["status"] == "fulfilled" else None

    got = await wait_until(is_fulfilled, timeout=30)
    assert datetime.fromisoformat(got["fulfilled_at"]) == fulfilled_at
    assert got["paid_at"] and got["payment_ref"] == "pay-1"
    async def dead_letters() -> float | None:  # counted right after the commit
        n = _dead_letters_total((await svc.http.get("/metrics")).text) - dead_before
        return n if n >= 2 else None

    assert await wait_until(dead_letters, timeout=10) == 2  # the garbage and the schema violation
    ready = await svc.http.get("/readyz")
    assert ready.status_code == 200  # the consumer did not stop
