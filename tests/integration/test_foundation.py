"""The shared plumbing on the real broker and database: outbox -> Kafka -> subscriber with inbox."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from pathlib import Path

import asyncpg
import pytest

from contracts import topics
from contracts.events import ExpiryUpcomingData, parse_event
from shared import inbox, migrate, outbox
from shared.config import Settings
from shared.outbox import Relay
from shared.service import Runtime
from tests.support.kafka import TopicReader, wait_until

pytestmark = pytest.mark.integration
MIGRATIONS = Path(__file__).with_name("foundation_migrations")


class RelayKilled(BaseException):
    """Ends the relay task the way a kill would: not caught by its retry loop."""


def _runtime(settings: Settings, dsn: str) -> Runtime:
    s = settings.model_copy(update={"database_url": dsn})
    return Runtime("foundation", MIGRATIONS, settings=s, group_id=f"t-{uuid.uuid4().hex[:8]}")


def _reminder(rt: Runtime, org: str):
    data = ExpiryUpcomingData(
        org_id=org, kind="lot", ref_id="lot-1", expires_at=datetime.now(timezone.utc), days_before=7
    )
    return rt.event(org, data)


def _effect_handler(rt: Runtime, seen: list):
    async def handle(records):
        async with rt.pool.acquire() as conn, conn.transaction():
            for r in records:
                ev = parse_event(r.value)
                seen.append((r.key, ev.id))
                if await inbox.claim_one(conn, "notifications", ev.id):
                    await conn.execute(
                        "INSERT INTO effects (event_id, org_id, kafka_key) VALUES ($1, $2, $3)",
                        ev.id, ev.subject, r.key.decode(),
                    )
    return handle


async def test_cloudevent_through_outbox_reaches_subscriber_keyed_by_org(settings, fresh_db, org_id):
    rt = _runtime(settings, fresh_db)
    seen: list = []
    rt.consume(topics.NOTIFICATIONS, _effect_handler(rt, seen))
    await rt.start()
    try:
        ev = _reminder(rt, org_id)
        async with rt.pool.acquire() as conn, conn.transaction():
            await outbox.add(conn, [ev])
        await wait_until(lambda: any(eid == ev.id for _, eid in seen), timeout=30)
        key = next(k for k, eid in seen if eid == ev.id)
        assert key == org_id.encode()
        # `seen` is appended inside the handler's transaction: the effect is readable once it commits
        await wait_until(lambda: rt.pool.fetchval("SELECT count(*) = 1 FROM effects WHERE event_id = $1", ev.id))
        row = await rt.pool.fetchrow("SELECT org_id, kafka_key FROM effects WHERE event_id = $1", ev.id)
        assert (row["org_id"], row["kafka_key"]) == (org_id, org_id)
        await wait_until(lambda: rt.pool.fetchval("SELECT state = 'sent' FROM outbox_state WHERE event_id = $1", ev.id))
    finally:
        await rt.stop()


async def test_relay_killed_between_publish_and_mark_publishes_again_and_inbox_dedupes(
    settings, fresh_db, org_id
):
    rt = _runtime(settings, fresh_db)
    seen: list = []
    rt.consume(topics.NOTIFICATIONS, _effect_handler(rt, seen))
    await rt.start()
    await rt.relay.stop()  # replace the runtime's relay with one we can kill
    killed = []

    async def die_after_publish(seqs):
        killed.append(seqs)
        raise RelayKilled("between publish and mark-sent")

    reader = await TopicReader(settings.kafka_bootstrap, topics.NOTIFICATIONS).start()
    try:
        ev = _reminder(rt, org_id)
        async with rt.pool.acquire() as conn, conn.transaction():
            await outbox.add(conn, [ev])
        doomed = Relay(fresh_db, "foundation", rt.publisher, after_publish=die_after_publish)
        task = doomed.start()
        with pytest.raises(RelayKilled):
            await task
        assert killed, "the relay published before it was killed"
        assert await rt.pool.fetchval("SELECT state FROM outbox_state WHERE event_id = $1", ev.id) == "unsent"

        restarted = Relay(fresh_db, "foundation", rt.publisher)
        restarted.start()
        try:
            await wait_until(
                lambda: rt.pool.fetchval("SELECT state = 'sent' FROM outbox_state WHERE event_id = $1", ev.id)
            )
            copies = await reader.wait_for(lambda e: e["id"] == ev.id, count=2)
            assert len(copies) == 2  # published twice: once before the kill, once after restart
            await wait_until(lambda: sum(1 for _, eid in seen if eid == ev.id) >= 2)
            assert await rt.pool.fetchval("SELECT count(*) FROM effects WHERE event_id = $1", ev.id) == 1
        finally:
            await restarted.stop()
    finally:
        await reader.stop()
        await rt.stop()


async def test_failed_batch_is_redelivered_not_skipped(settings, fresh_db, org_id):
    rt = _runtime(settings, fresh_db)
    seen: list = []
    inner = _effect_handler(rt, seen)
    failures = []

    async def flaky(records):
        if not failures:
            failures.append(len(records))
            raise RuntimeError("database hiccup")
        await inner(records)

    rt.consume(topics.NOTIFICATIONS, flaky)
    await rt.start()
    try:
        ev = _reminder(rt, org_id)
        async with rt.pool.acquire() as conn, conn.transaction():
            await outbox.add(conn, [ev])
        await wait_until(
            lambda: rt.pool.fetchval("SELECT count(*) FROM effects WHERE event_id = $1", ev.id), timeout=40
        )
        assert failures, "the first delivery failed"
    finally:
        await rt.stop()


async def test_migrations_from_empty_give_the_schema_and_rerun_is_noop(fresh_db):
    conn = await asyncpg.connect(fresh_db)
    try:
        first = await migrate.migrate(conn, "foundation", MIGRATIONS)
        assert first == ["shared/001_outbox_inbox.sql", "shared/002_outbox_parked.sql",
                         "shared/003_outbox_resolutions.sql",
                         "shared/004_outbox_pending.sql", "shared/005_inbox_bytewise_keys.sql",
                         "shared/006_outbox_cursor.sql", "shared/007_outbox_kept.sql",
                         "shared/008_log_tables_vacuumed_young.sql", "service/001_effects.sql"]
        assert await migrate.migrate(conn, "foundation", MIGRATIONS) == []
        tables = {
            r["table_name"]
            for r in await conn.fetch(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'foundation'"
            )
        }
        assert tables == {"schema_migrations", "outbox", "outbox_resolutions", "outbox_cursor", "outbox_republish",
                          "outbox_state", "outbox_kept", "inbox", "effects"}
    finally:
        await conn.close()


async def test_sent_outbox_rows_are_purged_after_a_day_unsent_ones_never(settings, fresh_db, org_id):
    conn = await asyncpg.connect(fresh_db)
    try:
        await migrate.migrate(conn, "foundation", MIGRATIONS)
        await conn.execute("SET search_path TO foundation")
        rt = _runtime(settings, fresh_db)
        logged, old, recent, unsent = (_reminder(rt, org_id) for _ in range(4))
        await outbox.add(conn, [logged])
        await outbox.add(conn, [old, recent, unsent])
        # `logged` went out with the log (the cursor passed it), two days ago; `old` and `recent` were
        # sent out of order (re-published rows carry sent_at); `unsent` is after the cursor
        await conn.execute("UPDATE outbox_cursor SET sent_upto = (SELECT seq FROM outbox WHERE event_id = $1)",
                           logged.id)
        await conn.execute(
            "UPDATE outbox SET created_at = now() - interval '2 days' WHERE event_id = $1", logged.id)
        await conn.execute(
            "UPDATE outbox SET sent_at = now() - interval '2 days', created_at = now() - interval '2 days'"
            " WHERE event_id = $1", old.id,
        )
        await conn.execute("UPDATE outbox SET sent_at = now() WHERE event_id = $1", recent.id)
        await conn.execute("UPDATE outbox SET created_at = now() - interval '9 days' WHERE event_id = $1", unsent.id)
        assert await outbox.purge_sent(conn, 86_400) == 2
        left = {r["event_id"] for r in await conn.fetch("SELECT event_id FROM outbox")}
        assert left == {recent.id, unsent.id}
    finally:
        await conn.close()
