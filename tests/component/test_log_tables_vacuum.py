"""The outbox and the inbox are vacuumed while their young pages are still in shared buffers
(shared/sql/008_log_tables_vacuumed_young.sql; docs/decisions.md, "Log tables vacuumed young"):
after 20,000 new rows whatever their size, not after a fifth of the table."""

from __future__ import annotations

from pathlib import Path

import asyncpg

from shared import migrate
from tests.support.kafka import wait_until

SCHEMA = "log_vacuum"
LOG_TABLES = ("outbox", "inbox")


async def _migrated(database) -> asyncpg.Connection:  # type: ignore[no-untyped-def]
    conn = await asyncpg.connect(await database.create_empty(), server_settings={"search_path": SCHEMA})
    await migrate.migrate(conn, SCHEMA, Path("/nonexistent"))  # the shared migrations only
    return conn


async def _fill(conn: asyncpg.Connection, first: int, last: int) -> None:
    await conn.execute("""INSERT INTO outbox (seq, event_id, topic, key, payload)
                          SELECT i, 'e' || i, 'aimis.ledger.v1', 'org-' || i % 50, '{}'::bytea
                            FROM generate_series($1::bigint, $2::bigint) i""", first, last)
    await conn.execute("INSERT INTO inbox (stream, message_id) SELECT 's', 'm' || i FROM generate_series($1::bigint, $2::bigint) i",
                       first, last)


async def test_a_large_log_table_is_vacuumed_after_its_next_20000_rows(database) -> None:  # type: ignore[no-untyped-def]
    conn = await _migrated(database)
    try:
        # 400,000 rows, counted by a vacuum: PostgreSQL's default would wait for 81,000 more
        await _fill(conn, 1, 400_000)
        for table in LOG_TABLES:
            await conn.execute(f"VACUUM ANALYZE {table}")
        naptime = await conn.fetchval("SELECT setting::int FROM pg_settings WHERE name = 'autovacuum_naptime'")

        async def autovacuums() -> dict[str, int]:
            await conn.execute("SELECT pg_stat_clear_snapshot()")
            rows = await conn.fetch("SELECT relname, autovacuum_count FROM pg_stat_user_tables"
                                    " WHERE schemaname = $1 AND relname = ANY($2::text[])", SCHEMA, list(LOG_TABLES))
            return {r["relname"]: r["autovacuum_count"] for r in rows}

        assert await autovacuums() == dict.fromkeys(LOG_TABLES, 0)
        await _fill(conn, 400_001, 425_000)
        vacuumed = await wait_until(lambda: _all_vacuumed(autovacuums), timeout=3 * naptime + 30, interval=0.5)
        assert set(vacuumed) == set(LOG_TABLES)
    finally:
        await conn.close()


async def _all_vacuumed(autovacuums) -> dict[str, int] | None:  # type: ignore[no-untyped-def]
    counts = await autovacuums()
    return counts if counts and all(counts.get(t, 0) > 0 for t in LOG_TABLES) else None


async def test_every_column_of_the_log_tables_is_sampled_small(database) -> None:  # type: ignore[no-untyped-def]
    """ANALYZE samples 300 rows per unit of the largest statistics target of a table's columns: one
    column left at the default (100) makes it read 30,000 rows from all over the table again."""
    conn = await _migrated(database)
    try:
        rows = await conn.fetch("""SELECT c.relname, a.attname, a.attstattarget FROM pg_attribute a
                                     JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
                                    WHERE n.nspname = $1 AND c.relname = ANY($2::text[]) AND a.attnum > 0
                                      AND NOT a.attisdropped""", SCHEMA, list(LOG_TABLES))
        assert {r["relname"] for r in rows} == set(LOG_TABLES)
        assert {(r["relname"], r["attname"]): r["attstattarget"] for r in rows if r["attstattarget"] != 10} == {}
    finally:
        await conn.close()

