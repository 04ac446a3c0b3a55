"""Releasing a pooled connection costs no round trip (shared/db.py, issue 13): the server's last
statement on it stays the caller's own, and an abandoned transaction is still rolled back."""

from __future__ import annotations

import asyncpg

from shared import db


async def test_a_released_connection_sends_nothing_more_and_ends_an_open_transaction(database):
    dsn = await database.create_empty()
    pool = await db.create_pool(dsn, "public", min_size=1, max_size=1)
    watcher = await asyncpg.connect(dsn)
    try:
        async with pool.acquire() as conn:
            pid = await conn.fetchval("SELECT pg_backend_pid()")
            await conn.execute("CREATE TABLE t (x int)")
        # asyncpg's default release would have sent its reset query last
        assert await watcher.fetchval("SELECT query FROM pg_stat_activity WHERE pid = $1", pid) == \
            "CREATE TABLE t (x int)"

        conn = await pool.acquire()
        tx = conn.transaction()
        await tx.start()
        await conn.execute("INSERT INTO t VALUES (1)")
        await pool.release(conn)  # without commit: rolled back, not left open on the next user
        async with pool.acquire() as again:
            assert await again.fetchval("SELECT pg_backend_pid()") == pid
            assert await again.fetchval("SELECT count(*) FROM t") == 0
            assert not again.is_in_transaction()
    finally:
        await watcher.close()
        await pool.close()
