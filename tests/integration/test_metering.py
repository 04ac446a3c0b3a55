"""Metering on the real broker and database: rejections, dedup, forwarding order, reports, HTTP ingestion.

One metering service (in-process, consumer group aimis-metering, its own database) serves the whole
module; every test uses its own organisations, so tests do not see each other's effects.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client import REGISTRY

from contracts import topics
from contracts.events import AgreementRecordedData, encode, new_event
from services.metering import store
from services.metering.app import MIGRATIONS, create_app
from services.metering.handlers import OrdersCatchUp
from shared.config import Settings
from shared.service import Runtime
from tests.support.infra import Infra
from tests.support.kafka import TopicReader, partitions_of, producer, wait_until
from tests.support.services import SECRET, bearer, serve_in_process

pytestmark = pytest.mark.integration


@dataclass
class Metering:
    settings: Settings
    url: str = ""
    rt: Runtime | None = None
    app: Any = None
    _stack: contextlib.AsyncExitStack = field(default_factory=contextlib.AsyncExitStack)

    async def start(self) -> None:
        app = create_app(self.settings)
        self.app = app
        self.rt = app.state.runtime
        self._stack = contextlib.AsyncExitStack()
        self.url = await self._stack.enter_async_context(serve_in_process(app))

    async def stop(self) -> None:
        await self._stack.aclose()

    @property
    def pool(self) -> asyncpg.Pool:
        assert self.rt is not None
        return self.rt.pool


@pytest.fixture(scope="module")
async def metering(real_infra: Infra) -> AsyncIterator[Metering]:
    name = f"t_meter_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(real_infra.dsn)
    await admin.execute(f"CREATE DATABASE {name}")
    dsn = f"{real_infra.dsn.rsplit('/', 1)[0]}/{name}"
    settings = Settings(kafka_bootstrap=real_infra.bootstrap, database_url=dsn, auth_secret=SECRET)
    m = Metering(settings)
    await m.start()
    try:
        yield m
    finally:
        await m.stop()
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.close()


@pytest.fixture
async def send(real_infra: Infra) -> AsyncIterator[Any]:
    """send([(key, value)]): produce raw records in one producer batch, in order; their metadata."""
    p = await producer(real_infra.bootstrap)

    async def _send(records: list[tuple[str | None, Any]], topic: str = topics.USAGE) -> list[Any]:
        futures = []
        for key, value in records:
            raw = value if isinstance(value, bytes) else json.dumps(value).encode()
            futures.append(await p.send(topic, raw, key=key.encode() if key else None))
        await p.flush()
        return [await f for f in futures]

    try:
        yield _send
    finally:
        await p.stop()


@pytest.fixture
async def deductions(real_infra: Infra) -> AsyncIterator[TopicReader]:
    async with TopicReader(real_infra.bootstrap, topics.DEDUCTIONS) as r:
        yield r


@pytest.fixture
async def rejected(real_infra: Infra) -> AsyncIterator[TopicReader]:
    async with TopicReader(real_infra.bootstrap, topics.USAGE_REJECTED) as r:
        yield r


@pytest.fixture
async def known_org(metering: Metering, send: Any, org_id: str) -> str:
    """An organisation whose agreement_recorded metering has seen."""
    await record_agreement(metering, send, org_id)
    return org_id


async def record_agreement(metering: Metering, send: Any, org: str) -> None:
    now = datetime.now(timezone.utc)
    data = AgreementRecordedData(org_id=org, agreement_ref="AGR-1", signed_at=now, recorded_at=now)
    ev = new_event(org, data, "/aimis/order")
    await send([(org, encode(ev))], topic=topics.ORDERS)
    await wait_until(
        lambda: metering.pool.fetchval("SELECT count(*) FROM known_orgs WHERE org_id = $1", org), timeout=30
    )


def usage(org: str, *, id: str | None = None, quantity: Any = 1, time: datetime | str | None = None,
          type: str = "aimis.usage.cloud_inspection", **data: Any) -> dict[str, Any]:
    at = time or datetime.now(timezone.utc)
    return {
        "specversion": "1.0", "id": id or f"u-{uuid.uuid4().hex}", "source": "/imaging-platform",
        "type": type, "subject": org, "time": at if isinstance(at, str) else at.isoformat(),
        "data": {"quantity": quantity, "inspection_id": f"insp-{uuid.uuid4().hex[:8]}", **data},
    }


def duplicates_total() -> float:
    return REGISTRY.get_sample_value("aimis_usage_duplicates_total") or 0.0


async def assert_rejected(rejected: TopicReader, subject: str, reason: str, original: Any) -> dict[str, Any]:
    found = await rejected.wait_for(
        lambda e: e["subject"] == subject and e["data"]["original"] == original, timeout=30
    )
    assert len(found) == 1
    ev = found[0]
    assert ev["type"] == "aimis.usage.rejected"
    assert ev["data"]["reason"] == reason, ev["data"]
    assert ev["data"]["detail"]
    return ev


# ------------------------------------------------------------------ one test per rejection reason
# moved to tests/component/test_metering_rejections.py (the rules need no broker)


# ------------------------------------------------------------------ forwarding


async def test_accepted_usage_is_forwarded_as_deduction_requested(metering, send, deductions, known_org):
    ev = usage(known_org, quantity=4, type="aimis.usage.ai_review", channel="offline", site_id="s-1")
    await send([(known_org, ev)])
    [d] = await deductions.wait_for(lambda e: e["id"] == ev["id"], timeout=30)
    assert d["type"] == "aimis.metering.deduction_requested" and d["subject"] == known_org
    assert deductions.records[-1].key == known_org.encode()
    data = d["data"]
    assert (data["usage_id"], data["org_id"], data["resource"], data["quantity"], data["channel"]) == (
        ev["id"], known_org, "ai_review", 4, "offline")
    assert datetime.fromisoformat(data["occurred_at"]) == datetime.fromisoformat(ev["time"])
    assert data["inspection_id"] == ev["data"]["inspection_id"] and data["site_id"] == "s-1"


async def test_poison_event_between_two_good_ones_does_not_stop_the_partition(
    metering, send, deductions, rejected, known_org
):
    good1, good2 = usage(known_org), usage(known_org)
    poison = b'{"specversion": "1.0", "id": '
    await send([(known_org, good1), (known_org, poison), (known_org, good2)])
    found = await deductions.wait_for(lambda e: e["id"] in (good1["id"], good2["id"]), count=2, timeout=30)
    assert [e["id"] for e in found] == [good1["id"], good2["id"]]
    await assert_rejected(rejected, known_org, "MALFORMED", poison.decode())


async def test_json_nested_too_deep_to_read_or_reserialise_is_rejected_with_its_raw_text(
    metering, send, deductions, rejected, known_org
):
    deep_for_serialiser, deep_for_parser = b"[" * 900 + b"]" * 900, b"[" * 50_000 + b"]" * 50_000
    good = usage(known_org)
    await send([(known_org, deep_for_serialiser), (known_org, deep_for_parser), (known_org, good)])
    await deductions.wait_for(lambda e: e["id"] == good["id"], timeout=30)
    await assert_rejected(rejected, known_org, "MALFORMED", deep_for_serialiser.decode())
    # 100,000 bytes: its rejection keeps the first 4 KiB and the hash of the whole (SPEC 7.1)
    cut = await assert_rejected(rejected, known_org, "MALFORMED", deep_for_parser[:4096].decode())
    assert cut["data"]["original_truncated"] is True
    assert cut["data"]["original_sha256"] == hashlib.sha256(deep_for_parser).hexdigest()


async def test_per_org_order_is_kept_from_input_to_output(metering, send, deductions, known_org, org_id):
    other = f"org-{uuid.uuid4().hex[:12]}"
    await record_agreement(metering, send, other)
    a = [usage(known_org) for _ in range(150)]
    b = [usage(other) for _ in range(150)]
    interleaved = [x for pair in zip(a, b, strict=True) for x in pair]
    await send([(e["subject"], e) for e in interleaved])
    ids = {e["id"] for e in interleaved}
    await deductions.wait_for(lambda e: e["id"] in ids, count=300, timeout=60)
    for org, sent in ((known_org, a), (other, b)):
        out = [e["id"] for e in deductions.events(lambda e, o=org: e["subject"] == o)]
        assert out == [e["id"] for e in sent]


# ------------------------------------------------------------------ dedup


async def test_duplicate_within_a_batch_is_forwarded_once_and_counted(metering, send, deductions, known_org):
    dup, after = usage(known_org), usage(known_org)
    before = duplicates_total()
    await send([(known_org, dup), (known_org, dup), (known_org, dup), (known_org, after)])
    await deductions.wait_for(lambda e: e["id"] == after["id"], timeout=30)
    await deductions.settle(0.5)
    assert len(deductions.events(lambda e: e["id"] == dup["id"])) == 1
    assert duplicates_total() - before == 2


async def test_duplicate_across_a_restart_is_forwarded_once(metering, send, deductions, known_org):
    dup = usage(known_org)
    await send([(known_org, dup)])
    await deductions.wait_for(lambda e: e["id"] == dup["id"], timeout=30)

    await metering.stop()
    await metering.start()  # same database, same consumer group: a new process as far as state goes

    before = duplicates_total()
    after = usage(known_org)
    await send([(known_org, dup), (known_org, after)])
    await deductions.wait_for(lambda e: e["id"] == after["id"], timeout=60)
    await deductions.settle(0.5)
    assert len(deductions.events(lambda e: e["id"] == dup["id"])) == 1
    assert duplicates_total() - before == 1


async def test_records_redelivered_after_a_restart_are_neither_forwarded_nor_rejected_again(
    metering, real_infra, send, deductions, rejected, known_org
):
    good, poison = usage(known_org), b"poison, not JSON"
    meta = await send([(known_org, good), (known_org, poison)])
    await deductions.wait_for(lambda e: e["id"] == good["id"], timeout=30)
    await assert_rejected(rejected, known_org, "MALFORMED", poison.decode())

    await metering.stop()
    # Rewind the (now empty) group to the good record: as if the offsets had not been committed.
    tp = TopicPartition(topics.USAGE, meta[0].partition)
    c = AIOKafkaConsumer(bootstrap_servers=real_infra.bootstrap, group_id="aimis-metering",
                         enable_auto_commit=False)
    await c.start()
    try:
        c.assign([tp])
        await c.commit({tp: meta[0].offset})
    finally:
        await c.stop()
    before = duplicates_total()
    await metering.start()

    marker = usage(known_org)
    await send([(known_org, marker)])
    await deductions.wait_for(lambda e: e["id"] == marker["id"], timeout=60)
    await deductions.settle(0.5)
    await rejected.settle(0.5)
    assert len(deductions.events(lambda e: e["id"] == good["id"])) == 1
    assert len(rejected.events(lambda e: e["data"]["original"] == poison.decode())) == 1
    assert duplicates_total() - before >= 1  # the good record came again and was recognised


async def test_unknown_org_is_decided_only_after_the_agreements_queued_before_start_are_read(
    metering, real_infra, send, org_id
):
    """A fresh group (new deployment, restored database) has not read the orders topic yet: a lookup
    of a missing org waits until the group's committed offsets reach the topic's end at start-up."""
    await record_agreement(metering, send, f"org-{uuid.uuid4().hex[:12]}")  # the topic is not empty
    group = f"t-catch-up-{uuid.uuid4().hex[:8]}"
    rt = Runtime("metering", MIGRATIONS, settings=metering.settings, group_id=group)
    catch_up = OrdersCatchUp(rt, poll_s=0.1)
    watcher = asyncio.create_task(catch_up.watch())
    lookup = asyncio.create_task(catch_up.settled_known_orgs(metering.pool, {org_id}, wait_s=60))
    try:
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(lookup), timeout=1.5)
        assert not catch_up.ready.is_set()

        # the group's orders consumer reads the agreement, then commits the topic's end offsets
        await store.add_known_orgs(metering.pool, [(org_id, datetime.now(timezone.utc))])
        c = AIOKafkaConsumer(bootstrap_servers=real_infra.bootstrap, group_id=group, enable_auto_commit=False)
        await c.start()
        try:
            tps = [TopicPartition(topics.ORDERS, p) for p in await partitions_of(real_infra.bootstrap, topics.ORDERS)]
            c.assign(tps)
            await c.commit(await c.end_offsets(tps))
        finally:
            await c.stop()
        assert await asyncio.wait_for(lookup, timeout=30) == {org_id}
        assert catch_up.ready.is_set()
    finally:
        watcher.cancel()
        lookup.cancel()
        await catch_up.close()


async def test_agreement_consumer_skips_bad_records_and_ignores_other_order_events(metering, send, org_id):
    other = {"specversion": "1.0", "id": "x", "source": "/o", "type": "aimis.orders.order_cancelled",
             "subject": org_id, "time": "2025-01-01T00:00:00Z", "data": {}}
    await send([(org_id, b"not json"), (org_id, other)], topic=topics.ORDERS)
    await record_agreement(metering, send, org_id)  # behind the bad records on the same partition
    assert await metering.pool.fetchval("SELECT count(*) FROM known_orgs WHERE org_id = $1", org_id) == 1


# ------------------------------------------------------------------ usage report


async def test_usage_report_counts_accepted_and_rejected_per_hour_day_and_month(
    metering, send, deductions, rejected, known_org
):
    org = known_org
    t = lambda s: f"2025-01-{s}Z"  # noqa: E731
    good = [
        usage(org, quantity=3, time=t("01T10:15:00")),
        usage(org, quantity=4, time=t("01T10:45:00")),
        usage(org, quantity=5, time=t("01T11:05:00")),
        usage(org, quantity=2, time=t("01T10:20:00"), type="aimis.usage.ai_review"),
        usage(org, quantity=7, time=t("02T09:00:00")),
    ]
    bad_qty = usage(org, quantity=0, time=t("01T10:30:00"))  # counted as 1 rejected use
    no_inspection = usage(org, quantity=6, time=t("01T11:10:00"))
    del no_inspection["data"]["inspection_id"]  # MALFORMED, counted with its quantity
    await send([(org, e) for e in [*good, bad_qty, no_inspection]])
    await deductions.wait_for(lambda e: e["subject"] == org, count=5, timeout=30)
    await rejected.wait_for(lambda e: e["subject"] == org, count=2, timeout=30)

    async with httpx.AsyncClient(base_url=metering.url, headers=bearer(SECRET, org)) as c:
        hourly = (await c.get(f"/v1/orgs/{org}/usage", params={"granularity": "hour"})).json()["buckets"]
        assert hourly == [
            {"start": "2025-01-01T10:00:00Z", "resource": "ai_review", "accepted": 2, "rejected": 0},
            {"start": "2025-01-01T10:00:00Z", "resource": "cloud_inspection", "accepted": 7, "rejected": 1},
            {"start": "2025-01-01T11:00:00Z", "resource": "cloud_inspection", "accepted": 5, "rejected": 6},
            {"start": "2025-01-02T09:00:00Z", "resource": "cloud_inspection", "accepted": 7, "rejected": 0},
        ]
        daily = (await c.get(f"/v1/orgs/{org}/usage",
                             params={"granularity": "day", "resource": "cloud_inspection"})).json()["buckets"]
        assert daily == [
            {"start": "2025-01-01T00:00:00Z", "resource": "cloud_inspection", "accepted": 12, "rejected": 7},
            {"start": "2025-01-02T00:00:00Z", "resource": "cloud_inspection", "accepted": 7, "rejected": 0},
        ]
        monthly = (await c.get(f"/v1/orgs/{org}/usage", params={"granularity": "month"})).json()["buckets"]
        assert [(b["resource"], b["accepted"], b["rejected"]) for b in monthly] == [
            ("ai_review", 2, 0), ("cloud_inspection", 19, 7)]
        window = (await c.get(f"/v1/orgs/{org}/usage", params={
            "from": "2025-01-01T11:00:00Z", "to": "2025-01-02T00:00:00Z"})).json()["buckets"]
        assert [(b["start"], b["accepted"]) for b in window] == [("2025-01-01T11:00:00Z", 5)]


async def test_usage_report_is_org_scoped_and_validates_its_parameters(metering, org_id):
    path = f"/v1/orgs/{org_id}/usage"
    async with httpx.AsyncClient(base_url=metering.url) as c:
        assert (await c.get(path)).status_code == 401
        assert (await c.get(path, headers=bearer(SECRET, "someone-else"))).json()["error"]["code"] == "NOT_FOUND"
        assert (await c.get(path, headers=bearer(SECRET))).status_code == 200  # admin
        for params in ({"granularity": "week"}, {"resource": "coffee"}, {"from": "yesterday"},
                       {"from": "2025-01-01T00:00:00"},  # no zone
                       {"from": "2025-02-01T00:00:00Z", "to": "2025-01-01T00:00:00Z"}):
            r = await c.get(path, params=params, headers=bearer(SECRET, org_id))
            assert r.status_code == 400, params
            assert r.json()["error"]["code"] == "VALIDATION_ERROR"


# ------------------------------------------------------------------ HTTP ingestion


async def test_http_ingestion_accepts_valid_events_and_they_are_forwarded(metering, deductions, known_org):
    batch = [usage(known_org, quantity=i + 1) for i in range(3)]
    single = usage(known_org, type="aimis.usage.ai_review")
    async with httpx.AsyncClient(base_url=metering.url, headers=bearer(SECRET, role="platform")) as c:
        r = await c.post("/v1/usage", json=batch)
        assert r.status_code == 202, r.text
        assert r.json() == {"accepted": [e["id"] for e in batch]}
        r = await c.post("/v1/usage", json=single)
        assert r.status_code == 202 and r.json() == {"accepted": [single["id"]]}
    ids = [e["id"] for e in [*batch, single]]
    found = await deductions.wait_for(lambda e: e["id"] in ids, count=4, timeout=30)
    assert [e["id"] for e in found] == ids
    assert [e["data"]["quantity"] for e in found] == [1, 2, 3, 1]


async def test_http_ingestion_with_an_invalid_item_rejects_all_and_publishes_nothing(
    metering, real_infra, known_org, org_id
):
    stranger = f"org-{uuid.uuid4().hex[:12]}"  # no agreement
    good = usage(known_org)
    bad_type = usage(known_org, type="aimis.usage.nope")
    bad_qty = usage(known_org, quantity=20_000)
    future = usage(known_org, time=datetime.now(timezone.utc) + timedelta(hours=1))
    async with TopicReader(real_infra.bootstrap, topics.USAGE) as usage_topic:
        async with httpx.AsyncClient(base_url=metering.url) as c:
            r = await c.post("/v1/usage", json=[good, bad_type, bad_qty, "junk", future],
                             headers=bearer(SECRET, role="platform"))
            assert r.status_code == 400
            err = r.json()["error"]
            assert err["code"] == "VALIDATION_ERROR"
            assert [(i["index"], i["id"], i["code"]) for i in err["items"]] == [
                (1, bad_type["id"], "UNKNOWN_TYPE"), (2, bad_qty["id"], "INVALID_QUANTITY"),
                (3, None, "MALFORMED"), (4, future["id"], "TIME_IN_FUTURE")]
            assert all(i["message"] for i in err["items"])

            unknown = usage(stranger)
            r = await c.post("/v1/usage", json=unknown, headers=bearer(SECRET))  # admin may send for any org
            assert r.status_code == 400 and r.json()["error"]["items"][0]["code"] == "UNKNOWN_ORG"

            # SPEC 7.4: an org token may not send usage at all, not even its own
            r = await c.post("/v1/usage", json=[good], headers=bearer(SECRET, known_org))
            assert r.status_code == 403 and r.json()["error"]["code"] == "FORBIDDEN"

            r = await c.post("/v1/usage", json=[good] * 1001, headers=bearer(SECRET, role="platform"))
            assert r.status_code == 400 and r.json()["error"]["code"] == "TOO_MANY_EVENTS"

            r = await c.post("/v1/usage", content=b"{nope", headers=bearer(SECRET, role="platform"))
            assert r.status_code == 400 and r.json()["error"]["code"] == "VALIDATION_ERROR"

            assert (await c.post("/v1/usage", json=good)).status_code == 401
        await usage_topic.settle(1.0)
        assert not usage_topic.events(lambda e: e.get("id") in (good["id"], unknown["id"]))


async def test_unknown_org_is_decided_only_after_the_orders_topic_is_read_up_to_now(metering, send, org_id):
    """Usage consumed before its (earlier) agreement has been stored must not be rejected
    UNKNOWN_ORG: the decision first waits until the orders topic is read up to that moment."""
    catch_up = metering.app.state.orders_catch_up
    blocker = await asyncpg.connect(metering.settings.database_url)
    tx = blocker.transaction()
    await tx.start()
    released = False
    try:
        # Hold metering's orders consumer back: it cannot store the agreement while this lock is held.
        await blocker.execute("LOCK TABLE metering.known_orgs IN SHARE MODE")
        now = datetime.now(timezone.utc)
        data = AgreementRecordedData(org_id=org_id, agreement_ref="AGR-race", signed_at=now, recorded_at=now)
        await send([(org_id, encode(new_event(org_id, data, "/aimis/order")))],
                   topic=topics.ORDERS)
        await wait_until(lambda: metering.pool.fetchval(
            """SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
               WHERE NOT l.granted AND c.relname = 'known_orgs'"""), timeout=30)
        assert await catch_up.read_up_to_now(timeout_s=1.0) is False  # the agreement is not stored yet
        deciding = asyncio.create_task(catch_up.settled_known_orgs(metering.pool, {org_id}, wait_s=60))
        await tx.rollback()
        released = True
        assert await deciding == {org_id}
    finally:
        if not released:
            await tx.rollback()
        await blocker.close()
