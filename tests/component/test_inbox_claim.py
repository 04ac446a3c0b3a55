"""The inbox claim answers which keys are new: all of them (the usual batch, answered without
returning them), some (repeats of earlier batches or within the batch) or none."""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from pathlib import Path

import asyncpg

from shared import inbox, migrate
from tests.support.kafka import wait_until


async def test_claims_answer_exactly_the_keys_not_seen_before(database):
    conn = await asyncpg.connect(await _claims_schema(database), server_settings={"search_path": "claims"})
    try:
        assert await inbox.claim(conn, "s", ["a", "b"]) == {"a", "b"}
        assert await inbox.claim(conn, "s", ["b", "c", "c", "d", "a"]) == {"c", "d"}
        assert await inbox.claim(conn, "s", ["d", "c"]) == set()
        assert await inbox.claim(conn, "other", ["a", "a"]) == {"a"}  # streams are apart
        assert await inbox.claim(conn, "s", []) == set()
        assert await conn.fetchval("SELECT count(*) FROM inbox") == 5
    finally:
        await conn.close()


async def _claims_schema(database) -> str:
    dsn = await database.create_empty()
    conn = await asyncpg.connect(dsn)
    try:
        await migrate.migrate(conn, "claims", Path("/nonexistent"))
    finally:
        await conn.close()
    return dsn


async def test_a_repeat_inside_a_transaction_keeps_what_the_transaction_did_before(database):
    """The plain insert fails on the repeat; only it is undone (savepoint), not the effect
    written before the claim, and the transaction goes on to commit."""
    dsn = await _claims_schema(database)
    conn = await asyncpg.connect(dsn, server_settings={"search_path": "claims"})
    try:
        assert await inbox.claim(conn, "s", ["a"]) == {"a"}
        async with conn.transaction():
            await conn.execute("CREATE TABLE effect (x int)")
            await conn.execute("INSERT INTO effect VALUES (1)")
            assert await inbox.claim(conn, "s", ["b", "a", "c"]) == {"b", "c"}
            assert await inbox.claim(conn, "s", ["d"]) == {"d"}  # the transaction is usable
            await conn.execute("INSERT INTO effect VALUES (2)")
        assert await conn.fetchval("SELECT array_agg(x ORDER BY x) FROM effect") == [1, 2]
        assert await conn.fetchval("SELECT array_agg(message_id ORDER BY message_id) FROM inbox") == \
            ["a", "b", "c", "d"]
    finally:
        await conn.close()


async def test_a_key_claimed_by_a_transaction_in_flight_is_new_only_if_that_one_rolls_back(database):
    """Two transactions claim the same key: the second waits for the first; it gets the key
    when the first rolled back, not when it committed."""
    dsn = await _claims_schema(database)
    first = await asyncpg.connect(dsn, server_settings={"search_path": "claims"})
    second = await asyncpg.connect(dsn, server_settings={"search_path": "claims"})
    try:
        for outcome, key, other, expected in (("ROLLBACK", "k1", "x1", {"k1", "x1"}), ("COMMIT", "k2", "x2", {"x2"})):
            await first.execute("BEGIN")
            assert await inbox.claim(first, "s", [key]) == {key}
            tx = second.transaction()
            await tx.start()
            waiting = asyncio.ensure_future(inbox.claim(second, "s", [key, other]))
            await wait_until(lambda: blocked(first), 30)
            assert not waiting.done()
            await first.execute(outcome)
            assert await asyncio.wait_for(waiting, 30) == expected
            await tx.commit()
    finally:
        await first.close()
        await second.close()


async def blocked(conn: asyncpg.Connection) -> bool:
    """Some session waits for a lock the session of `conn` holds."""
    return bool(await conn.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))", conn.get_server_pid()))


async def test_a_sent_claim_is_at_postgresql_before_its_caller_yields(database):
    """`inbox.sent` returns with the insert written (claim="overlap" computes meanwhile without
    yielding): PostgreSQL runs it while this event loop is blocked. Seen from a thread with its own
    loop and connection: the claim's session is inside its insert (here waiting for the key another
    transaction holds), not idle in its transaction."""
    dsn = await _claims_schema(database)
    holder = await asyncpg.connect(dsn, server_settings={"search_path": "claims"})
    claimer = await asyncpg.connect(dsn, server_settings={"search_path": "claims"})
    try:
        await holder.execute("BEGIN")
        await inbox.claim(holder, "s", ["k"])
        tx = claimer.transaction()
        await tx.start()
        answer = await inbox.sent(claimer, "s", ["k", "new"])
        pid = claimer.get_server_pid()

        async def state_seen() -> str | None:
            watcher = await asyncpg.connect(dsn)
            try:
                deadline = time.monotonic() + 20
                while time.monotonic() < deadline:
                    row = await watcher.fetchrow("SELECT state, query FROM pg_stat_activity WHERE pid = $1", pid)
                    if row["state"] == "active" and row["query"].startswith("INSERT INTO inbox"):
                        return "inserting"
                    await asyncio.sleep(0.05)
                return f"{row['state']}: {row['query'][:60]}"
            finally:
                await watcher.close()

        with concurrent.futures.ThreadPoolExecutor(1) as pool:  # this loop is blocked meanwhile
            seen = pool.submit(asyncio.run, state_seen()).result(timeout=60)
        assert seen == "inserting"
        await holder.execute("COMMIT")
        assert await answer == {"new"}
        await tx.commit()
    finally:
        await holder.close()
        await claimer.close()
