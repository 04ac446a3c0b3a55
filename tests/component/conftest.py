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
import pytest
from aiokafka import ConsumerRecord

from shared.clock import FixedClock
from shared.config import Settings
from shared.consumer import Consumer, Subscription
from shared.service import Runtime
from tests.support.infra import postgres

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=timezone.utc)


@pytest.fixture(scope="session")
def pg_dsn() -> Iterator[str]:
    with postgres() as dsn:
        yield dsn


@pytest.fixture
async def database(pg_dsn: str) -> AsyncIterator[str]:
    """A new empty database for one test."""
    name = f"c_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(pg_dsn)
    await admin.execute(f"CREATE DATABASE {name}")
    try:
        yield f"{pg_dsn.rsplit('/', 1)[0]}/{name}"
    finally:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.close()


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(NOW)


async def runtime(name: str, migrations: Path, dsn: str, clock: FixedClock, **kw: Any) -> Runtime:
    """A runtime with its database open and migrated; Kafka is never started."""
    settings = Settings(kafka_bootstrap="127.0.0.1:9", database_url=dsn, auth_secret="component-test-secret",
                        late_usage_grace_s=300)
    rt = Runtime(name, migrations, settings=settings, clock=clock, **kw)
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
