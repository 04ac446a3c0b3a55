"""A scratch database on a real PostgreSQL server, for one test session or stack."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator

import asyncpg


@contextlib.asynccontextmanager
async def scratch_database(server_dsn: str, prefix: str) -> AsyncIterator[str]:
    """Create a new empty database on the server of `server_dsn`; yield its DSN; drop it after."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(server_dsn)
    await conn.execute(f"CREATE DATABASE {name}")
    await conn.close()
    try:
        yield server_dsn.rsplit("/", 1)[0] + "/" + name
    finally:
        conn = await asyncpg.connect(server_dsn)  # a fresh one: the server may have restarted
        await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await conn.close()
