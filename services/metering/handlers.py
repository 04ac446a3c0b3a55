"""Kafka consumers: usage batches (validate, dedup, forward, aggregate) and known organisations."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from prometheus_client import Counter

from contracts import topics
from contracts.events import (
    EVENT_TYPES,
    CloudEvent,
    EventError,
    UsageRejectedData,
    encode,
    parse_event,
)
from services.metering import domain, store
from services.metering.domain import Rejection, Usage
from shared import inbox, outbox
from shared.kafka import record_text
from shared.service import Runtime

log = logging.getLogger(__name__)

USAGE_STREAM = "usage"  # inbox stream of accepted usage ids (the CloudEvent id)
REJECTED_STREAM = "usage-rejected"  # inbox stream of rejection ids (one per consumed bad record)
AGREEMENT_RECORDED = "aimis.orders.agreement_recorded"
ORDER_TYPES = {t for t, (topic, _) in EVENT_TYPES.items() if topic == topics.ORDERS}

DUPLICATES = Counter("aimis_usage_duplicates_total", "Usage events ignored as duplicates of a processed id")
ACCEPTED = Counter("aimis_usage_accepted_total", "Usage events forwarded as deduction_requested")
REJECTED = Counter("aimis_usage_rejected_total", "Usage events sent to the rejected-usage topic", ["reason"])


ORDERS_WAITS = Counter(
    "aimis_metering_orders_waits_total",
    "UNKNOWN_ORG decisions that first waited for the orders topic to be read up to now",
)


class OrdersCatchUp:
    """Whether the agreements that existed when this process started have been read.

    Set once the group's committed offsets on the orders topic reach that topic's end offsets as
    of start-up. Until then an organisation missing from known_orgs may just not be read *yet*
    (a new database, a restored one, a long outage), so UNKNOWN_ORG is decided only after it.
    """

    def __init__(self, rt: Runtime, poll_s: float = 0.25):
        self.rt, self.poll_s = rt, poll_s
        self.ready = asyncio.Event()
        self._offsets_consumer: AIOKafkaConsumer | None = None
        self._offsets_lock = asyncio.Lock()

    async def watch(self) -> None:
        while not self.ready.is_set():
            try:
                await self._watch_once()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - Kafka not reachable yet: try again
                log.warning("orders catch-up check failed: %r; retrying", e)
                await asyncio.sleep(1.0)

    async def _watch_once(self) -> None:
        await self.read_up_to_now(timeout_s=float("inf"), poll_s=self.poll_s)
        self.ready.set()
        log.info("metering has read the agreements recorded before it started")

    async def read_up_to_now(self, timeout_s: float, poll_s: float = 0.02) -> bool:
        """Wait (at most timeout_s) until the group has committed, on the orders topic, everything
        that was there when this was called: every agreement recorded before now is then in
        known_orgs. True when caught up."""
        c = await self._offsets()
        tps = [TopicPartition(topics.ORDERS, p) for p in await _partitions(self.rt.settings.kafka_bootstrap, self.rt.kafka_options)]
        if not tps:
            raise RuntimeError(f"no partitions for {topics.ORDERS} yet")
        ends = await c.end_offsets(tps)
        begins = await c.beginning_offsets(tps)
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            behind = [tp for tp in tps if ends[tp] > begins[tp] and ((await c.committed(tp)) or 0) < ends[tp]]
            if not behind:
                return True
            if asyncio.get_running_loop().time() > deadline:
                return False
            await asyncio.sleep(poll_s)

    async def _offsets(self) -> AIOKafkaConsumer:
        """A consumer of this group that never subscribes: it only reads offsets (created once)."""
        async with self._offsets_lock:
            if self._offsets_consumer is None:
                c = AIOKafkaConsumer(
                    bootstrap_servers=self.rt.settings.kafka_bootstrap, group_id=self.rt.group_id,
                    enable_auto_commit=False, client_id=f"{self.rt.group_id}-offsets", **self.rt.kafka_options,
                )
                await c.start()
                self._offsets_consumer = c
        return self._offsets_consumer

    async def close(self, _: Any = None) -> None:
        if self._offsets_consumer is not None:
            await self._offsets_consumer.stop()
            self._offsets_consumer = None

    async def settled_known_orgs(self, pool: Any, orgs: set[str], wait_s: float) -> set[str]:
        """known_orgs for `orgs`. When some are missing, first make sure the agreements recorded
        before now have been read (at start-up: also those before start-up), then re-read."""
        known = await store.known_orgs(pool, orgs)
        if known == orgs:
            return known
        ORDERS_WAITS.inc()
        if not self.ready.is_set():
            try:
                await asyncio.wait_for(self.ready.wait(), timeout=wait_s)
            except asyncio.TimeoutError:
                log.warning("orders topic not caught up after %.0f s; deciding UNKNOWN_ORG anyway", wait_s)
        try:
            if not await self.read_up_to_now(min(wait_s, STEADY_WAIT_S)):
                log.warning("orders topic not read up to now within %.0f s; deciding UNKNOWN_ORG anyway", STEADY_WAIT_S)
        except Exception as e:  # noqa: BLE001 - Kafka unreachable: decide on what is known
            log.warning("could not check the orders topic position: %r", e)
        return await store.known_orgs(pool, orgs)


async def _partitions(bootstrap: str, options: dict[str, str]) -> list[int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **options)
    await admin.start()
    try:
        desc = await admin.describe_topics([topics.ORDERS])
        return sorted(p["partition"] for d in desc if d.get("error_code", 0) == 0 for p in d["partitions"])
    finally:
        await admin.close()


CATCH_UP_WAIT_S = 60.0  # a usage batch with not-yet-known orgs waits this long at most at start-up
STEADY_WAIT_S = 10.0  # after start-up: for the agreements recorded up to now to be read


class UsageConsumer:
    """One database transaction per batch: inbox claims + outbox rows + hourly aggregates."""

    def __init__(self, rt: Runtime, catch_up: OrdersCatchUp):
        self.rt, self.catch_up = rt, catch_up

    async def __call__(self, records: list[ConsumerRecord]) -> None:
        rt = self.rt
        assert rt.pool is not None
        now = rt.clock.now()
        results = [domain.validate(r.value, now) for r in records]
        # known_orgs only grows, so it may be read before the transaction
        known = await self.catch_up.settled_known_orgs(rt.pool, domain.orgs_of(results), CATCH_UP_WAIT_S)
        async with rt.pool.acquire() as conn, conn.transaction():
            results = [domain.check_org(x, known) for x in results]
            usage_new = await inbox.claim(conn, USAGE_STREAM, [x.id for x in results if isinstance(x, Usage)])
            rejection_ids = {
                i: domain.rejection_id(r.topic, r.partition, r.offset)
                for i, (r, x) in enumerate(zip(records, results)) if isinstance(x, Rejection)
            }
            rejected_new = await inbox.claim(conn, REJECTED_STREAM, list(rejection_ids.values()))

            events: list[CloudEvent[Any]] = []
            agg: tuple[list[Any], ...] = ([], [], [], [], [])
            duplicates = 0
            reasons: list[str] = []
            for i, (record, x) in enumerate(zip(records, results)):  # offset order per partition
                if isinstance(x, Usage):
                    if x.id not in usage_new:
                        duplicates += 1
                        continue
                    usage_new.discard(x.id)  # a later copy in this batch is a duplicate
                    events.append(x.deduction_event(rt.source, now))
                    _agg_add(agg, x.org_id, x.resource, x.occurred_at, x.quantity, 0)
                    continue
                rid = rejection_ids[i]
                if rid not in rejected_new:
                    continue  # this record was already rejected (redelivery)
                events.append(self._rejected_event(record, x, rid, now))
                reasons.append(x.reason)
                if x.org_id in known and x.resource is not None:
                    _agg_add(agg, x.org_id, x.resource, x.bucket_time(now), 0, x.counted_quantity)
            await outbox.add(conn, events)
            await store.add_hourly(conn, *agg)
        # counted only once the batch committed (a rolled-back batch is redelivered and counted then)
        if duplicates:
            DUPLICATES.inc(duplicates)
        ACCEPTED.inc(len(events) - len(reasons))
        for reason in reasons:
            REJECTED.labels(reason).inc()
            log.info("usage rejected", extra={"reason": reason, "topic": topics.USAGE})

    def _rejected_event(self, record: ConsumerRecord, x: Rejection, rid: str, now: Any) -> CloudEvent[Any]:
        subject = domain.rejection_subject(x, record.key)
        try:
            original = record_text(record)
        except RecursionError:  # nested too deep for json: keep the raw text
            original = _raw_text(record)
        data = UsageRejectedData(reason=x.reason, detail=x.detail[:2000], received_at=now, original=original)
        event = self.rt.event("aimis.usage.rejected", subject, data, id=rid)
        try:
            encode(event)
        except ValueError:  # e.g. nested too deep to serialise: the raw text always serialises
            data = data.model_copy(update={"original": _raw_text(record)})
            event = self.rt.event("aimis.usage.rejected", subject, data, id=rid)
        return event


def _raw_text(record: ConsumerRecord) -> str:
    return (record.value or b"").decode("utf-8", errors="replace")


def _agg_add(agg: tuple[list[Any], ...], org: str, resource: str, at: Any, acc: int, rej: int) -> None:
    for column, value in zip(agg, (org, resource, at, acc, rej)):
        column.append(value)


class OrdersConsumer:
    """Learns which organisations have an agreement; every other order event is ignored."""

    def __init__(self, rt: Runtime):
        self.rt = rt

    async def __call__(self, records: list[ConsumerRecord]) -> None:
        assert self.rt.pool is not None
        orgs = []
        for r in records:
            try:
                ev = parse_event(r.value, allowed={AGREEMENT_RECORDED})
            except EventError as e:
                if e.reason == "UNKNOWN_TYPE" and _type_of(r) in ORDER_TYPES:
                    continue  # order_placed / order_paid / order_cancelled: not ours
                log.warning(
                    "skipping bad record %s:%d:%d on the orders topic: %s",
                    r.topic, r.partition, r.offset, e, extra={"reason": e.reason, "topic": r.topic},
                )
                continue
            orgs.append((ev.data.org_id, ev.data.recorded_at))
        if orgs:
            await store.add_known_orgs(self.rt.pool, orgs)


def _type_of(record: ConsumerRecord) -> str | None:
    doc = record_text(record)
    return doc.get("type") if isinstance(doc, dict) else None
