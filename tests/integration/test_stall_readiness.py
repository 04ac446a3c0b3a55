"""SPEC 7.2: /readyz answers 503 when a consumer with lag made no progress for AIMIS_STALL_S, or
the oldest unsent outbox row is older than that; and ready again once progress resumes."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import httpx
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from prometheus_client import REGISTRY

from contracts.events import ExpiryUpcomingData
from shared import outbox
from shared.config import Settings
from shared.service import Runtime
from tests.support.kafka import producer, wait_until

pytestmark = pytest.mark.integration
MIGRATIONS = Path(__file__).with_name("foundation_migrations")
STALL_S = 1.5


def _runtime(settings: Settings, dsn: str) -> Runtime:
    s = settings.model_copy(update={"database_url": dsn, "stall_s": STALL_S})
    return Runtime(f"stall{uuid.uuid4().hex[:6]}", MIGRATIONS, settings=s, group_id=f"t-{uuid.uuid4().hex[:8]}")


async def _topic(bootstrap: str) -> str:
    name = f"t-stall-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, 2, 1)])
    finally:
        await admin.close()
    return name


def _metric(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


async def _ready(http: httpx.AsyncClient) -> tuple[int, dict]:
    r = await http.get("/readyz")
    return r.status_code, r.json()["checks"]


async def test_a_blocked_consumer_turns_readyz_503_and_recovers(settings, fresh_db):
    topic = await _topic(settings.kafka_bootstrap)
    rt = _runtime(settings, fresh_db)
    release, handled = asyncio.Event(), []

    async def blocks_until_released(records):  # a policy stuck on something (a lock, a remote call)
        await release.wait()
        handled.extend(records)

    rt.consume(topic, blocks_until_released, retry_backoff_s=0.0)
    await rt.start()
    app = rt.http_app(title="stall")
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
            await wait_until(lambda: rt._assigned(), timeout=30)  # the group has its partitions
            assert (await _ready(http))[0] == 200
            p = await producer(settings.kafka_bootstrap)
            try:
                meta = await (await p.send(topic, b"stuck", key=b"org-a"))
            finally:
                await p.stop()
            part = str(meta.partition)
            lag = lambda: _metric("aimis_consumer_lag", service=rt.name, topic=topic, partition=part)  # noqa: E731
            stall = lambda: _metric("aimis_consumer_stall_seconds", service=rt.name, topic=topic, partition=part)  # noqa: E731

            async def unready() -> bool:
                status, checks = await _ready(http)
                return status == 503 and checks["consumers"] is False
            await wait_until(unready, timeout=30)
            assert lag() == 1
            assert stall() >= STALL_S
            status, checks = await _ready(http)
            assert checks["database"] and checks["kafka"] and checks["outbox"]

            release.set()  # the cause goes away: the record is handled, its offset committed

            async def ready_again() -> bool:
                return (await _ready(http))[0] == 200
            await wait_until(ready_again, timeout=30)
            assert [r.value for r in handled] == [b"stuck"]
            await wait_until(lambda: lag() == 0 and stall() == 0, timeout=10)
    finally:
        release.set()
        await rt.stop()


async def test_an_unsent_outbox_row_older_than_the_stall_time_turns_readyz_503(settings, fresh_db, org_id):
    rt = _runtime(settings, fresh_db)
    await rt.start()
    app = rt.http_app(title="stall")
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
            assert (await _ready(http))[0] == 200
            await rt.relay.stop()  # the relay is stuck: rows wait
            ev = rt.event(org_id, ExpiryUpcomingData(org_id=org_id, kind="lot", ref_id="lot-1",
                                                     expires_at=rt.clock.now(), days_before=7))
            async with rt.pool.acquire() as conn, conn.transaction():
                await outbox.add(conn, [ev])

            async def unready() -> bool:
                status, checks = await _ready(http)
                return status == 503 and checks["outbox"] is False
            await wait_until(unready, timeout=30)
            assert (_metric("aimis_outbox_oldest_unsent_seconds", service=rt.name) or 0) > STALL_S

            rt.relay = outbox.Relay(rt.settings.database_url, rt.schema, rt.publisher)
            rt.relay.start()

            async def ready_again() -> bool:
                return (await _ready(http))[0] == 200
            await wait_until(ready_again, timeout=30)
            assert _metric("aimis_outbox_oldest_unsent_seconds", service=rt.name) == 0
    finally:
        await rt.stop()
