"""Batch statements bind their text columns packed into one text (shared/packed.py) when the values
allow it, and as arrays when not: either way PostgreSQL stores exactly the values given."""

from __future__ import annotations

from pathlib import Path

import asyncpg

from shared import inbox, migrate, outbox

AWKWARD = ["k\x1fwith-separator", "é-non-ascii", ""]  # what does not pack, or packs only beside others


async def _schema(database) -> asyncpg.Connection:  # type: ignore[no-untyped-def]
    conn = await asyncpg.connect(await database.create_empty())
    await migrate.migrate(conn, "packed", Path("/nonexistent"))
    await conn.execute("SET search_path TO packed")
    return conn


async def test_outbox_rows_are_stored_as_given_packed_or_not(database):
    conn = await _schema(database)
    try:
        batches = [
            [("e-1", "t", "org-1", b'{"a":1}'), ("e-2", "t", "org-2", b'{"b":"x"}')],  # packs
            [("e-3", "t", "org-\x1f", b'{"c":1}'), ("e-4", "t", "org-4", b"{}")],  # a key that does not
            [("e-5", "t", "org-5", '{"d":"é"}'.encode()), ("e-6", "t", "org-6", b"\x1f\x00\xff")],  # payloads
            [("e-7", "t", "", b"")],  # one empty value: string_to_array would read no element
            [("e-8", "t", "", b'{"e":1}'), ("e-9", "", "org-9", b"")],  # empty values beside others pack
        ]
        for rows in batches:
            async with conn.transaction():
                await outbox.add_rows(conn, rows)
        stored = await conn.fetch("SELECT event_id, topic, key, payload FROM outbox ORDER BY seq")
        assert [tuple(r) for r in stored] == [row for rows in batches for row in rows]
    finally:
        await conn.close()


async def test_inbox_keys_are_claimed_as_given_packed_or_not(database):
    conn = await _schema(database)
    try:
        assert await inbox.claim(conn, "s", ["a", "b"]) == {"a", "b"}
        assert await inbox.claim(conn, "s", AWKWARD + ["a"]) == set(AWKWARD)
        assert await inbox.claim(conn, "s", [""]) == set()  # a lone empty key, the array way: a repeat
        assert await inbox.claim(conn, "s", ["k\x1fwith-separator", "c"]) == {"c"}
        keys = await conn.fetch("SELECT message_id FROM inbox ORDER BY message_id")
        assert [r["message_id"] for r in keys] == sorted(["a", "b", "c", *AWKWARD])
    finally:
        await conn.close()
