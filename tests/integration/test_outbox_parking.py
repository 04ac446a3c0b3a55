"""SPEC 7.2: an outbox row the broker refuses for good is parked; the rows behind it are published."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
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

        async def all_marked() -> bool:  # on the topic first, then marked sent in the relay's next transaction
            return await rt.pool.fetchval(
                "SELECT count(*) FROM outbox_state WHERE state = 'unsent'") == 0
        await wait_until(all_marked, timeout=30)
        rows = await rt.pool.fetch("SELECT o.event_id, s.state = 'sent' AS sent, o.parked_at IS NOT NULL AS parked,"
                                   " o.park_reason FROM outbox o JOIN outbox_state s USING (seq) ORDER BY seq")
        assert [(r["event_id"], r["sent"], r["parked"]) for r in rows] == [
            (first.id, True, False), ("big", False, True), ("refused", False, True), (last.id, True, False)]
        assert "TooLarge" in rows[1]["park_reason"] and "TooLarge" in rows[2]["park_reason"]
        assert parked_metric("foundation") == before + 2
        assert await rt.pool.fetchval("SELECT count(*) FROM outbox_state WHERE state = 'unsent'") == 0

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
        await wait_until(lambda: rt.pool.fetchval("SELECT state = 'sent' FROM outbox_state WHERE event_id = $1",
                                                  ev.id), timeout=30)
        assert len(calls) >= 2
        assert await rt.pool.fetchval("SELECT count(*) FROM outbox WHERE parked_at IS NOT NULL") == 0
    finally:
        await rt.stop()


async def _allow_larger(bootstrap: str, topic: str) -> None:
    """The cause fixed: the topic now takes records of 100,000 bytes."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic,
                                                  configs={"max.message.bytes": "100000"})])
    finally:
        await admin.close()


async def test_an_admin_republishes_a_parked_row_once_its_cause_is_fixed_and_only_once(
    settings, fresh_db, org_id, monkeypatch
):
    small = await _small_topic(settings.kafka_bootstrap)
    rt = _runtime(settings, fresh_db)
    await rt.start()
    try:
        await rt.relay.stop()
        events = [rt.event(org_id, ExpiryUpcomingData(org_id=org_id, kind="lot", ref_id=f"lot-{i}" + "x" * 3000,
                                                      expires_at=rt.clock.now(), days_before=7)) for i in (1, 2)]
        async with rt.pool.acquire() as conn, conn.transaction():
            # on the small topic: over its 2,000-byte limit
            await outbox.add_rows(conn, [(ev.id, small, org_id, encode(ev)) for ev in events])
        rt.relay = outbox.Relay(rt.settings.database_url, rt.schema, rt.publisher)
        rt.relay.start()
        await wait_until(lambda: rt.pool.fetchval("SELECT count(*) = 2 FROM outbox WHERE parked_at IS NOT NULL"))
        keep, drop = [await rt.pool.fetchval("SELECT seq FROM outbox WHERE event_id = $1", ev.id) for ev in events]

        app = rt.http_app(title="foundation")
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http, \
                TopicReader(settings.kafka_bootstrap, small, from_beginning=True) as reader:
            def as_(role: auth.Role) -> dict[str, str]:
                return {"authorization": f"Bearer {auth.mint(settings.auth_secret, role)}"}

            def republish(seq: int, role: auth.Role = "admin", body: Any = None) -> Any:
                return http.post(f"/v1/admin/outbox/parked/{seq}/republish", headers=as_(role),
                                 json={"reason": "max.message.bytes raised"} if body is None else body)

            # only an admin decides (SPEC 7.4: finance reads the list, nothing more), and says why
            assert (await republish(keep, "finance")).status_code == 403
            assert (await republish(keep, body={})).status_code == 400
            assert (await republish(keep, body={"reason": "a\x00b"})).status_code == 400
            missing = await republish(10**9)
            assert (missing.status_code, missing.json()["error"]["code"]) == (404, "NOT_FOUND")

            await _allow_larger(settings.kafka_bootstrap, small)
            both = await asyncio.gather(republish(keep), republish(keep))  # two operators at once: one wins
            assert sorted(r.status_code for r in both) == [200, 409]
            won = next(r for r in both if r.status_code == 200).json()
            assert (won["seq"], won["event_id"], won["action"], won["actor"]) == (keep, events[0].id, "republish", "admin")

            await wait_until(lambda: rt.pool.fetchval("SELECT sent_at IS NOT NULL FROM outbox WHERE seq = $1", keep))
            again = await republish(keep)  # after it went out: still once
            assert (again.status_code, again.json()["error"]["code"]) == (409, "NOT_PARKED")

            r = await http.post(f"/v1/admin/outbox/parked/{drop}/discard", headers=as_("admin"),
                                json={"reason": "superseded by a smaller reminder"})
            assert r.status_code == 200 and r.json()["action"] == "discard"
            assert (await republish(drop)).status_code == 409  # a discarded row is not sent later
            listed = (await http.get("/v1/admin/outbox/parked", headers=as_("admin"))).json()
            assert (listed["count"], listed["rows"]) == (0, [])

            await reader.settle(1.0)
            assert [json.loads(rec.value)["id"] for rec in reader.records] == [events[0].id]  # once, never the other

        audit = await rt.pool.fetch("SELECT seq, action, actor, reason, park_reason FROM outbox_resolutions ORDER BY id")
        assert [(a["seq"], a["action"], a["actor"], a["reason"]) for a in audit] == [
            (keep, "republish", "admin", "max.message.bytes raised"),
            (drop, "discard", "admin", "superseded by a smaller reminder")]
        assert all("TooLarge" in a["park_reason"] for a in audit)
        assert await rt.pool.fetchval("SELECT discarded_at IS NOT NULL AND sent_at IS NULL FROM outbox WHERE seq = $1",
                                      drop)
        assert REGISTRY.get_sample_value("aimis_outbox_parked_resolved_total",
                                         {"service": "foundation", "action": "republish"}) >= 1
    finally:
        await rt.stop()


