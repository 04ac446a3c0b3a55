"""Component tier: a service's consumers and policies against PostgreSQL only, no Kafka.

Raw records (aiokafka `ConsumerRecord`s built here) go straight into the consumer base
(`shared.consumer.Consumer`), exactly as the transport hands them over; the test then reads what
the transaction left in the service's tables and its outbox.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from aiokafka import ConsumerRecord
from fastapi import APIRouter

from shared.clock import FixedClock
from shared.config import Settings
from shared.consumer import Consumer, Subscription
from shared.service import Runtime
from tests.support.infra import postgres
from tests.support.services import bearer

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=timezone.utc)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[tuple[str, bool]]:
    with postgres() as server:
        yield server


class Database:
    """One test's database, created on first use as a copy of a migrated template of the service
    (migrating once per session keeps a test in milliseconds)."""

    templates: dict[tuple[str, str], str] = {}  # (server, schema) -> template database, per session

    def __init__(self, server_dsn: str, keep: bool = False):
        self.server_dsn, self.name = server_dsn, f"c_{uuid.uuid4().hex[:10]}"
        self.created = False
        self.keep = keep  # on a throwaway server: dropping costs a checkpoint, the server goes anyway

    def dsn(self, name: str) -> str:
        return f"{self.server_dsn.rsplit('/', 1)[0]}/{name}"

    async def create(self, schema: str, migrations: Path) -> str:
        """A copy of the service's migrated template (made once per session)."""
        template = self.templates.get((self.server_dsn, schema))
        if template is None:
            template = f"tpl_{schema}_{uuid.uuid4().hex[:6]}"
            await self._execute(f"CREATE DATABASE {template}")
            rt = Runtime(schema, migrations, settings=_settings(self.dsn(template)))
            await rt.open_database()
            await rt.close_database()
            self.templates[self.server_dsn, schema] = template
        return await self.create_empty(f" TEMPLATE {template}")

    async def create_empty(self, options: str = "") -> str:
        await self._execute(f"CREATE DATABASE {self.name}{options}")
        self.created = True
        # A commit here need not wait for its WAL flush: no component test crashes the server (the
        # integration tier kills PostgreSQL for real), and the flush was most of a consumer call.
        await self._execute(f"ALTER DATABASE {self.name} SET synchronous_commit = off")
        return self.dsn(self.name)

    async def drop(self) -> None:
        if self.created and not self.keep:
            await self._execute(f"DROP DATABASE IF EXISTS {self.name} WITH (FORCE)")

    async def _execute(self, sql: str) -> None:
        admin = await asyncpg.connect(self.server_dsn)
        try:
            await admin.execute(sql)
        finally:
            await admin.close()


@pytest.fixture
async def database(pg_server: tuple[str, bool]) -> AsyncIterator[Database]:
    """A new database for one test (see Database)."""
    dsn, throwaway = pg_server
    db = Database(dsn, keep=throwaway)
    try:
        yield db
    finally:
        await db.drop()


def _settings(dsn: str) -> Settings:
    return Settings(kafka_bootstrap="127.0.0.1:9", database_url=dsn, auth_secret="component-test-secret",
                    late_usage_grace_s=300)


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(NOW)


async def runtime(name: str, migrations: Path, database: Database, clock: FixedClock, **kw: Any) -> Runtime:
    """A runtime with its database open and migrated; Kafka is never started."""
    rt = Runtime(name, migrations, settings=_settings(await database.create(name, migrations)), clock=clock, **kw)
    await rt.open_database()
    return rt


class Feed:
    """Hands raw records to a subscription's consumer, with increasing offsets per partition."""

    def __init__(self, rt: Runtime, sub: Subscription):
        self.rt, self.sub = rt, sub
        self.consumer = Consumer(rt, sub)
        self.offsets: dict[int, int] = {}

    def record(self, value: bytes | str | dict[str, Any], key: str | None = None, partition: int = 0,
               offset: int | None = None) -> ConsumerRecord:
        if isinstance(value, dict):
            value = json.dumps(value)
        if isinstance(value, str):
            value = value.encode()
        if offset is None:
            offset = self.offsets.get(partition, 0)
            self.offsets[partition] = offset + 1
        k = key.encode() if key is not None else None
        return ConsumerRecord(self.sub.topic, partition, offset, 0, 0, k, value, None, 0, len(value), ())

    async def __call__(self, *records: ConsumerRecord) -> None:
        await self.consumer(list(records))

    async def outbox(self, topic: str) -> list[dict[str, Any]]:
        """The events this service wrote to its outbox for `topic`, in order."""
        rows = await self.rt.pool.fetch("SELECT payload FROM outbox WHERE topic = $1 ORDER BY seq", topic)
        return [json.loads(r["payload"]) for r in rows]


class Http:
    """A service's HTTP routes over the runtime's database, in process (no lifespan: Kafka is never
    started), with an org token."""

    def __init__(self, rt: Runtime, *routers: APIRouter):
        app = rt.http_app(*routers, title=f"{rt.name} (component test)")
        self.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://component")
        self.secret = rt.settings.auth_secret

    async def get(self, org: str, path: str, **params: Any) -> Any:
        r = await self.client.get(f"/v1/orgs/{org}{path}", params=params, headers=bearer(self.secret, org))
        assert r.status_code == 200, r.text
        return r.json()

    async def aclose(self) -> None:
        await self.client.aclose()
