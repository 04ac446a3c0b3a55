"""Migrating from empty gives each schema (PostgreSQL only)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import asyncpg

from contracts.events import DeductionRequestedData, UsageDeductedData, UsageRejectedLedgerData
from services.entitlement.app import MIGRATIONS
from shared import inbox, migrate


async def test_migrations_from_empty_give_the_entitlement_schema_and_rerun_is_noop(database):
    conn = await asyncpg.connect(await database.create_empty())
    try:
        assert await migrate.migrate(conn, "entitlement", MIGRATIONS) == [
            "shared/001_outbox_inbox.sql", "shared/002_outbox_parked.sql", "shared/003_outbox_resolutions.sql",
            "shared/004_outbox_pending.sql", "shared/005_inbox_bytewise_keys.sql",
            "shared/006_outbox_cursor.sql", "service/001_init.sql", "service/002_arrears_per_org.sql",
            "service/003_inbox_usage_keys_per_org.sql", "service/004_ledger_lighter.sql"]
        assert await migrate.migrate(conn, "entitlement", MIGRATIONS) == []
        tables = {r["table_name"] for r in await conn.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'entitlement'")}
        assert tables == {"schema_migrations", "outbox", "outbox_resolutions", "outbox_cursor", "outbox_republish",
                          "outbox_state", "inbox", "balances",
                          "lots", "arrears", "licences",
                          "licence_periods", "services", "fulfilled_orders", "ledger"}
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
        # the ledger keeps one index besides its key, and data as written (issue 13)
        assert await conn.fetchval("SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
                                   "WHERE attrelid = 'entitlement.ledger'::regclass AND attname = 'data'") == "json"
        assert {r["indexname"] for r in await conn.fetch(
            "SELECT indexname FROM pg_indexes WHERE schemaname = 'entitlement' AND tablename = 'ledger'")} == {
            "ledger_pkey", "ledger_by_org"}
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
            "service/003_inbox_usage_keys_per_org.sql", "service/004_ledger_lighter.sql"]
        await conn.execute("SET search_path TO entitlement")

        assert await inbox.claim(conn, "usage", ["org-a:u-1", "org-a:u-2", "org-b:org-a:u-9"]) == set()
        assert await inbox.claim(conn, "usage", ["org-b:u-1", "org-c:u-3"]) == {"org-b:u-1", "org-c:u-3"}
        assert await inbox.claim(conn, "usage", ["u-1", "org-a:u-9"]) == set()  # the old rows stay
    finally:
        await conn.close()
