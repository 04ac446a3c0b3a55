"""Entitlement's crediting and deduction rules, through its consumers and its balance API, against
PostgreSQL only (moved from tests/integration/test_entitlement_rules.py: no broker needed)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from contracts import topics
from contracts.events import DeductionRequestedData, OrderLineData, OrderPaidData, encode, new_event
from services.entitlement import api
from shared.clock import add_years
from tests.component.conftest import NOW, Feed, Http
from tests.component.test_entitlement_consumers import feeds, rt  # noqa: F401 - fixtures

ORG = "org-a"


@pytest.fixture
async def http(rt) -> AsyncIterator[Http]:  # type: ignore[no-untyped-def]  # noqa: F811
    h = Http(rt, api.router)
    yield h
    await h.aclose()


def line(i: int, sku: str, **kw: Any) -> OrderLineData:
    return OrderLineData(line=i, sku=sku, price=Decimal("1.00"), **kw)


def use(resource: str, quantity: int, occurred_at: datetime | None = None, channel: str = "online") -> Any:
    uid = f"u-{uuid.uuid4().hex[:10]}"
    at = occurred_at or NOW - timedelta(minutes=1)
    return new_event(ORG, DeductionRequestedData(
        usage_id=uid, org_id=ORG, resource=resource, quantity=quantity, occurred_at=at, received_at=at,
        channel=channel, inspection_id=f"insp-{uid}"), "/aimis/metering", id=uid)


class Entitlement:
    def __init__(self, feeds: dict[str, Feed], http: Http):
        self.feeds, self.http = feeds, http

    async def credit(self, *lines: OrderLineData, paid_at: datetime = NOW - timedelta(days=1)) -> str:
        oid = f"ord-{uuid.uuid4().hex[:8]}"
        data = OrderPaidData(order_id=oid, org_id=ORG, lines=list(lines), total=Decimal(len(lines)),
                             price_book_version="test", placed_at=paid_at, paid_at=paid_at, payment_ref="pay-1")
        feed = self.feeds[topics.ORDERS]
        await feed(feed.record(encode(new_event(ORG, data, "/aimis/order")), ORG))
        return oid

    async def deduct(self, *uses: Any) -> None:
        feed = self.feeds[topics.DEDUCTIONS]
        await feed(*[feed.record(encode(u), ORG) for u in uses])

    async def ledger(self, kind: str, **match: Any) -> list[dict[str, Any]]:
        return [e["data"] for e in await self.feeds[topics.DEDUCTIONS].outbox(topics.LEDGER)
                if e["type"] == f"aimis.ledger.{kind}" and all(e["data"].get(k) == v for k, v in match.items())]

    async def balance(self, resource: str) -> dict[str, Any]:
        return (await self.http.get(ORG, "/balances"))["resources"][resource]


@pytest.fixture
def ent(feeds, http) -> Entitlement:  # type: ignore[no-untyped-def]  # noqa: F811
    return Entitlement(feeds, http)


def same_instant(a: str, b: datetime) -> bool:
    return datetime.fromisoformat(a.replace("Z", "+00:00")) == b


async def test_crediting_a_lot_offsets_arrears_oldest_first_with_its_storage_years(ent):
    t = NOW - timedelta(hours=1)
    older, newer = use("cloud_inspection", 3, t), use("cloud_inspection", 4, t + timedelta(minutes=1))
    await ent.deduct(newer, older)  # stream order is not age order: the offset goes by occurred_at
    assert (await ent.balance("cloud_inspection"))["arrears"] == 7
    oid = await ent.credit(line(0, "CI-QTY", quantity=1000, storage_years=10))
    [off] = await ent.ledger("arrears_offset")
    assert off["lot_id"] == f"{oid}.0" and off["quantity"] == 7
    assert [(o["usage_id"], o["quantity"]) for o in off["offsets"]] == [(older.id, 3), (newer.id, 4)]
    assert same_instant(off["offsets"][0]["retention_until"], add_years(t, 10))
    bal = await ent.balance("cloud_inspection")
    assert (bal["arrears"], bal["used"], bal["available"], bal["purchased"]) == (0, 7, 993, 1000)


async def test_deduction_draws_the_lot_expiring_first_and_may_span_lots(ent):
    early = await ent.credit(line(0, "CI-QTY", quantity=1000, storage_years=2), paid_at=NOW - timedelta(days=100))
    late = await ent.credit(line(0, "CI-QTY", quantity=1000, storage_years=15))
    first, span = use("cloud_inspection", 999), use("cloud_inspection", 5)
    await ent.deduct(first, span)
    [got] = await ent.ledger("usage_deducted", usage_id=span.id)
    allocs = got["allocations"]
    assert [(a["lot_id"], a["quantity"]) for a in allocs] == [(f"{early}.0", 1), (f"{late}.0", 4)]
    occurred = span.data.occurred_at
    assert same_instant(allocs[0]["retention_until"], add_years(occurred, 2))
    assert same_instant(allocs[1]["retention_until"], add_years(occurred, 15))
    bal = await ent.balance("cloud_inspection")
    assert {lot["lot_id"]: (lot["remaining"], lot["status"]) for lot in bal["lots"]} == {
        f"{early}.0": (0, "depleted"), f"{late}.0": (996, "active")}


async def test_cloud_inspection_beyond_balance_is_recorded_as_arrears(ent):
    await ent.credit(line(0, "CI-QTY", quantity=1000, storage_years=1))
    over, none_left = use("cloud_inspection", 1000), use("cloud_inspection", 5)
    await ent.deduct(over, none_left)
    [got] = await ent.ledger("usage_deducted", usage_id=none_left.id)
    assert got["allocations"] == [] and got["arrears_quantity"] == 5
    bal = await ent.balance("cloud_inspection")
    assert (bal["used"], bal["arrears"], bal["available"]) == (1005, 5, 0)


async def test_usage_for_an_org_without_lots_is_all_arrears_or_insufficient_balance(ent):
    ci, ai = use("cloud_inspection", 2), use("ai_review", 1)
    await ent.deduct(ci, ai)
    assert (await ent.ledger("usage_deducted", usage_id=ci.id))[0]["arrears_quantity"] == 2
    assert (await ent.ledger("usage_rejected", usage_id=ai.id))[0]["reason"] == "INSUFFICIENT_BALANCE"


async def test_ai_review_beyond_balance_is_rejected_whole_with_nothing_deducted(ent):
    await ent.credit(line(0, "AI-QTY", quantity=1000))
    take, too_many = use("ai_review", 998), use("ai_review", 3)
    await ent.deduct(take, too_many)
    assert (await ent.ledger("usage_rejected", usage_id=too_many.id))[0]["reason"] == "INSUFFICIENT_BALANCE"
    bal = await ent.balance("ai_review")
    assert (bal["available"], bal["used"], bal["arrears"]) == (2, 998, 0)
    assert await ent.http.get(ORG, "/ai-review/allowance") == {"allowed": True, "remaining": 2, "offline_licence": False}


async def test_offline_ai_review_is_counted_under_perpetual_licence_else_no_offline_licence(ent):
    before = use("ai_review", 1, channel="offline")
    await ent.deduct(before)
    assert (await ent.ledger("usage_rejected", usage_id=before.id))[0]["reason"] == "NO_OFFLINE_LICENCE"
    await ent.credit(line(0, "AI-PERPETUAL"), line(1, "AI-QTY", quantity=1000))
    offline, online = use("ai_review", 4, channel="offline"), use("ai_review", 2)
    await ent.deduct(offline, online)
    [got] = await ent.ledger("usage_deducted", usage_id=offline.id)
    assert got["allocations"] == [] and got["offline_licence"] is True
    [on] = await ent.ledger("usage_deducted", usage_id=online.id)
    assert on["offline_licence"] is False and sum(a["quantity"] for a in on["allocations"]) == 2
    assert (await ent.balance("ai_review"))["available"] == 998  # offline drew nothing


# ---------------------------------------------------------------- arrival order (issue 18)


async def test_lots_that_expire_together_are_drawn_by_line_number_as_a_number(ent):
    oid = await ent.credit(line(10, "CI-QTY", quantity=1000, storage_years=1),
                           line(2, "CI-QTY", quantity=1000, storage_years=1))
    first = use("cloud_inspection", 1001)
    await ent.deduct(first)
    [got] = await ent.ledger("usage_deducted", usage_id=first.id)
    assert [(a["lot_id"], a["quantity"]) for a in got["allocations"]] == [(f"{oid}.2", 1000), (f"{oid}.10", 1)]


async def test_an_import_already_expired_offsets_only_arrears_that_occurred_before_its_expiry(ent):
    paid = NOW - timedelta(days=400)
    within, after = use("cloud_inspection", 3, paid + timedelta(days=10)), use("cloud_inspection", 4)
    await ent.deduct(within, after)
    oid = await ent.credit(line(0, "CI-QTY", quantity=1000, storage_years=5), paid_at=paid)
    [off] = await ent.ledger("arrears_offset")
    assert off["lot_id"] == f"{oid}.0" and [(o["usage_id"], o["quantity"]) for o in off["offsets"]] == [(within.id, 3)]
    bal = await ent.balance("cloud_inspection")
    assert (bal["arrears"], bal["used"], bal["available"]) == (4, 7, 997)


async def test_a_late_use_is_offset_at_once_by_the_purchase_that_arrived_before_it(ent):
    """The issue's example: 1,000 bought; a use of 100 that occurred 3 minutes before the purchase
    arrives after it. As in occurrence order: arrears, offset first by that lot."""
    paid = NOW - timedelta(minutes=1)
    oid = await ent.credit(line(0, "CI-QTY", quantity=1000, storage_years=10), paid_at=paid)
    late = use("cloud_inspection", 100, paid - timedelta(minutes=3))
    await ent.deduct(late)
    [got] = await ent.ledger("usage_deducted", usage_id=late.id)
    assert got["allocations"] == [] and got["arrears_quantity"] == 100
    [off] = await ent.ledger("arrears_offset")
    assert off["lot_id"] == f"{oid}.0" and off["quantity"] == 100
    assert [(o["usage_id"], o["quantity"]) for o in off["offsets"]] == [(late.id, 100)]
    assert same_instant(off["offsets"][0]["retention_until"], add_years(late.data.occurred_at, 10))
    bal = await ent.balance("cloud_inspection")
    assert (bal["arrears"], bal["available"], bal["used"], bal["purchased"]) == (0, 900, 100, 1000)


async def test_an_offline_review_before_the_perpetual_licence_is_refused_whatever_the_arrival(ent):
    paid = NOW - timedelta(days=1)
    await ent.credit(line(0, "AI-PERPETUAL"), paid_at=paid)
    before, since = use("ai_review", 1, paid - timedelta(hours=1), "offline"), use("ai_review", 1, paid, "offline")
    await ent.deduct(before, since)
    assert (await ent.ledger("usage_rejected", usage_id=before.id))[0]["reason"] == "NO_OFFLINE_LICENCE"
    assert (await ent.ledger("usage_deducted", usage_id=since.id))[0]["offline_licence"] is True