async def test_aimis_outbox_lists_republishes_and_discards_parked_rows(settings, fresh_db, org_id, monkeypatch):
    from typer.testing import CliRunner

    from cli.main import app as cli
    from tests.support.services import serve_in_process

    small = await _small_topic(settings.kafka_bootstrap)
    rt = _runtime(settings, fresh_db)
    async with serve_in_process(rt.http_app(title="foundation")) as url:  # its lifespan starts and stops rt
        async with rt.pool.acquire() as conn, conn.transaction():
            await outbox.add_rows(conn, [(f"ev-{i}", small, org_id, b"x" * 5000) for i in (1, 2)])
        await wait_until(lambda: rt.pool.fetchval("SELECT count(*) = 2 FROM outbox WHERE parked_at IS NOT NULL"))
        first, second = [r["seq"] for r in await rt.pool.fetch("SELECT seq FROM outbox ORDER BY seq")]
        monkeypatch.setenv("AIMIS_EXPIRY_URL", url)  # the CLI speaks to this runtime as "expiry"
        monkeypatch.setenv("AIMIS_AUTH_SECRET", settings.auth_secret)

        async def aimis(*args: str) -> Any:
            return await asyncio.to_thread(CliRunner().invoke, cli, ["outbox", *args])

        listed = await aimis("parked", "--service", "expiry", "--json")
        assert listed.exit_code == 0, listed.output
        assert [r["event_id"] for r in json.loads(listed.output)["rows"]] == ["ev-1", "ev-2"]
        table = await aimis("parked", "--service", "expiry")
        assert table.exit_code == 0 and "2 parked row(s)" in table.output

        await _allow_larger(settings.kafka_bootstrap, small)
        done = await aimis("republish", "--service", "expiry", "--seq", str(first), "--reason", "limit raised")
        assert done.exit_code == 0 and "re-published" in done.output, done.output
        twice = await aimis("republish", "--service", "expiry", "--seq", str(first), "--reason", "again")
        assert twice.exit_code == 1 and "NOT_PARKED" in twice.output
        dropped = await aimis("discard", "--service", "expiry", "--seq", str(second), "--reason", "test row")
        assert dropped.exit_code == 0 and "discarded" in dropped.output
        missing = await aimis("discard", "--service", "expiry", "--seq", "999999", "--reason", "x")
        assert missing.exit_code == 1 and "NOT_FOUND" in missing.output
        unknown = await aimis("parked", "--service", "billing")
        assert unknown.exit_code == 1 and "unknown service" in unknown.output
        await wait_until(lambda: rt.pool.fetchval("SELECT sent_at IS NOT NULL FROM outbox WHERE seq = $1", first))
