"""Balances of the largest organisations on /metrics, for the operations dashboard.

Every `every_s` the entitlement service publishes, for the TOP_N organisations with the most
purchased of each resource, `aimis_org_balance{org_id, resource, field}` with field one of
purchased, available, used, arrears, forfeited (the account view's numbers, SPEC 2.2). Only the
top N get series, so the metric's cardinality stays bounded however many organisations there are.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import asyncpg
from prometheus_client import Gauge

log = logging.getLogger(__name__)

TOP_N = 10
FIELDS = ("purchased", "available", "used", "arrears", "forfeited")

ORG_BALANCE = Gauge(
    "aimis_org_balance",
    f"Balances of the {TOP_N} organisations with the most purchased, per resource",
    ["org_id", "resource", "field"],
)

_TOP = """
WITH ranked AS (
    SELECT org_id, resource, purchased, forfeited,
           drawn_by_usage + arrears_recorded AS used,
           arrears_recorded - arrears_offset AS arrears,
           row_number() OVER (PARTITION BY resource ORDER BY purchased DESC, org_id) AS rank
    FROM balances
)
SELECT r.org_id, r.resource, r.purchased, r.used, r.arrears, r.forfeited,
       coalesce((SELECT sum(l.remaining) FROM lots l
                 WHERE l.org_id = r.org_id AND l.resource = r.resource AND l.status = 'active'), 0)
           AS available
FROM ranked r WHERE r.rank <= $1
"""


async def refresh(pool: asyncpg.Pool, top_n: int = TOP_N) -> int:
    """Replace the gauge's series by the current top `top_n` per resource; return the rows set."""
    async with pool.acquire() as conn:
        rows = await conn.fetch(_TOP, top_n)
    ORG_BALANCE.clear()
    for r in rows:
        for field in FIELDS:
            ORG_BALANCE.labels(r["org_id"], r["resource"], field).set(int(r[field]))
    return len(rows)


async def watch(get_pool: Callable[[], asyncpg.Pool], every_s: float = 60.0) -> None:
    """`refresh` every `every_s` until cancelled; a failure (database down) keeps the last values."""
    while True:
        try:
            await refresh(get_pool())
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - the dashboard feed never stops the service
            log.warning("top balances refresh failed: %r", e)
        await asyncio.sleep(every_s)
