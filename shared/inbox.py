"""Inbox guard: processed message ids, inserted in the same transaction as their effect."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from shared import packed


async def claim(conn: asyncpg.Connection, stream: str, message_ids: Sequence[str]) -> set[str]:
    """Record `message_ids` as processed on `stream`; return the ones not seen before.

    Call inside the effect's transaction: if it rolls back, the claim goes with it. Ids repeated
    within `message_ids` are claimed once; the caller processes the first occurrence only.
    """
    if not message_ids:
        return set()
    unique = list(dict.fromkeys(message_ids))
    keys = packed.texts(unique)  # one text (shared/packed.py), else the array
    new = await conn.fetchval(_CLAIM.format(keys=packed.split("$2::text") if keys is not None else "$2::text[]"),
                              stream, unique if keys is None else keys, len(unique))
    return set(unique) if new is None else set(new)


# The usual batch has no repeat: then one NULL comes back instead of every key as a row.
_CLAIM = """WITH ins AS (INSERT INTO inbox (stream, message_id)
                         SELECT $1, id FROM unnest({keys}) AS t(id)
                         ON CONFLICT DO NOTHING RETURNING message_id)
            SELECT CASE WHEN count(*) = $3 THEN NULL ELSE coalesce(array_agg(message_id), '{{}}') END FROM ins"""


async def claim_one(conn: asyncpg.Connection, stream: str, message_id: str) -> bool:
    return bool(await claim(conn, stream, [message_id]))
