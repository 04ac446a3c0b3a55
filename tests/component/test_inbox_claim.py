"""The inbox claim answers which keys are new: all of them (the usual batch, answered without
returning them), some (repeats of earlier batches or within the batch) or none."""

from __future__ import annotations

from pathlib import Path

import asyncpg

from shared import inbox, migrate


async def test_claims_answer_exactly_the_keys_not_seen_before(database):
    dsn = await database.create_empty()
    conn = await asyncpg.connect(dsn)
    try:
        await migrate.migrate(conn, "claims", Path("/nonexistent"))
        await conn.execute("SET search_path TO claims")
        assert await inbox.claim(conn, "s", ["a", "b"]) == {"a", "b"}
        assert await inbox.claim(conn, "s", ["b", "c", "c", "d", "a"]) == {"c", "d"}
        assert await inbox.claim(conn, "s", ["d", "c"]) == set()
        assert await inbox.claim(conn, "other", ["a", "a"]) == {"a"}  # streams are apart
        assert await inbox.claim(conn, "s", []) == set()
        assert await conn.fetchval("SELECT count(*) FROM inbox") == 5
    finally:
        await conn.close()
