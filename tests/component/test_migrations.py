"""Migrating from empty gives each schema (PostgreSQL only)."""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

import asyncpg

from contracts import topics
from contracts.events import (
    DeductionRequestedData,
    Encoded,
    UsageDeductedData,
    UsageRejectedLedgerData,
    encode,
    encoded,
)
from services.entitlement import store
from services.entitlement.app import MIGRATIONS
from shared import db, inbox, migrate, outbox


async def test_migrations_from_empty_give_the_entitlement_schema_and_rerun_is_noop(database):
    conn = await asyncpg.connect(await database.create_empty())
    try:
        assert await migrate.migrate(conn, "entitlement", MIGRATIONS) == [
            "shared/001_outbox_inbox.sql", "shared/002_outbox_parked.sql", "shared/003_outbox_resolutions.sql",
            "shared/004_outbox_pending.sql", "shared/005_inbox_bytewise_keys.sql",
            "shared/006_outbox_cursor.sql", "shared/007_outbox_kept.sql", "shared/008_log_tables_vacuumed_young.sql",
            "service/001_init.sql",
            "service/002_arrears_per_org.sql", "service/003_inbox_usage_keys_per_org.sql",
            "service/004_ledger_lighter.sql", "service/005_ledger_in_outbox.sql",
            "service/006_lots_hot_updates.sql"]
        assert await migrate.migrate(conn, "entitlement", MIGRATIONS) == []
        tables = {r["table_name"] for r in await conn.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'entitlement'")}
        assert tables == {"schema_migrations", "outbox", "outbox_resolutions", "outbox_cursor", "outbox_republish",
                          "outbox_state", "outbox_kept", "inbox", "balances",
                          "lots", "arrears", "licences",
                          "licence_periods", "services", "fulfilled_orders", "ledger", "ledger_before", "ledger_since"}
        # the inbox keys compare byte by byte (issue 13), whatever the database's collation
        assert {r["attname"]: r["collname"] for r in await conn.fetch(
            """SELECT a.attname, c.collname FROM pg_attribute a JOIN pg_collation c ON c.oid = a.attcollation
               WHERE a.attrelid = 'entitlement.inbox'::regclass AND a.attname IN ('stream', 'message_id')""")} == {
            "stream": "C", "message_id": "C"}
        pk = await conn.fetchval(
            """SELECT string_agg(a.attname, ',' ORDER BY k.n) FROM pg_index i
               CROSS JOIN unnest(i.indkey) WITH ORDINALITY AS k(attnum, n)
               JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
               WHERE i.indrelid = 'entitlement.arrears'::regclass AND i.indisprimary""")
        assert pk == "org_id,usage_id"  # a usage id is unique per org (SPEC 7.3)
        # the ledger is stored once: a view of the outbox rows on the ledger topic, kept, found per
        # org by one index (issue 13)
        assert await conn.fetchval("SELECT relkind FROM pg_class WHERE oid = 'entitlement.ledger'::regclass") == b"v"
        assert await conn.fetch("SELECT topic FROM entitlement.outbox_kept") == [("aimis.ledger.v1",)]
        assert await conn.fetchval(
            "SELECT indexdef FROM pg_indexes WHERE schemaname = 'entitlement' AND indexname = 'outbox_ledger_by_org'"
        ) == ("CREATE INDEX outbox_ledger_by_org ON entitlement.outbox USING btree (key, seq) "
              "WHERE (topic = 'aimis.ledger.v1'::text)")
    finally:
        await conn.close()


async def test_a_deduction_rewrites_a_lot_in_place_and_a_spent_lot_is_no_longer_drawable(database):
    """A lot's remainder changes on every deduction batch: the update must be HOT (no new index
    entries; issue 13), which no index naming `remaining` allows, and the drawable lots must still
    leave out a spent one."""
    conn = await asyncpg.connect(await database.create_empty(), server_settings={"search_path": "entitlement"})
    try:
        await migrate.migrate(conn, "entitlement", MIGRATIONS)
        now = datetime.now(timezone.utc)
        await _add_lots(conn, now, [(f"o-{i}.0", "org-1", "cloud_inspection") for i in range(1, 41)])
        lots = await store.drawable_lots(conn, [("org-1", "cloud_inspection")], now, timedelta(0))
        drawn = lots[("org-1", "cloud_inspection")]
        assert len(drawn) == 40
        for lot in drawn:
            lot.remaining = 0 if lot.lot_id == "o-1.0" else lot.remaining - 3
        async with conn.transaction():
            await store.save_deductions(conn, drawn, [], {})
            updated, hot = await conn.fetchrow(
                "SELECT pg_stat_get_xact_tuples_updated('lots'::regclass), "
                "pg_stat_get_xact_tuples_hot_updated('lots'::regclass)")
        assert (updated, hot) == (40, 40)
        left = await store.drawable_lots(conn, [("org-1", "cloud_inspection")], now, timedelta(0))
        assert sorted(lot.lot_id for lot in left[("org-1", "cloud_inspection")]) == sorted(
            f"o-{i}.0" for i in range(2, 41))
        assert {lot.remaining for lot in left[("org-1", "cloud_inspection")]} == {7}
    finally:
        await conn.close()


async def test_uses_claimed_before_per_org_keys_stay_claimed_after_the_upgrade(database, tmp_path: Path):
    """A use claimed under its bare id before SPEC 7.3 and delivered again after the upgrade is still
    a duplicate; another org's use of the same id is not; an old claim is never dropped."""
    before = tmp_path / "migrations"
    before.mkdir()
    for name in ("001_init.sql", "002_arrears_per_org.sql"):
        shutil.copy(MIGRATIONS / name, before / name)
    conn = await asyncpg.connect(await database.create_empty())
    try:
        await migrate.migrate(conn, "entitlement", before)
        await conn.execute("SET search_path TO entitlement")
        ledger = [("org-a", UsageDeductedData.TYPE, "u-1"), ("org-a", UsageRejectedLedgerData.TYPE, "u-2"),
                  ("org-b", UsageDeductedData.TYPE, "org-a:u-9"),  # a bare id that looks like a new key
                  ("org-c", DeductionRequestedData.TYPE, "u-3")]  # not a use's ledger entry
        for seq, (org, type_, usage_id) in enumerate(ledger):
            await conn.execute(
                "INSERT INTO ledger (event_id, org_id, type, time, data) VALUES ($1, $2, $3, now(), $4::jsonb)",
                f"e-{seq}", org, type_, json.dumps({"org_id": org, "usage_id": usage_id}))
        assert await inbox.claim(conn, "usage", ["u-1", "u-2", "org-a:u-9", "u-3"]) == {
            "u-1", "u-2", "org-a:u-9", "u-3"}

        assert await migrate.migrate(conn, "entitlement", MIGRATIONS) == [
            "service/003_inbox_usage_keys_per_org.sql", "service/004_ledger_lighter.sql",
            "service/005_ledger_in_outbox.sql", "service/006_lots_hot_updates.sql"]
        await conn.execute("SET search_path TO entitlement")

        assert await inbox.claim(conn, "usage", ["org-a:u-1", "org-a:u-2", "org-b:org-a:u-9"]) == set()
        assert await inbox.claim(conn, "usage", ["org-b:u-1", "org-c:u-3"]) == {"org-b:u-1", "org-c:u-3"}
        assert await inbox.claim(conn, "usage", ["u-1", "org-a:u-9"]) == set()  # the old rows stay
    finally:
        await conn.close()


def _ledger_event(org: str, usage_id: str, resource: str, at: datetime) -> Encoded:
    return encoded(UsageRejectedLedgerData, org, {
        "org_id": org, "usage_id": usage_id, "resource": resource, "quantity": 1, "occurred_at": at,
        "channel": "online", "reason": "INSUFFICIENT_BALANCE"}, "/aimis/entitlement", time=at)


async def test_the_ledger_from_before_it_was_stored_once_reads_on_in_one_order(database, tmp_path: Path):
    """Entries written twice before migration 005 (outbox row and ledger row) and entries stored
    once after it are one ledger: each read once, in seq order, with its fields; a cursor taken
    before the upgrade goes on; housekeeping deletes the old outbox copies and other topics' rows,
    never a ledger entry."""
    before = tmp_path / "migrations"
    before.mkdir()
    for name in ("001_init.sql", "002_arrears_per_org.sql", "003_inbox_usage_keys_per_org.sql",
                 "004_ledger_lighter.sql"):
        shutil.copy(MIGRATIONS / name, before / name)
    conn = await asyncpg.connect(await database.create_empty())
    at = datetime(2026, 1, 1, 12, 0, 0, 123456, tzinfo=timezone.utc)
    try:
        await migrate.migrate(conn, "entitlement", before)
        await conn.execute("SET search_path TO entitlement")
        await db._init_connection(conn)
        old = [_ledger_event("org-a", "u-1", "ai_review", at), _ledger_event("org-b", "u-2", "ai_review", at),
               _ledger_event("org-a", "u-3", "cloud_inspection", at)]
        for e in old:  # as entitlement wrote them before: the outbox row, and the ledger row
            await outbox.add(conn, [e])
            await conn.execute(
                "INSERT INTO ledger (event_id, org_id, resource, type, time, data) VALUES ($1, $2, $3, $4, $5, $6)",
                e.id, e.subject, e.data["resource"], e.type, e.time, json.loads(encode(e))["data"])
        await conn.execute("UPDATE ledger SET seq = seq + 100")  # ledger seqs are not the outbox's
        await conn.execute("SELECT setval('ledger_seq_seq', 103)")
        await outbox.add_rows(conn, [("dead-1", topics.ENTITLEMENT_DLQ, "org-a", b'{"id": "dead-1"}')])
        cursor = await conn.fetchval("SELECT min(seq) FROM ledger WHERE org_id = 'org-a'")  # page 1 of 1

        assert await migrate.migrate(conn, "entitlement", MIGRATIONS) == [
            "service/005_ledger_in_outbox.sql", "service/006_lots_hot_updates.sql"]
        await conn.execute("SET search_path TO entitlement")
        new = [_ledger_event("org-a", "u-4", "ai_review", at), _ledger_event("org-b", "u-5", "cloud_inspection", at)]
        await outbox.add(conn, new)

        page = await store.ledger_page(conn, "org-a", None, 0, 10)
        assert [r.data["usage_id"] for r in page] == ["u-1", "u-3", "u-4"]
        assert page[0].seq == cursor and page[1].seq < page[2].seq
        assert [r.data["usage_id"] for r in await store.ledger_page(conn, "org-a", None, cursor, 10)] == ["u-3", "u-4"]
        assert [r.data["usage_id"] for r in await store.ledger_page(conn, "org-a", "ai_review", 0, 10)] == ["u-1", "u-4"]
        assert [r.data["usage_id"] for r in await store.ledger_page(conn, "org-b", None, 0, 10)] == ["u-2", "u-5"]
        entry = page[2]
        assert (entry.event_id, entry.type, entry.time, entry.resource) == (new[0].id, new[0].type, at, "ai_review")
        assert entry.data == json.loads(encode(new[0]))["data"]

        await conn.execute("UPDATE outbox SET created_at = now() - interval '2 days'")
        await conn.execute("UPDATE outbox_cursor SET sent_upto = (SELECT max(seq) FROM outbox)")
        assert await outbox.purge_sent(conn, 86_400) == 4  # the three old copies and the dead letter
        assert [r.data["usage_id"] for r in await store.ledger_page(conn, "org-a", None, 0, 10)] == ["u-1", "u-3", "u-4"]
        assert [r.data["usage_id"] for r in await store.ledger_page(conn, "org-b", None, 0, 10)] == ["u-2", "u-5"]
    finally:
        await conn.close()


async def test_a_batch_reads_only_the_lots_of_its_own_orgs(database):
    """The drawable lots of a batch's (org, resource) keys are index lookups per key: the plan a
    prepared statement settles on (generic, which sees ten keys in any array) must not read every
    org's active lots and compare each with each key (it did: 1.4 ms a batch of 100 keys with only
    100 lots, issue 13)."""
    conn = await asyncpg.connect(await database.create_empty(), server_settings={"search_path": "entitlement"})
    try:
        await migrate.migrate(conn, "entitlement", MIGRATIONS)
        now = datetime.now(timezone.utc)
        await _add_lots(conn, now, [(f"o-{i}.{r}", f"org-{i}", res) for i in range(1, 301)
                                    for r, res in ((1, "cloud_inspection"), (2, "ai_review"))])
        keys = [("org-7", "cloud_inspection"), ("org-250", "ai_review"), ("org-9999", "ai_review")]
        lots = await store.drawable_lots(conn, keys, now, timedelta(0))
        assert {k: [lot.lot_id for lot in v] for k, v in lots.items()} == {
            ("org-7", "cloud_inspection"): ["o-7.1"], ("org-250", "ai_review"): ["o-250.2"], ("org-9999", "ai_review"): []}
        await conn.execute("SET plan_cache_mode = force_generic_plan")
        await conn.execute(f"PREPARE drawable(text[], text[], timestamptz) AS {store.DRAWABLE_LOTS}")
        orgs, resources = (", ".join(f"'{k[i]}'" for k in keys) for i in (0, 1))  # the test's own values
        plan = json.loads(await conn.fetchval(
            f"EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE drawable(ARRAY[{orgs}], ARRAY[{resources}], now())"))[0]["Plan"]
        read, compared = _lots_read(plan), _compared(plan)
        assert read <= len(keys) and compared == 0, f"{read} lots read and {compared} pairs compared for {len(keys)} keys"
    finally:
        await conn.close()


async def _add_lots(conn: asyncpg.Connection, now: datetime, lots: list[tuple[str, str, str]]) -> None:
    """Active lots of 10, credited now for a year: (lot id, org, resource); the order is the lot
    id's part before its dot, the line the part after."""
    await conn.execute(
        """INSERT INTO lots (lot_id, org_id, resource, order_id, line, sku, quantity, remaining, storage_years,
                             credited_at, expires_at)
           SELECT id, org, res, split_part(id, '.', 1), split_part(id, '.', 2)::int, 'CI-QTY', 10, 10, 1, $4::timestamptz,
                  $4::timestamptz + interval '1 year'
           FROM unnest($1::text[], $2::text[], $3::text[]) AS t(id, org, res)""",
        [x[0] for x in lots], [x[1] for x in lots], [x[2] for x in lots], now)


def _lots_read(node: dict) -> float:
    """Rows of `lots` a plan read: returned or filtered out, over every loop."""
    own = ((node.get("Actual Rows", 0) + node.get("Rows Removed by Filter", 0)) * node.get("Actual Loops", 1)
           if node.get("Relation Name") == "lots" else 0)
    return own + sum(_lots_read(n) for n in node.get("Plans", []))


def _compared(node: dict) -> float:
    return node.get("Rows Removed by Join Filter", 0) + sum(_compared(n) for n in node.get("Plans", []))
