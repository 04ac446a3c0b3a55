"""The expiry service's SQL (schema `expiry`): deadlines and reminders. Set-based per batch.

Every time comes from the caller (the injected clock), never from the database's now().
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import asyncpg

from services.expiry.domain import Item, Key

_COLUMNS = "kind, ref_id, org_id, expires_at, due_at, quantity, remaining, commanded_at, command_count, closed_at"


def _item(row: asyncpg.Record) -> Item:
    return Item(
        kind=row["kind"], ref_id=row["ref_id"], org_id=row["org_id"], expires_at=row["expires_at"],
        due_at=row["due_at"], quantity=row["quantity"], remaining=row["remaining"],
        commanded_at=row["commanded_at"], command_count=row["command_count"], closed_at=row["closed_at"],
    )


async def load_for_update(conn: asyncpg.Connection, keys: Sequence[Key]) -> dict[Key, Item]:
    """The items (open or closed) with these keys, locked until the transaction ends."""
    if not keys:
        return {}
    keys = list(dict.fromkeys(keys))
    rows = await conn.fetch(
        f"""SELECT {_COLUMNS} FROM deadlines
            WHERE (kind, ref_id) IN (SELECT * FROM unnest($1::text[], $2::text[]))
            ORDER BY kind, ref_id
            FOR UPDATE""",
        [k for k, _ in keys], [r for _, r in keys],
    )
    return {(r["kind"], r["ref_id"]): _item(r) for r in rows}


async def save(conn: asyncpg.Connection, items: Sequence[Item], now: datetime) -> None:
    """Write the full state of `items` (loaded and locked in this transaction, or new)."""
    if not items:
        return
    await conn.execute(
        f"""INSERT INTO deadlines ({_COLUMNS}, updated_at)
            SELECT k, r, o, e, d, q, rem, c, n, cl, $11
            FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::timestamptz[],
                        $6::int[], $7::int[], $8::timestamptz[], $9::int[], $10::timestamptz[])
                 AS t(k, r, o, e, d, q, rem, c, n, cl)
            ON CONFLICT (kind, ref_id) DO UPDATE SET
                org_id = EXCLUDED.org_id, expires_at = EXCLUDED.expires_at, due_at = EXCLUDED.due_at,
                quantity = EXCLUDED.quantity, remaining = EXCLUDED.remaining,
                commanded_at = EXCLUDED.commanded_at, command_count = EXCLUDED.command_count,
                closed_at = EXCLUDED.closed_at, updated_at = EXCLUDED.updated_at""",
        [i.kind for i in items], [i.ref_id for i in items], [i.org_id for i in items],
        [i.expires_at for i in items], [i.due_at for i in items], [i.quantity for i in items],
        [i.remaining for i in items], [i.commanded_at for i in items], [i.command_count for i in items],
        [i.closed_at for i in items], now,
    )


async def claim_due(
    conn: asyncpg.Connection, now: datetime, commanded_before: datetime, limit: int
) -> list[Item]:
    """Mark up to `limit` due items commanded and return them (domain.is_due, in SQL).

    Rows another sweeper holds are skipped, not waited for; a row it committed in the meantime
    is re-checked against the WHERE clause and no longer matches. Call inside the transaction
    that also writes the commands to the outbox.
    """
    rows = await conn.fetch(
        f"""WITH due AS (
                SELECT kind, ref_id FROM deadlines
                WHERE closed_at IS NULL AND due_at <= $1
                  AND (commanded_at IS NULL OR commanded_at <= $2)
                ORDER BY due_at
                LIMIT $3
                FOR UPDATE SKIP LOCKED)
            UPDATE deadlines d
               SET commanded_at = $1, command_count = d.command_count + 1, updated_at = $1
              FROM due
             WHERE d.kind = due.kind AND d.ref_id = due.ref_id
            RETURNING {', '.join('d.' + c.strip() for c in _COLUMNS.split(','))}""",
        now, commanded_before, limit,
    )
    return [_item(r) for r in rows]


async def reminder_candidates(
    conn: asyncpg.Connection, now: datetime, thresholds: Sequence[int], limit: int
) -> list[tuple[Item, list[int]]]:
    """Open items with at least one passed threshold not yet decided, with the decided ones."""
    if not thresholds:
        return []
    rows = await conn.fetch(
        f"""SELECT {', '.join('d.' + c.strip() for c in _COLUMNS.split(','))},
                   coalesce(array_agg(r.days_before) FILTER (WHERE r.days_before IS NOT NULL), '{{}}') AS decided
            FROM deadlines d
            LEFT JOIN reminders r
                   ON r.kind = d.kind AND r.ref_id = d.ref_id AND r.expires_at = d.expires_at
            WHERE d.closed_at IS NULL
              AND d.expires_at <= $1::timestamptz + make_interval(days => $3::int)
              AND EXISTS (
                  SELECT 1 FROM unnest($2::int[]) AS t(days)
                  WHERE d.expires_at - make_interval(days => t.days) <= $1::timestamptz
                    AND NOT EXISTS (
                        SELECT 1 FROM reminders x
                        WHERE x.kind = d.kind AND x.ref_id = d.ref_id
                          AND x.expires_at = d.expires_at AND x.days_before = t.days))
            GROUP BY d.kind, d.ref_id
            ORDER BY d.expires_at
            LIMIT $4""",
        now, list(thresholds), max(thresholds), limit,
    )
    return [(_item(r), list(r["decided"])) for r in rows]


async def record_reminders(
    conn: asyncpg.Connection, rows: Sequence[tuple[str, str, datetime, int, str]], now: datetime
) -> set[tuple[str, str, int]]:
    """Record (kind, ref_id, expires_at, days_before, status) decisions; return (kind, ref_id,
    days_before) of the 'sent' ones this call inserted (a concurrent sweeper's are not returned)."""
    if not rows:
        return set()
    got = await conn.fetch(
        """INSERT INTO reminders (kind, ref_id, expires_at, days_before, status, decided_at)
           SELECT k, r, e, d, s, $6
           FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::int[], $5::text[]) AS t(k, r, e, d, s)
           ON CONFLICT DO NOTHING
           RETURNING kind, ref_id, days_before, status""",
        [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows], [r[3] for r in rows],
        [r[4] for r in rows], now,
    )
    return {(g["kind"], g["ref_id"], g["days_before"]) for g in got if g["status"] == "sent"}


async def schedule(conn: asyncpg.Connection | asyncpg.Pool, org_id: str) -> list[Item]:
    rows = await conn.fetch(
        f"""SELECT {_COLUMNS} FROM deadlines
            WHERE org_id = $1 AND closed_at IS NULL
            ORDER BY due_at, kind, ref_id""",
        org_id,
    )
    return [_item(r) for r in rows]


async def reminders_of(conn: asyncpg.Connection | asyncpg.Pool, kind: str, ref_id: str) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT expires_at, days_before, status FROM reminders WHERE kind = $1 AND ref_id = $2"
        " ORDER BY days_before DESC",
        kind, ref_id,
    )
