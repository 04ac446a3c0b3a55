"""The database deploy/local/postgres.sh runs (`make up`, the tests, `make bench`) checkpoints by
time, not every ~1 GB of WAL (docs/decisions.md, "Checkpoints by time"), and looks for tables to
vacuum every 5 s ("Log tables vacuumed young")."""

from __future__ import annotations

import asyncpg
import pytest

from tests.support.infra import Infra


async def test_the_local_database_checkpoints_by_time(real_infra: Infra) -> None:
    if real_infra.restart_postgres is None:
        pytest.skip("the database is not one deploy/local/postgres.sh started")
    conn = await asyncpg.connect(real_infra.dsn)
    try:
        assert await conn.fetchval("SHOW max_wal_size") == "4GB"
        assert await conn.fetchval("SHOW checkpoint_timeout") == "15min"
        assert await conn.fetchval("SHOW autovacuum_naptime") == "5s"
    finally:
        await conn.close()
