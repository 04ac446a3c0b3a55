"""asyncpg pool lifecycle. Each service owns one schema and sets it as its search_path."""

from __future__ import annotations

import asyncio
import json
import logging

import asyncpg

log = logging.getLogger(__name__)
CONNECT_TIMEOUT_S = 3.0
# A transaction that writes the outbox holds the schema's append lock to commit (shared/outbox.py): a
# client that vanished mid-transaction (a frozen process, a partition its TCP has not noticed) must
# not stop every other writer of the schema. No transaction here waits on anything but PostgreSQL.
IDLE_IN_TRANSACTION = "30s"


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    await conn.set_type_codec("json", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def _release(conn: asyncpg.Connection) -> None:
    """On release asyncpg rolls back an open transaction and drops listeners; by default it then
    also sends `SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL`: a round trip
    on every release, one per consumer batch (1-2 ms under load, issue 13). Pooled connections keep
    no session state to undo: settings are `SET LOCAL` or the connection's own, cursors live in
    transactions, LISTEN is the relay's own connection, and the one session lock (migrations)
    is released where it is taken. So nothing more is sent."""


async def create_pool(
    dsn: str, schema: str, *, min_size: int = 2, max_size: int = 10, wait_s: float = 60.0
) -> asyncpg.Pool:
    """Open a pool whose connections use `schema` first; retry until the server answers."""
    deadline = asyncio.get_running_loop().time() + wait_s
    while True:
        try:
            return await asyncpg.create_pool(
                dsn,
                min_size=min_size,
                max_size=max_size,
                init=_init_connection,
                reset=_release,
                server_settings={"search_path": f"{schema},public", "application_name": f"aimis-{schema}",
                                 "idle_in_transaction_session_timeout": IDLE_IN_TRANSACTION},
                command_timeout=60,
                timeout=CONNECT_TIMEOUT_S,  # a new connection: never wait longer (SPEC 7.5)
            )
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as e:
            if asyncio.get_running_loop().time() > deadline:
                raise
            log.warning("database not reachable yet (%s); retrying", e)
            await asyncio.sleep(1.0)


async def ping(pool: asyncpg.Pool) -> bool:
    try:
        async with pool.acquire(timeout=2) as conn:
            return bool(await conn.fetchval("SELECT 1", timeout=2) == 1)
    except Exception:  # noqa: BLE001 - readiness reports, never raises
        return False
