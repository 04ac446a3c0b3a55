"""The chart's migration Job script (deploy/helm/aimis/files/migrate.py) on a real PostgreSQL: it
creates every service's schema once, and a second run (the next upgrade) changes nothing."""

from __future__ import annotations

import os
import subprocess
import sys

import asyncpg
import pytest

from tests.support.infra import ROOT

pytestmark = pytest.mark.integration

SCRIPT = ROOT / "deploy" / "helm" / "aimis" / "files" / "migrate.py"
SCHEMAS = {"order": "ordering", "entitlement": "entitlement", "metering": "metering", "expiry": "expiry"}


def run(dsn: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "AIMIS_DATABASE_URL": dsn, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, str(SCRIPT), *SCHEMAS], capture_output=True, text=True,
                          env=env, cwd="/", timeout=120)


async def test_the_job_migrates_every_service_schema_once(fresh_db: str) -> None:
    first = run(fresh_db)
    assert first.returncode == 0, first.stderr
    for service, schema in SCHEMAS.items():
        assert f"{service}: schema {schema}: " in first.stdout and "up to date" not in first.stdout
    conn = await asyncpg.connect(fresh_db)
    try:
        for schema in SCHEMAS.values():
            applied = await conn.fetchval(f"SELECT count(*) FROM {schema}.schema_migrations")
            assert applied >= 2, schema  # the shared outbox/inbox migration and the service's own
        assert await conn.fetchval("SELECT to_regclass('ordering.orders') IS NOT NULL")
    finally:
        await conn.close()

    again = run(fresh_db)
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("up to date") == len(SCHEMAS)


def test_the_job_fails_when_the_database_cannot_be_reached() -> None:
    r = run("postgresql://postgres@127.0.0.1:1/none")
    assert r.returncode != 0
