"""Nothing blocks (SPEC 7.2): a record PostgreSQL refuses for good is isolated from its batch and
rejected as UNPROCESSABLE, while every other organisation's records take effect."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest
from prometheus_client import REGISTRY

from contracts import topics
from services.entitlement.app import MIGRATIONS as ENTITLEMENT_MIGRATIONS
from services.entitlement.handlers import subscriptions
from services.metering import store as metering_store
from services.metering.app import MIGRATIONS as METERING_MIGRATIONS
from services.metering.handlers import usage
from shared import consumer
from tests.component.conftest import NOW, Feed, runtime
from tests.component.test_entitlement_consumers import deduction
from tests.component.test_metering_consumers import KnownOrgs, use

ORGS = ["org-a", "org-b", "org-c", "org-d"]


async def feed_twice_with_org_b_poisoned(rt: Any, org_b_id: str) -> Feed:
    """Four orgs' uses in one batch, org-b's with id `org_b_id`, fed twice (a redelivery); the
    other three must be forwarded exactly once."""
    await metering_store.add_known_orgs(rt.pool, [(o, NOW) for o in ORGS])
    feed = Feed(rt, usage(rt, KnownOrgs()))  # type: ignore[arg-type]
    batch = [feed.record(use("org-a", "u-1"), "org-a"), feed.record(use("org-b", org_b_id), "org-b"),
             feed.record(use("org-c", "u-1"), "org-c"), feed.record(use("org-d", "u-2"), "org-d")]
    await feed(*batch)
    await feed(*batch)  # redelivered: nothing twice
    forwarded = await feed.outbox(topics.DEDUCTIONS)
    assert sorted((e["subject"], e["data"]["usage_id"]) for e in forwarded) == [
        ("org-a", "u-1"), ("org-c", "u-1"), ("org-d", "u-2")]
    return feed


async def test_a_usage_id_with_a_nul_byte_is_rejected_malformed_and_the_other_orgs_are_billed(database, clock):
    """SPEC 7.1: control characters never reach PostgreSQL; the record is rejected on its own."""
    rt = await runtime("metering", METERING_MIGRATIONS, database, clock)
    try:
        feed = await feed_twice_with_org_b_poisoned(rt, "u-\x00-1")  # valid JSON; PostgreSQL refuses NUL
        rejected = await feed.outbox(topics.USAGE_REJECTED)
        assert [(e["subject"], e["data"]["reason"], e["data"]["original"]["id"]) for e in rejected] == [
            ("org-b", "MALFORMED", "u-\x00-1")]
    finally:
        await rt.close_database()


async def test_a_usage_postgresql_refuses_is_isolated_unprocessable_and_the_other_orgs_are_billed(
    database, clock, monkeypatch
):
    """SPEC 7.2: whatever still slips past validation and fails in PostgreSQL for good (here: org-b's
    aggregate row, made to fail as a NUL byte would) is tried alone, then rejected UNPROCESSABLE."""
    rt = await runtime("metering", METERING_MIGRATIONS, database, clock)
    try:
        real = metering_store.add_hourly

        async def refuses_org_b(conn: Any, org_ids: Any, *rest: Any) -> Any:
            if "org-b" in org_ids:
                raise asyncpg.exceptions.CharacterNotInRepertoireError("invalid byte sequence for encoding")
            return await real(conn, org_ids, *rest)

        monkeypatch.setattr(metering_store, "add_hourly", refuses_org_b)
        feed = await feed_twice_with_org_b_poisoned(rt, "u-1")
        rejected = await feed.outbox(topics.USAGE_REJECTED)
        assert [(e["subject"], e["data"]["reason"], e["data"]["original"]["id"]) for e in rejected] == [
            ("org-b", "UNPROCESSABLE", "u-1")]
        assert "CharacterNotInRepertoire" in rejected[0]["data"]["detail"]
    finally:
        await rt.close_database()


async def test_a_deduction_postgresql_cannot_store_goes_to_the_dead_letter_topic_alone(database, clock):
    rt = await runtime("entitlement", ENTITLEMENT_MIGRATIONS, database, clock)
    try:
        feed = Feed(rt, subscriptions(rt)[0])
        # a deduction that passes every input rule (a NUL no longer does) but that the ledger refuses
        await rt.pool.execute("""
            CREATE FUNCTION refuse_b() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
              IF NEW.key = 'org-b' AND NEW.topic = 'aimis.ledger.v1' THEN
                RAISE EXCEPTION 'refused' USING ERRCODE = '22023';
              END IF;
              RETURN NEW;
            END $$;
            CREATE TRIGGER refuse_b BEFORE INSERT ON outbox FOR EACH ROW EXECUTE FUNCTION refuse_b();""")
        poison = deduction("org-b", "u-2")
        before = REGISTRY.get_sample_value(
            "aimis_dead_letters_total",
            {"service": "entitlement", "topic": topics.DEDUCTIONS, "reason": "UNPROCESSABLE"}) or 0
        await feed(feed.record(deduction("org-a", "u-1"), "org-a"), feed.record(poison, "org-b"),
                   feed.record(deduction("org-c", "u-3"), "org-c"))
        ledger = await feed.outbox(topics.LEDGER)
        assert sorted(e["subject"] for e in ledger) == ["org-a", "org-c"]
        dead = await feed.outbox(topics.ENTITLEMENT_DLQ)
        assert [(e["subject"], e["data"]["reason"], e["data"]["offset"]) for e in dead] == [
            ("org-b", "UNPROCESSABLE", 1)]
        # the deduction left no trace: its inbox claim rolled back with it
        assert await rt.pool.fetchval("SELECT count(*) FROM inbox WHERE stream = 'usage'") == 2
        assert REGISTRY.get_sample_value(
            "aimis_dead_letters_total",
            {"service": "entitlement", "topic": topics.DEDUCTIONS, "reason": "UNPROCESSABLE"}) == before + 1
    finally:
        await rt.close_database()


async def test_a_transient_failure_propagates_with_backoff_and_dead_letters_nothing(database, clock, monkeypatch):
    rt = await runtime("entitlement", ENTITLEMENT_MIGRATIONS, database, clock)
    try:
        feed = Feed(rt, subscriptions(rt)[0])
        monkeypatch.setattr(consumer, "BACKOFF_BASE_S", 0.001)
        calls: list[int] = []

        async def unreachable(*_: Any) -> Any:
            calls.append(1)
            raise ConnectionRefusedError("database unreachable")

        original = feed.consumer.process
        monkeypatch.setattr(feed.consumer, "process", unreachable)
        record = feed.record(deduction("org-a", "u-1"), "org-a")
        for _ in range(3):
            with pytest.raises(ConnectionRefusedError):
                await feed(record)
        assert len(calls) == 3 and feed.consumer.failures == 3  # one try per delivery: no isolation
        assert feed.consumer.backoff_s() == pytest.approx(0.004)  # doubling per consecutive failure
        monkeypatch.setattr(feed.consumer, "process", original)
        await feed(record)  # the database is back: the redelivered record takes effect
        assert feed.consumer.failures == 0
        assert [e["subject"] for e in await feed.outbox(topics.LEDGER)] == ["org-a"]
        assert await feed.outbox(topics.ENTITLEMENT_DLQ) == []
    finally:
        await rt.close_database()
