"""Entitlement's consumers (deductions, paid orders, expiry commands) against PostgreSQL only."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
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


async def test_a_batch_mixing_processed_and_new_uses_deducts_the_new_ones_from_the_lots_as_they_are(rt, feeds):
    """The deduction runs while its inbox claim does (claim="overlap"), assuming every use is new:
    when some were processed before, it is made again for the new ones from the lots as read. Had
    the first pass drawn the repeat again, u-2 would find 4 left and owe 1 in arrears."""
    d = feeds[topics.DEDUCTIONS]
    await deliver(feeds[topics.ORDERS], ("org-a", paid("org-a", "o-a", lot_line(quantity=1000))))
    await deliver(d, ("org-a", deduction("org-a", "u-1", 990)), ("org-a", deduction("org-a", "u-0", 3)))
    await deliver(d, ("org-a", deduction("org-a", "u-1", 990)), ("org-a", deduction("org-a", "u-2", 5)),
                  ("org-a", deduction("org-a", "u-0", 3)))
    uses = [e for e in await d.outbox(topics.LEDGER) if e["type"] == "aimis.ledger.usage_deducted"]
    assert sorted((e["data"]["usage_id"], e["data"]["arrears_quantity"]) for e in uses) == [
        ("u-0", 0), ("u-1", 0), ("u-2", 0)]
    counters = (await store.balance_counters(rt.pool, "org-a"))["cloud_inspection"]
    assert (counters.drawn_by_usage, counters.arrears_recorded) == (998, 0)
    (lot,) = await store.lots_of(rt.pool, "org-a")
    assert lot.remaining == 2


async def test_a_deduction_failing_while_its_claim_runs_is_isolated_and_the_others_take_effect(rt, feeds, monkeypatch):
    """A deduction that fails for good after its claim was sent: the transaction still ends cleanly
    (the claim's statement is waited for first), the use is dead-lettered, the others are billed."""
    from services.entitlement import domain

    original = domain.deduct_batch

    def deduct_batch(books, uses, *args):  # type: ignore[no-untyped-def]
        if any(u.usage_id == "u-bad" for _, u in uses):
            raise ValueError("cannot deduct")
        return original(books, uses, *args)

    monkeypatch.setattr(domain, "deduct_batch", deduct_batch)
    d = feeds[topics.DEDUCTIONS]
    await deliver(d, ("org-a", deduction("org-a", "u-1")), ("org-b", deduction("org-b", "u-bad")),
                  ("org-c", deduction("org-c", "u-3")))
    assert sorted(e["subject"] for e in await d.outbox(topics.LEDGER)) == ["org-a", "org-c"]
    assert [(e["subject"], e["data"]["reason"]) for e in await d.outbox(topics.ENTITLEMENT_DLQ)] == [
        ("org-b", "UNPROCESSABLE")]
    assert await rt.pool.fetchval("SELECT count(*) FROM inbox WHERE stream = 'usage'") == 2


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


async def test_a_balance_row_another_transaction_is_creating_is_waited_for_then_locked(rt):
    """lock_balances locks the rows that exist in one statement, and inserts the missing ones
    first: a row another transaction is creating is waited for, then held, never passed by."""
    key = ("org-new", "cloud_inspection")
    async with rt.pool.acquire() as first, rt.pool.acquire() as second, rt.pool.acquire() as third:
        t1 = first.transaction()
        await t1.start()
        await store.lock_balances(first, [key])  # creates the row: uncommitted
        t2 = second.transaction()
        await t2.start()
        waiting = asyncio.ensure_future(store.lock_balances(second, [key, ("org-old", "ai_review")]))
        done, _ = await asyncio.wait([waiting], timeout=0.5)
        assert not done, "the second transaction went on while the first was creating the row"
        await t1.commit()
        await asyncio.wait_for(waiting, timeout=5)
        # the second now holds the row: a third cannot take it
        with pytest.raises(asyncpg.LockNotAvailableError):
            async with third.transaction():
                await third.execute("SELECT 1 FROM balances WHERE org_id = $1 AND resource = $2 FOR UPDATE NOWAIT",
                                    *key)
        await t2.commit()
        assert await third.fetchval("SELECT count(*) FROM balances WHERE org_id IN ('org-new', 'org-old')") == 2


async def test_existing_balance_rows_are_locked_by_one_statement(rt):
    keys = [("org-x", "cloud_inspection"), ("org-y", "ai_review")]
    async with rt.pool.acquire() as conn:
        async with conn.transaction():
            await store.lock_balances(conn, keys)  # creates them
        statements = []
        conn.add_query_logger(lambda q: statements.append(q.query))
        async with conn.transaction():
            await store.lock_balances(conn, keys)
            held = await conn.fetchval(
                "SELECT count(*) FROM pg_locks WHERE pid = pg_backend_pid() AND locktype = 'transactionid'")
        assert [q for q in statements if "balances" in q] == [store._LOCK_BALANCES], statements
        assert held == 1  # its row locks: the transaction took an id (nothing else wrote)


async def test_ledger_rows_are_stored_as_given_whether_their_columns_pack_or_not(rt, feeds):
    """Entitlement's ledger rows go with the outbox append, their text columns packed into one text
    each when they can be (shared/packed.py): data with a non-ASCII value takes the array way."""
    def use(org: str, uid: str, site: str) -> bytes:
        data = DeductionRequestedData(usage_id=uid, org_id=org, resource="cloud_inspection", quantity=1,
                                      occurred_at=NOW, received_at=NOW, inspection_id=f"ins-{uid}", site_id=site)
        return encode(new_event(org, data, "/aimis/metering", id=uid))

    d = feeds[topics.DEDUCTIONS]
    await deliver(d, ("org-a", use("org-a", "u-1", "site-ascii")), ("org-b", use("org-b", "u-2", "site-2")))
    await deliver(d, ("org-a", use("org-a", "u-3", "Hôpital-é")))
    rows = await rt.pool.fetch("SELECT org_id, resource, type, data->>'usage_id' AS u, data->>'site_id' AS site"
                               " FROM ledger ORDER BY seq")
    assert [tuple(r) for r in rows] == [
        ("org-a", "cloud_inspection", "aimis.ledger.usage_deducted", "u-1", "site-ascii"),
        ("org-b", "cloud_inspection", "aimis.ledger.usage_deducted", "u-2", "site-2"),
        ("org-a", "cloud_inspection", "aimis.ledger.usage_deducted", "u-3", "Hôpital-é")]
    assert [e["data"]["site_id"] for e in await d.outbox(topics.LEDGER)] == ["site-ascii", "site-2", "Hôpital-é"]
