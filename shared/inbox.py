"""Inbox guard: processed message ids, inserted in the same transaction as their effect."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import asyncpg

from shared import packed


async def claim(conn: asyncpg.Connection, stream: str, message_ids: Sequence[str]) -> set[str]:
    """Record `message_ids` as processed on `stream`; return the ones not seen before.

    Call inside the effect's transaction: if it rolls back, the claim goes with it. Ids repeated
    within `message_ids` are claimed once; the caller processes the first occurrence only.

    Optimistic (issue 13): a batch's ids are new as a rule, so they are inserted plainly first,
    under a savepoint; only when one of them is already there (a unique violation) is the insert
    undone and made again with `ON CONFLICT DO NOTHING`, which reports the new ones. The
    conflict-handling insert costs PostgreSQL ~1.5 times the plain one a row (a speculative
    insertion: an extra index probe, a lock and a WAL record per row; docs/benchmarks.md), on
    two claims a use. A key a concurrent transaction holds makes either insert wait for it, so
    the outcome is the same as the conflict-handling insert's alone.
    """
    return await (await sent(conn, stream, message_ids))


async def sent(conn: asyncpg.Connection, stream: str, message_ids: Sequence[str]) -> asyncio.Future[set[str]]:
    """`claim`, returning once its insert is on its way to PostgreSQL: the future answers it. The
    caller may compute meanwhile (the savepoint's round trip is behind it already), and awaits the
    future before the connection's next statement."""
    if not message_ids:
        done: asyncio.Future[set[str]] = asyncio.get_running_loop().create_future()
        done.set_result(set())
        return done
    unique = list(dict.fromkeys(message_ids))
    keys = packed.texts(unique)  # one text (shared/packed.py), else the array
    rows = packed.split("$2::text") if keys is not None else "$2::text[]"
    arg = unique if keys is None else keys
    savepoint = conn.is_in_transaction()
    if savepoint:
        await conn.execute("SAVEPOINT inbox_claim")
    answer = asyncio.ensure_future(_insert(conn, stream, unique, rows, arg, savepoint))
    await asyncio.sleep(0)  # the insert is written (prepared after its first use: no round trip before it)
    return answer


async def _insert(conn: asyncpg.Connection, stream: str, unique: list[str], rows: str, arg: str | list[str],
                  savepoint: bool) -> set[str]:
    try:
        await conn.execute(_INSERT.format(keys=rows), stream, arg)
        return set(unique)
    except asyncpg.UniqueViolationError:
        if savepoint:
            await conn.execute("ROLLBACK TO SAVEPOINT inbox_claim")
    new = await conn.fetchval(_CLAIM.format(keys=rows), stream, arg, len(unique))
    return set(unique) if new is None else set(new)


_INSERT = "INSERT INTO inbox (stream, message_id) SELECT $1, id FROM unnest({keys}) AS t(id)"
# Some were claimed before. When none was after all (its claimer rolled back), one NULL comes back
# instead of every key as a row.
_CLAIM = """WITH ins AS (INSERT INTO inbox (stream, message_id)
                         SELECT $1, id FROM unnest({keys}) AS t(id)
                         ON CONFLICT DO NOTHING RETURNING message_id)
            SELECT CASE WHEN count(*) = $3 THEN NULL ELSE coalesce(array_agg(message_id), '{{}}') END FROM ins"""


async def claim_one(conn: asyncpg.Connection, stream: str, message_id: str) -> bool:
    return bool(await claim(conn, stream, [message_id]))
