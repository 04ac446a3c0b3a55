"""The sweep's claim of due items against PostgreSQL only (moved from tests/integration/test_expiry.py)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import asyncpg

from services.expiry import domain, store
from services.expiry.app import MIGRATIONS
from shared import migrate

DAY = timedelta(days=1)


async def test_claim_due_skips_rows_another_sweeper_holds(database):
    fresh_db, org_id = await database.create_empty(), "org-a"
    setup = await asyncpg.connect(fresh_db, server_settings={"search_path": "expiry"})
    one = await asyncpg.connect(fresh_db, server_settings={"search_path": "expiry"})
    two = await asyncpg.connect(fresh_db, server_settings={"search_path": "expiry"})
    try:
        await migrate.migrate(setup, "expiry", MIGRATIONS)
        now = datetime.now(timezone.utc)
        items = [
            domain.Item("lot", f"l{n}", org_id, now - DAY, now - timedelta(seconds=n), quantity=1, remaining=1)
            for n in range(10)
        ]
        await store.save(setup, items, now)
        never = now - 365 * DAY
        tx1 = one.transaction()
        await tx1.start()
        first = await store.claim_due(one, now, never, 4)
        assert len(first) == 4
        second = await store.claim_due(two, now, never, 100)  # autocommit; does not wait for `one`
        assert {i.ref_id for i in first}.isdisjoint({i.ref_id for i in second})
        assert len(second) == 6
        await tx1.commit()
        assert await store.claim_due(two, now, never, 100) == []
        assert await setup.fetchval("SELECT sum(command_count) FROM deadlines") == 10
    finally:
        for c in (setup, one, two):
            await c.close()
