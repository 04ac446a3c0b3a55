"""SPEC 7.2: an outbox row the broker refuses for good is parked; the rows behind it are published."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from prometheus_client import REGISTRY

from contracts import topics
from contracts.events import ExpiryUpcomingData, encode, topic_of
from shared import auth, outbox
from shared.config import Settings
from shared.service import Runtime
from tests.support.kafka import TopicReader, wait_until

pytestmark = pytest.mark.integration
MIGRATIONS = Path(__file__).with_name("foundation_migrations")


def _runtime(settings: Settings, dsn: str) -> Runtime:
    return Runtime("foundation", MIGRATIONS, settings=settings.model_copy(update={"database_url": dsn}),
                   group_id=f"t-{uuid.uuid4().hex[:8]}")


async def _small_topic(bootstrap: str) -> str:
    """A topic whose broker-side limit (max.message.bytes) is 2,000 bytes: the broker itself refuses."""
    name = f"t-small-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, 1, 1, topic_configs={"max.message.bytes": "2000"})])
    finally:
        await admin.close()
    return name


def parked_metric(service: str) -> float:
    return REGISTRY.get_sample_value("aimis_outbox_parked_total", {"service": service}) or 0.0


async def test_rows_the_broker_refuses_are_parked_and_the_rows_behind_them_published(settings, fresh_db, org_id):
    small = await _small_topic(settings.kafka_bootstrap)
    rt = _runtime(settings, fresh_db)
    before = parked_metric("foundation")
    await rt.start()
    try:
        await rt.relay.stop()  # fill the outbox first, so all four rows are in one relay batch
        def reminder(ref: str):  # noqa: E306
            return rt.event(org_id, ExpiryUpcomingData(org_id=org_id, kind="lot", ref_id=ref,
                                                       expires_at=rt.clock.now(), days_before=7))
        first, last = reminder("lot-1"), reminder("lot-4")
        too_big = encode(reminder("lot-2")) + b" " * (1_200_000)  # over the 1 MiB producer/broker limit
        async with TopicReader(settings.kafka_bootstrap, topics.NOTIFICATIONS) as reader:
            async with rt.pool.acquire() as conn, conn.transaction():
                await outbox.add(conn, [first])
                await outbox.add_rows(conn, [("big", topic_of(first.type), org_id, too_big),
                                             ("refused", small, org_id, b"x" * 5000)])
                await outbox.add(conn, [last])
            rt.relay = outbox.Relay(rt.settings.database_url, rt.schema, rt.publisher)
            rt.relay.start()

            async def both_arrived() -> bool:
                await reader.poll()
                return {first.id, last.id} <= {e["id"] for e in reader.events()}
            await wait_until(both_arrived, timeout=30)

        rows = await rt.pool.fetch("SELECT event_id, sent_at IS NOT NULL AS sent, parked_at IS NOT NULL AS parked,"
                                   " park_reason FROM outbox ORDER BY seq")
        assert [(r["event_id"], r["sent"], r["parked"]) for r in rows] == [
            (first.id, True, False), ("big", False, True), ("refused", False, True), (last.id, True, False)]
        assert "TooLarge" in rows[1]["park_reason"] and "TooLarge" in rows[2]["park_reason"]
        assert parked_metric("foundation") == before + 2
        assert await rt.pool.fetchval("SELECT count(*) FROM outbox WHERE sent_at IS NULL AND parked_at IS NULL") == 0

        app = rt.http_app(title="foundation")  # routes only: the runtime is already started
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
            def as_(role: auth.Role) -> dict[str, str]:
                return {"authorization": f"Bearer {auth.mint(settings.auth_secret, role)}"}
            for role in ("admin", "finance"):
                r = await http.get("/v1/admin/outbox/parked", headers=as_(role))
                assert r.status_code == 200, r.text
                body = r.json()
                assert body["count"] == 2
                assert [(p["event_id"], p["topic"]) for p in body["rows"]] == [("big", topics.NOTIFICATIONS),
                                                                             ("refused", small)]
                assert body["rows"][0]["size"] == len(too_big)
            assert (await http.get("/v1/admin/outbox/parked", headers=as_("platform"))).status_code == 403
            assert (await http.get("/v1/admin/outbox/parked")).status_code == 401
    finally:
        await rt.stop()


async def test_a_transient_failure_is_retried_never_parked(settings, fresh_db, org_id):
    rt = _runtime(settings, fresh_db)
    await rt.start()
    try:
        await rt.relay.stop()
        calls: list[str] = []
        real = rt.publisher

        async def flaky(rows):
            calls.extend(topic for topic, _, _ in rows)
            if len(calls) == 1:
                raise ConnectionError("broker unreachable")
            return await real(rows)

        ev = rt.event(org_id, ExpiryUpcomingData(org_id=org_id, kind="lot", ref_id="lot-1",
                                                 expires_at=rt.clock.now(), days_before=7))
        async with rt.pool.acquire() as conn, conn.transaction():
            await outbox.add(conn, [ev])
        rt.relay = outbox.Relay(rt.settings.database_url, rt.schema, flaky)
        rt.relay.start()
        await wait_until(lambda: rt.pool.fetchval("SELECT sent_at IS NOT NULL FROM outbox WHERE event_id = $1",
                                                  ev.id), timeout=30)
        assert len(calls) >= 2
        assert await rt.pool.fetchval("SELECT count(*) FROM outbox WHERE parked_at IS NOT NULL") == 0
    finally:
        await rt.stop()
