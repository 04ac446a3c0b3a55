"""Numbered plain-SQL migrations per service schema, applied at start under an advisory lock.

A service keeps `migrations/001_init.sql`, `002_....sql`, ...; each file runs once, in its own
transaction, in order. The shared tables (outbox, inbox) come first as migration 000.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import asyncpg

_NAME = re.compile(r"^(\d{3})_[\w-]+\.sql$")
SHARED_SQL = Path(__file__).with_name("sql")


def migration_files(directory: Path) -> list[tuple[int, Path]]:
    found = []
    for p in sorted(directory.glob("*.sql")):
        m = _NAME.match(p.name)
        if not m:
            raise ValueError(f"migration file name must be NNN_name.sql: {p}")
        found.append((int(m.group(1)), p))
    versions = [v for v, _ in found]
    if len(set(versions)) != len(versions):
        raise ValueError(f"duplicate migration numbers in {directory}")
    return found


def _lock_key(schema: str) -> int:
    return int.from_bytes(hashlib.sha256(f"migrate:{schema}".encode()).digest()[:8], "big", signed=True)


async def migrate(conn: asyncpg.Connection, schema: str, directory: Path) -> list[str]:
    """Apply pending migrations of `directory` (after the shared ones) to `schema`; return what ran."""
    if not re.fullmatch(r"[a-z_][a-z0-9_]*", schema):
        raise ValueError(f"bad schema name {schema!r}")
    applied: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", _lock_key(schema))
    try:
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        await conn.execute(
            f"""CREATE TABLE IF NOT EXISTS {schema}.schema_migrations (
                   source text NOT NULL, version int NOT NULL, name text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (source, version))"""
        )
        for source, folder in (("shared", SHARED_SQL), ("service", directory)):
            done = {
                r["version"]
                for r in await conn.fetch(
                    f"SELECT version FROM {schema}.schema_migrations WHERE source = $1", source
                )
            }
            for version, path in migration_files(folder):
                if version in done:
                    continue
                async with conn.transaction():
                    await conn.execute(f"SET LOCAL search_path TO {schema}, public")
                    await conn.execute(path.read_text())
                    await conn.execute(
                        f"INSERT INTO {schema}.schema_migrations (source, version, name) VALUES ($1, $2, $3)",
                        source, version, path.name,
                    )
                applied.append(f"{source}/{path.name}")
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _lock_key(schema))
    return applied
