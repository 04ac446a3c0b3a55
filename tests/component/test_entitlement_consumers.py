"""Entitlement's consumers (deductions, paid orders, expiry commands) against PostgreSQL only."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from contracts import topics
from contracts.events import (
    DeductionRequestedData,
    ExpireLotData,
    OrderLineData,
    OrderPaidData,
    OrderPlacedData,
    encode,
    new_event,
)
from services.entitlement import store
from services.entitlement.app import MIGRATIONS
from services.entitlement.handlers import subscriptions
from shared.clock import add_years
from tests.component.conftest import NOW, Feed, runtime


@pytest.fixture
async def rt(database, clock) -> AsyncIterator[Any]:  # type: ignore[no-untyped-def]
    rt = await runtime("entitlement", MIGRATIONS, database, clock)
    yield rt
    await rt.close_database()


@pytest.fixture
def feeds(rt) -> dict[str, Feed]:  # type: ignore[no-untyped-def]
    return {s.topic: Feed(rt, s) for s in subscriptions(rt)}


def paid(org: str, order_id: str, *lines: OrderLineData, at: datetime = NOW) -> bytes:
    data = OrderPaidData(order_id=order_id, org_id=org, lines=list(lines), total=Decimal("1.00"),
                         price_book_version="test", placed_at=at, paid_at=at, payment_ref="pay-1")
    return encode(new_event(org, data, "/aimis/order"))


def lot_line(i: int = 0, quantity: int = 1000) -> OrderLineData:
    return OrderLineData(line=i, sku="CI-QTY", quantity=quantity, storage_years=2, price=Decimal("1.00"))


def deduction(org: str, uid: str, quantity: int = 1) -> bytes:
    data = DeductionRequestedData(usage_id=uid, org_id=org, resource="cloud_inspection", quantity=quantity,
                                  occurred_at=NOW, received_at=NOW, inspection_id=f"ins-{uid}")
    return encode(new_event(org, data, "/aimis/metering", id=uid))


async def deliver(feed: Feed, *pairs: tuple[str, bytes]) -> None:
    await feed(*[feed.record(value, org) for org, value in pairs])


async def test_the_same_usage_id_is_deducted_once_per_org(rt, feeds):
    d = feeds[topics.DEDUCTIONS]
    await deliver(d, ("org-a", deduction("org-a", "u-1", 3)), ("org-b", deduction("org-b", "u-1", 5)),
                  ("org-a", deduction("org-a", "u-1", 3)))
    await deliver(d, ("org-b", deduction("org-b", "u-1", 5)))  # redelivered
    ledger = await d.outbox(topics.LEDGER)
    assert sorted((e["subject"], e["data"]["arrears_quantity"]) for e in ledger) == [("org-a", 3), ("org-b", 5)]
    # each org's arrears are its own: a lot credited to org-b offsets org-b's use only
    await deliver(feeds[topics.ORDERS], ("org-b", paid("org-b", "o-b", lot_line())))
    offsets = [e for e in await d.outbox(topics.LEDGER) if e["type"] == "aimis.ledger.arrears_offset"]
    assert [(e["subject"], e["data"]["offsets"][0]["usage_id"], e["data"]["quantity"]) for e in offsets] == [
        ("org-b", "u-1", 5)]
    counters = await store.balance_counters(rt.pool, "org-a")
    assert (counters["cloud_inspection"].arrears_recorded, counters["cloud_inspection"].arrears_offset) == (3, 0)


async def test_a_paid_order_with_a_bad_line_is_dead_lettered_whole_and_other_order_events_are_ignored(rt, feeds):
    o = feeds[topics.ORDERS]
    bad = paid("org-a", "o-1", lot_line(0), OrderLineData(line=1, sku="NOPE", price=Decimal("1.00")))
    placed = encode(new_event("org-a", OrderPlacedData(order_id="o-2", org_id="org-a", lines=[lot_line()],
                                                       total=Decimal("1.00"), price_book_version="t",
                                                       placed_at=NOW), "/aimis/order"))
    unknown = placed.replace(b"aimis.orders.order_placed", b"aimis.orders.nope")
    await deliver(o, ("org-a", bad), ("org-a", placed), ("org-a", unknown))
    await deliver(o, ("org-a", bad))  # another delivery of the same order: another record, another letter
    dead = await o.outbox(topics.ENTITLEMENT_DLQ)
    assert [(e["data"]["reason"], e["data"]["offset"]) for e in dead] == [
        ("UNKNOWN_ORDER_LINE", 0), ("UNKNOWN_TYPE", 2), ("UNKNOWN_ORDER_LINE", 3)]
    assert await store.lots_of(rt.pool, "org-a") == []  # nothing of the bad order is credited


async def test_expire_lot_waits_for_the_late_usage_grace_and_an_early_command_does_not_burn_its_id(rt, feeds, clock):
    """Moved from tests/integration/test_entitlement_rules.py (a rule, no Kafka needed)."""
    paid_at = NOW - timedelta(days=400)
    await deliver(feeds[topics.ORDERS], ("org-a", paid("org-a", "o-1", lot_line(), at=paid_at)))
    expires = add_years(paid_at, 1)
    cmd = encode(new_event("org-a", ExpireLotData(org_id="org-a", lot_id="o-1.0", expires_at=expires), "/aimis/expiry"))
    c = feeds[topics.EXPIRY_COMMANDS]
    clock.set(expires + timedelta(seconds=299))  # expired, but the 300 s grace is not over
    await deliver(c, ("org-a", cmd))
    assert [e for e in await c.outbox(topics.LEDGER) if e["type"] == "aimis.ledger.lot_expired"] == []
    clock.set(expires + timedelta(seconds=300))
    await deliver(c, ("org-a", cmd))  # the same command again, now due: its id was not burnt
    await deliver(c, ("org-a", cmd))  # and once more: it took effect once
    expired = [e for e in await c.outbox(topics.LEDGER) if e["type"] == "aimis.ledger.lot_expired"]
    assert [(e["data"]["lot_id"], e["data"]["forfeited"]) for e in expired] == [("o-1.0", 1000)]
    assert (await store.balance_counters(rt.pool, "org-a"))["cloud_inspection"].forfeited == 1000
