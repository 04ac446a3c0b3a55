"""Metering SQL: known organisations and hourly usage aggregates. Set-based per batch."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any, TypeAlias

import asyncpg

Conn: TypeAlias = asyncpg.Connection | asyncpg.Pool


async def known_orgs(conn: Conn, org_ids: set[str]) -> set[str]:
    """The subset of `org_ids` whose agreement was recorded."""
    if not org_ids:
        return set()
    rows = await conn.fetch(
        "SELECT org_id FROM known_orgs WHERE org_id = ANY($1::text[])", list(org_ids)
    )
    return {r["org_id"] for r in rows}


async def add_known_orgs(conn: Conn, orgs: Sequence[tuple[str, datetime]]) -> None:
    """Record organisations with an agreement (idempotent: the first recording wins)."""
    if not orgs:
        return
    await conn.execute(
        """INSERT INTO known_orgs (org_id, recorded_at)
           SELECT DISTINCT ON (org_id) org_id, recorded_at
             FROM unnest($1::text[], $2::timestamptz[]) AS t(org_id, recorded_at)
            ORDER BY org_id, recorded_at
           ON CONFLICT (org_id) DO NOTHING""",
        [o for o, _ in orgs],
        [at for _, at in orgs],
    )


async def add_hourly(
    conn: Conn,
    org_ids: Sequence[str],
    resources: Sequence[str],
    hours: Sequence[datetime],
    accepted: Sequence[int],
    rejected: Sequence[int],
) -> None:
    """Add one batch's quantities to the hourly aggregates: one statement for the whole batch, with
    a row per (org, resource, hour) rather than per use (`per_hour`)."""
    if not org_ids:
        return
    org_ids, resources, hours, accepted, rejected = per_hour(org_ids, resources, hours, accepted, rejected)
    await conn.execute(
        """INSERT INTO usage_hourly AS u (org_id, resource, hour, accepted_qty, rejected_qty)
           SELECT org_id, resource, date_trunc('hour', at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC',
                  sum(acc), sum(rej)
             FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::bigint[], $5::bigint[])
                  AS t(org_id, resource, at, acc, rej)
            GROUP BY 1, 2, 3
            ORDER BY 1, 2, 3
           ON CONFLICT (org_id, resource, hour) DO UPDATE
              SET accepted_qty = u.accepted_qty + EXCLUDED.accepted_qty,
                  rejected_qty = u.rejected_qty + EXCLUDED.rejected_qty""",
        list(org_ids), list(resources), list(hours), list(accepted), list(rejected),
    )


def per_hour(org_ids: Sequence[str], resources: Sequence[str], times: Sequence[datetime], accepted: Sequence[int],
             rejected: Sequence[int]) -> tuple[list[str], list[str], list[datetime], list[int], list[int]]:
    """The quantities summed per (org, resource, UTC hour of the time): a batch of uses comes to a
    few rows (the orgs it has), so few values cross to PostgreSQL. The hour is the one
    `date_trunc('hour', at AT TIME ZONE 'UTC')` gives (tests/unit/test_metering_store.py)."""
    sums: dict[tuple[str, str, int], list[int]] = {}
    for org, resource, at, acc, rej in zip(org_ids, resources, times, accepted, rejected, strict=True):
        # the UTC hour as a number (epoch hours): half the cost of truncating the datetime, and a key
        # that hashes without asking the time zone again (a naive time counts as local, as before)
        k = (org, resource, math.floor(at.timestamp()) // 3600)
        t = sums.get(k)
        if t is None:
            sums[k] = [acc, rej]
        else:
            t[0] += acc
            t[1] += rej
    hours = [datetime.fromtimestamp(k[2] * 3600, timezone.utc) for k in sums]
    totals = list(sums.values())
    return [k[0] for k in sums], [k[1] for k in sums], hours, [t[0] for t in totals], [t[1] for t in totals]


async def usage_report(
    conn: Conn,
    org_id: str,
    *,
    resource: str | None,
    start: datetime | None,
    end: datetime | None,
    granularity: str,
) -> list[dict[str, Any]]:
    """Buckets (UTC hour/day/month) with data for the org, from the hour containing `start` to `end`."""
    if granularity not in ("hour", "day", "month"):
        raise ValueError(f"bad granularity {granularity!r}")
    rows = await conn.fetch(
        """SELECT date_trunc($2, hour AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS start, resource,
                  sum(accepted_qty)::bigint AS accepted, sum(rejected_qty)::bigint AS rejected
             FROM usage_hourly
            WHERE org_id = $1
              AND ($3::text IS NULL OR resource = $3)
              AND ($4::timestamptz IS NULL OR hour >= date_trunc('hour', $4 AT TIME ZONE 'UTC') AT TIME ZONE 'UTC')
              AND ($5::timestamptz IS NULL OR hour < $5)
            GROUP BY 1, 2
            ORDER BY 1, 2""",
        org_id, granularity, resource, start, end,
    )
    return [dict(r) for r in rows]
