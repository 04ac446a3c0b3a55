"""SPEC 10 security: SASL/SCRAM principals and ACLs on a three-broker cluster. Each principal
writes only what it produces and reads only what it consumes; strangers are refused."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import timedelta

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError

from contracts import topics
from contracts.events import UsageDeductedData
from tests.cluster.conftest import Cluster, Replicated
from tests.e2e.helpers import assert_conservation, buy, eventually, iso, now, of_kind, usage

pytestmark = pytest.mark.cluster


async def produce(cluster: Cluster, topic: str, **options: object) -> str:
    """'ok', or the name of the error that refused one record."""
    p = AIOKafkaProducer(bootstrap_servers=cluster.bootstrap, acks="all", enable_idempotence=True,
                         request_timeout_ms=5000, **options)
    try:
        await asyncio.wait_for(p.start(), 15)
        await asyncio.wait_for(p.send_and_wait(topic, b'{"probe": true}', key=b"probe"), 15)
        return "ok"
    except (TimeoutError, KafkaError, OSError) as e:
        return type(e).__name__
    finally:
        await p.stop()


async def consume(cluster: Cluster, topic: str, group: str, **options: object) -> str:
    """'ok' when the principal may read `topic` in `group`, else the refusing error's name."""
    c = AIOKafkaConsumer(topic, bootstrap_servers=cluster.bootstrap, group_id=group,
                         auto_offset_reset="earliest", enable_auto_commit=False, **options)
    try:
        await asyncio.wait_for(c.start(), 15)
        await asyncio.wait_for(c.getmany(timeout_ms=2000), 15)
        await c.commit()
        return "ok"
    except (TimeoutError, KafkaError, OSError) as e:
        return type(e).__name__
    finally:
        await c.stop()


async def test_platform_may_only_produce_usage(cluster: Cluster) -> None:
    platform = cluster.options("platform")
    assert await produce(cluster, topics.USAGE, **platform) == "ok"
    for topic in (topics.ORDERS, topics.LEDGER, topics.DEDUCTIONS, topics.EXPIRY_COMMANDS):
        assert await produce(cluster, topic, **platform) == "TopicAuthorizationFailedError", topic
    assert await consume(cluster, topics.LEDGER, "analytics-platform", **platform) != "ok"


async def test_analytics_may_only_read_the_ledger(cluster: Cluster) -> None:
    analytics = cluster.options("analytics")
    assert await consume(cluster, topics.LEDGER, f"analytics-{uuid.uuid4().hex[:6]}", **analytics) == "ok"
    for topic in (topics.USAGE, topics.ORDERS, topics.DEDUCTIONS):
        assert await consume(cluster, topic, f"analytics-{uuid.uuid4().hex[:6]}", **analytics) != "ok", topic
    # refused before the topic: a principal with no write grant anywhere gets no producer id
    assert (await produce(cluster, topics.LEDGER, **analytics)).endswith("AuthorizationFailedError")


async def test_services_write_only_what_they_produce(cluster: Cluster) -> None:
    """A forged order_paid (the credit path) is refused to everyone but the order principal."""
    for principal in ("metering", "entitlement", "expiry", "console", "platform", "analytics"):
        assert await produce(cluster, topics.ORDERS, **cluster.options(principal)) != "ok", principal
    assert await produce(cluster, topics.ORDERS, **cluster.options("order")) == "ok"
    # and the order principal may not write the ledger
    assert await produce(cluster, topics.LEDGER, **cluster.options("order")) != "ok"


async def test_strangers_are_refused(cluster: Cluster) -> None:
    assert await produce(cluster, topics.USAGE) != "ok"  # no authentication at all
    wrong = cluster.options("platform", password="not-the-password")
    assert await produce(cluster, topics.USAGE, **wrong) != "ok"
    nobody = cluster.options("platform") | {"sasl_plain_username": "nobody"}
    assert await produce(cluster, topics.USAGE, **nobody) != "ok"


async def test_the_system_works_end_to_end_with_security_on(replicated: Replicated, org_id: str) -> None:
    """Order over HTTP, usage from the platform principal, the ledger read by analytics."""
    admin = replicated.admin
    admin.record_agreement(org_id, f"AGR-{org_id}", iso(now() - timedelta(days=3)))
    await buy(admin, org_id, [{"sku": "CI-QTY", "quantity": 1000, "storage_years": 5}])
    await eventually(lambda: admin.balances(org_id)["resources"]["cloud_inspection"]["purchased"], lambda p: p == 1000)
    events = [usage(org_id, quantity=2) for _ in range(30)]
    p = AIOKafkaProducer(bootstrap_servers=replicated.cluster.bootstrap, acks="all", enable_idempotence=True,
                         **replicated.cluster.options("platform"))
    await p.start()
    try:
        for e in events:
            await p.send_and_wait(topics.USAGE, json.dumps(e).encode(), key=org_id.encode())
    finally:
        await p.stop()
    b = await eventually(lambda: admin.balances(org_id)["resources"]["cloud_inspection"], lambda r: r["used"] >= 60)
    assert (b["used"], b["available"]) == (60, 940)
    assert_conservation(admin, org_id)

    c = AIOKafkaConsumer(topics.LEDGER, bootstrap_servers=replicated.cluster.bootstrap,
                         group_id=f"analytics-{uuid.uuid4().hex[:6]}", auto_offset_reset="earliest",
                         enable_auto_commit=False, **replicated.cluster.options("analytics"))
    await c.start()
    try:
        seen: set[str] = set()
        wanted = {e["id"] for e in events}
        async with asyncio.timeout(60):
            while not wanted <= seen:
                for recs in (await c.getmany(timeout_ms=500)).values():
                    for r in recs:
                        doc = json.loads(r.value)
                        if doc["subject"] == org_id and doc["type"] == "aimis.ledger.usage_deducted":
                            seen.add(doc["data"]["usage_id"])
    finally:
        await c.stop()
    assert len(of_kind(admin.ledger_all(org_id), UsageDeductedData)) == len(events)
