"""The ledger consumers of order and expiry against PostgreSQL only: their policy, what they ignore,
and their dead-letter topics."""

from __future__ import annotations

import json
from datetime import timedelta

from prometheus_client import REGISTRY

from contracts import topics
from contracts.events import LotCreditedData, LotExpiredData, OrderFulfilledData, encode, new_event
from services.expiry import handlers as expiry_handlers
from services.expiry import store as expiry_store
from services.expiry.app import MIGRATIONS as EXPIRY_MIGRATIONS
from services.order import handlers as order_handlers
from services.order.app import GROUP_ID, SCHEMA
from services.order.app import MIGRATIONS as ORDER_MIGRATIONS
from tests.component.conftest import NOW, Feed, runtime

SRC = "/aimis/entitlement"


def _ignored(service: str) -> float:
    labels = {"service": service, "topic": topics.LEDGER, "outcome": "ignored"}
    return REGISTRY.get_sample_value("aimis_consumer_records_total", labels) or 0.0


async def test_order_fulfilled_marks_a_paid_order_once_other_kinds_are_ignored_and_bad_records_dead_lettered(
        database, clock):
    rt = await runtime(SCHEMA, ORDER_MIGRATIONS, database, clock, group_id=GROUP_ID)
    try:
        await rt.pool.execute(
            """INSERT INTO orders (order_id, org_id, status, request, total, price_book_version, placed_at,
                                   paid_at, payment_ref)
               VALUES ('o-1', 'org-a', 'paid', '{}'::jsonb, 1, 'v', $1, $1, 'pay-1')""", NOW)
        feed = Feed(rt, order_handlers.ledger(rt))
        fulfilled = new_event("org-a", OrderFulfilledData(org_id="org-a", order_id="o-1", fulfilled_at=NOW), SRC)
        other = new_event("org-a", LotExpiredData(org_id="org-a", lot_id="x.0", resource="ai_review", forfeited=0,
                                                  expires_at=NOW, expired_at=NOW), SRC)
        bad_schema = {**json.loads(encode(fulfilled)), "id": "bad-1", "data": {"order_id": "o-1"}}
        ignored_before = _ignored(SCHEMA)
        await feed(feed.record(b"\x00not json", "org-a"), feed.record(bad_schema, "org-a"),
                   feed.record(encode(other), "org-a"), feed.record(encode(fulfilled), "org-a"),
                   feed.record(encode(fulfilled), "org-a"))
        row = await rt.pool.fetchrow("SELECT status, fulfilled_at FROM orders WHERE order_id = 'o-1'")
        assert (row["status"], row["fulfilled_at"]) == ("fulfilled", NOW)
        dead = await feed.outbox(topics.ORDER_DLQ)
        assert [(e["type"], e["data"]["reason"], e["data"]["offset"]) for e in dead] == [
            ("aimis.order.dead_letter", "MALFORMED", 0), ("aimis.order.dead_letter", "SCHEMA_VIOLATION", 1)]
        assert _ignored(SCHEMA) - ignored_before == 1
    finally:
        await rt.close_database()


async def test_expiry_schedules_a_credited_lot_and_dead_letters_what_is_not_a_ledger_event(database, clock):
    rt = await runtime("expiry", EXPIRY_MIGRATIONS, database, clock)
    try:
        feed = Feed(rt, expiry_handlers.ledger(rt))
        expires = NOW + timedelta(days=30)
        credited = new_event("org-a", LotCreditedData(
            org_id="org-a", lot_id="o-1.0", order_id="o-1", line=0, sku="CI-QTY", resource="cloud_inspection",
            quantity=1000, storage_years=2, credited_at=NOW, expires_at=expires), SRC)
        not_ledger = encode(credited).replace(b"aimis.ledger.lot_credited", b"aimis.orders.order_paid")
        await feed(feed.record(encode(credited), "org-a"), feed.record(not_ledger, "org-a"),
                   feed.record(b"[1, 2", "not an org!"))
        items = await expiry_store.schedule(rt.pool, "org-a")
        assert [(i.kind, i.ref_id, i.expires_at) for i in items] == [("lot", "o-1.0", expires)]
        dead = await feed.outbox(topics.EXPIRY_DLQ)
        assert [(e["subject"], e["data"]["reason"]) for e in dead] == [("org-a", "UNKNOWN_TYPE"), ("unknown", "MALFORMED")]
    finally:
        await rt.close_database()


async def test_a_ledger_event_a_schedule_rule_fails_on_is_dead_lettered_not_skipped(database, clock, monkeypatch):
    rt = await runtime("expiry", EXPIRY_MIGRATIONS, database, clock)
    try:
        feed = Feed(rt, expiry_handlers.ledger(rt))
        lots = [new_event("org-a", LotCreditedData(
            org_id="org-a", lot_id=f"o-{i}.0", order_id=f"o-{i}", line=0, sku="CI-QTY", resource="cloud_inspection",
            quantity=1000, storage_years=2, credited_at=NOW, expires_at=NOW + timedelta(days=30)), SRC) for i in (1, 2, 3)]
        real = expiry_handlers.domain.apply

        def apply(items, data, now, grace):  # a rule with a bug that only the second lot meets
            if getattr(data, "lot_id", None) == "o-2.0":
                raise KeyError("a bug in a schedule rule")
            return real(items, data, now, grace)

        monkeypatch.setattr(expiry_handlers.domain, "apply", apply)
        await feed(*(feed.record(encode(e), "org-a") for e in lots))
        items = await expiry_store.schedule(rt.pool, "org-a")
        assert sorted(i.ref_id for i in items) == ["o-1.0", "o-3.0"]  # the others took effect
        dead = await feed.outbox(topics.EXPIRY_DLQ)
        assert [(e["data"]["reason"], e["data"]["original"]["id"]) for e in dead] == [("UNPROCESSABLE", lots[1].id)]
        assert "a bug in a schedule rule" in dead[0]["data"]["detail"]
    finally:
        await rt.close_database()
