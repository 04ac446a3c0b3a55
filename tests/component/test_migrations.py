"""Migrating from empty gives each schema (PostgreSQL only)."""

from __future__ import annotations

import asyncpg

from services.entitlement.app import MIGRATIONS
from shared import migrate


async def test_migrations_from_empty_give_the_entitlement_schema_and_rerun_is_noop(database):
    conn = await asyncpg.connect(await database.create_empty())
    try:
        assert await migrate.migrate(conn, "entitlement", MIGRATIONS) == [
            "shared/001_outbox_inbox.sql", "shared/002_outbox_parked.sql", "shared/003_outbox_pending.sql",
            "service/001_init.sql", "service/002_arrears_per_org.sql", "service/003_ledger_lighter.sql"]
        assert await migrate.migrate(conn, "entitlement", MIGRATIONS) == []
        tables = {r["table_name"] for r in await conn.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'entitlement'")}
        assert tables == {"schema_migrations", "outbox", "outbox_pending", "inbox", "balances", "lots", "arrears", "licences",
                          "licence_periods", "services", "fulfilled_orders", "ledger"}
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
