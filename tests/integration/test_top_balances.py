"""The dashboard's "largest organisations" feed (services/entitlement/top_balances.py) on the real
database: the top N per resource by purchased, with the account view's numbers, and nobody else."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from prometheus_client import REGISTRY

from services.entitlement import top_balances
from services.entitlement.app import MIGRATIONS
from shared import db
from shared.migrate import migrate

pytestmark = pytest.mark.integration

T = datetime(2026, 11, 1, tzinfo=timezone.utc)


def series() -> dict[tuple[str, str, str], float]:
    return {
        (s.labels["org_id"], s.labels["resource"], s.labels["field"]): s.value
        for f in REGISTRY.collect() if f.name == "aimis_org_balance" for s in f.samples
    }


async def test_the_largest_orgs_per_resource_are_exported_with_their_account_numbers(fresh_db: str) -> None:
    pool = await db.create_pool(fresh_db, "entitlement")
    try:
        async with pool.acquire() as conn:
            await migrate(conn, "entitlement", MIGRATIONS)
            # org-00 .. org-03 buy 1000 * (i + 1) inspections; org-02 also buys AI reviews
            for i in range(4):
                await conn.execute(
                    """INSERT INTO balances (org_id, resource, purchased, drawn_by_usage, arrears_recorded,
                                             arrears_offset, forfeited) VALUES ($1, 'cloud_inspection', $2, $3, $4, $5, $6)""",
                    f"org-0{i}", 1000 * (i + 1), 100, 30, 10, 5,
                )
                await conn.execute(
                    """INSERT INTO lots (lot_id, org_id, resource, order_id, line, sku, quantity, remaining,
                                         credited_at, expires_at, status)
                       VALUES ($1, $2, 'cloud_inspection', $3, 0, 'CI-QTY', $4, $5, $6, $7, 'active')""",
                    f"o{i}.0", f"org-0{i}", f"o{i}", 1000 * (i + 1), 1000 * (i + 1) - 115, T, T + timedelta(days=365),
                )
            # an expired lot's remainder is no longer available
            await conn.execute(
                """INSERT INTO lots (lot_id, org_id, resource, order_id, line, sku, quantity, remaining,
                                     credited_at, expires_at, status)
                   VALUES ('old.0', 'org-03', 'cloud_inspection', 'old', 0, 'CI-QTY', 1000, 7, $1, $1, 'expired')""",
                T - timedelta(days=400),
            )
            await conn.execute(
                "INSERT INTO balances (org_id, resource, purchased) VALUES ('org-02', 'ai_review', 2000)"
            )

        assert await top_balances.refresh(pool, top_n=2) == 3
        got = series()
        assert {(o, r) for o, r, _ in got} == {
            ("org-03", "cloud_inspection"), ("org-02", "cloud_inspection"), ("org-02", "ai_review"),
        }
        assert {f: got[("org-03", "cloud_inspection", f)] for f in top_balances.FIELDS} == {
            "purchased": 4000, "available": 3885, "used": 130, "arrears": 20, "forfeited": 5,
        }
        assert got[("org-02", "ai_review", "available")] == 0

        # a bigger buyer arrives: the smallest of the two leaves the metric
        async with pool.acquire() as conn:
            await conn.execute("INSERT INTO balances (org_id, resource, purchased) VALUES ('org-99', 'cloud_inspection', 9000)")
        await top_balances.refresh(pool, top_n=2)
        assert {o for o, r, _ in series() if r == "cloud_inspection"} == {"org-99", "org-03"}
    finally:
        await pool.close()
