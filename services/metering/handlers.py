"""Kafka consumers (the one shape of shared/consumer.py): usage batches (validate, dedup per org,
forward, aggregate) and known organisations."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import asyncpg
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from prometheus_client import Counter

from contracts import topics
from contracts.events import (
    USAGE_TYPES,
    AgreementRecordedData,
    CloudEvent,
    Outgoing,
    UsageData,
    UsageRejectedData,
    models_on,
)
from services.metering import domain, store
from services.metering.domain import Reason, Rejection, Usage
from shared.consumer import (
    Accepted,
    Bad,
    Claim,
    DeadLetters,
    Decoded,
    Subscription,
    Tally,
    kept_headers,
    original_fields,
    subject_and_id,
)
from shared.service import Runtime

log = logging.getLogger(__name__)

USAGE_STREAM = "usage"  # inbox stream of accepted usage, keyed (org, CloudEvent id) (SPEC 7.3)
REJECTED_STREAM = "usage-rejected"  # inbox stream of rejection ids (one per consumed bad record)

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
        # Organisations read from known_orgs: an agreement once recorded stays recorded (nothing
        # deletes from known_orgs), so a batch of known orgs needs no query (issue 13).
        self.known: set[str] = set()

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
        parts = await _partitions(self.rt.settings.kafka_bootstrap, self.rt.kafka_options)
        tps = [TopicPartition(topics.ORDERS, p) for p in parts]
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

    async def settled_known_orgs(self, pool: Any, orgs: set[str], wait_s: float, *,
                                 remembered: bool = True) -> set[str]:
        """known_orgs for `orgs`. When some are missing, first make sure the agreements recorded
        before now have been read (at start-up: also those before start-up), then re-read.
        `remembered=False` asks the database even for organisations already read (HTTP ingestion:
        it answers 503 when the database cannot be reached, SPEC 7.5, like every endpoint of ours
        that reads it)."""
        if remembered and orgs <= self.known:
            return set(orgs)
        known = await self._known_orgs(pool, orgs, remembered)
        if known == orgs:
            return known
        ORDERS_WAITS.inc()
        if not self.ready.is_set():
            try:
                await asyncio.wait_for(self.ready.wait(), timeout=wait_s)
            except TimeoutError:
                log.warning("orders topic not caught up after %.0f s; deciding UNKNOWN_ORG anyway", wait_s)
        try:
            if not await self.read_up_to_now(min(wait_s, STEADY_WAIT_S)):
                log.warning("orders topic not read up to now within %.0f s; deciding UNKNOWN_ORG anyway", STEADY_WAIT_S)
        except Exception as e:  # noqa: BLE001 - Kafka unreachable: decide on what is known
            log.warning("could not check the orders topic position: %r", e)
        return await self._known_orgs(pool, orgs, remembered)

    async def _known_orgs(self, pool: Any, orgs: set[str], remembered: bool = True) -> set[str]:
        """`orgs` that known_orgs holds: those already read, and the rest read now (and kept)."""
        prior = orgs & self.known if remembered else set()
        found = await store.known_orgs(pool, orgs - prior)
        if len(self.known) + len(found) > MAX_KNOWN:
            self.known.clear()  # bounded: past that many organisations, they are read again
        self.known |= prior | found
        return prior | found


MAX_KNOWN = 100_000  # organisations kept in memory as known (a few MB)


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


@dataclass(frozen=True, slots=True)
class Refused:
    """What metering knows about a bad usage record: its Rejection, and whether it is counted in
    the org's usage report (only for an org with an agreement and a usage type)."""

    rejection: Rejection
    counted: bool


def usage(rt: Runtime, catch_up: OrdersCatchUp) -> Subscription:
    """Usage: validate, UNKNOWN_ORG against known orgs, dedup per (org, id), forward as
    deduction_requested, aggregate hourly; bad usage goes to aimis.usage.rejected.v1."""

    def decode(record: ConsumerRecord, now: datetime) -> Accepted | Bad:
        x = domain.validate(record.value, now)
        if isinstance(x, Usage):
            return Accepted(record, x.event)
        return Bad(record, x.reason, x.detail, x)

    async def screen(decoded: list[Decoded]) -> list[Decoded]:
        """UNKNOWN_ORG before the inbox claim, so a use refused for its org is not burnt."""
        orgs = {d.event.subject for d in decoded if isinstance(d, Accepted)}
        orgs |= {d.info.org_id for d in decoded
                 if isinstance(d, Bad) and isinstance(d.info, Rejection) and d.info.org_id}
        # known_orgs only grows, so it may be read before the transaction
        known = await catch_up.settled_known_orgs(rt.pool, orgs, CATCH_UP_WAIT_S)
        out: list[Decoded] = []
        for d in decoded:
            if isinstance(d, Accepted):
                if d.event.subject in known:  # the usual case, decided without a Usage built again
                    out.append(d)
                    continue
                x = domain.check_org(_usage_of(d.event), known)
                if isinstance(x, Usage):
                    out.append(d)
                    continue
                d = Bad(d.record, x.reason, x.detail, x)
            assert isinstance(d, Bad)
            # not a Rejection: the consumer base refused the record before metering read it (binary mode)
            rej = d.info if isinstance(d.info, Rejection) else Rejection(cast(Reason, d.reason), d.detail)
            counted = rej.org_id in known and rej.resource is not None
            out.append(Bad(d.record, d.reason, d.detail, Refused(rej, counted)))
        return out

    async def forward(conn: asyncpg.Connection, events: list[CloudEvent[Any]], now: datetime,
                      claim: Claim | None = None) -> list[Outgoing]:
        """Policy (claim="overlap"): each new use becomes deduction_requested and counts in its
        hour. The requests are built while the inbox claim runs, then those of uses processed
        before are dropped (a use's request depends on nothing but the use)."""
        if claim is None:
            raise TypeError("metering's usage policy claims its events itself (claim='overlap')")
        await claim.send()
        uses = [_usage_of(e) for e in events]
        out: list[Outgoing] = [u.deduction_event(rt.source, now) for u in uses]
        if len(new := await claim.new()) < len(events):
            kept = {id(e) for e in new}
            uses, out = [u for u in uses if id(u.event) in kept], [o for u, o in zip(uses, out, strict=True)
                                                                  if id(u.event) in kept]
        await store.add_hourly(conn, [u.org_id for u in uses], [u.resource for u in uses],
                               [u.occurred_at for u in uses], [u.quantity for u in uses], [0] * len(uses))
        return out

    def counted(t: Tally) -> None:
        DUPLICATES.inc(t.duplicate)
        ACCEPTED.inc(t.processed)

    return Subscription(
        topic=topics.USAGE, accepts=(UsageData,), stream=USAGE_STREAM, key=subject_and_id, policy=forward,
        claim="overlap", rejects=UsageRejections(rt), decode=decode, screen=screen, after_commit=counted,
    )


def _usage_of(event: CloudEvent[Any]) -> Usage:
    return Usage(event, event.data, USAGE_TYPES[event.type])


class UsageRejections:
    """The rejection path of usage: `aimis.usage.rejected` with the original, once per record
    (inbox stream `usage-rejected`, key by position); rejected quantities count in the report."""

    stream = REJECTED_STREAM

    def __init__(self, rt: Runtime):
        self.rt = rt

    def key(self, bad: Bad) -> str:
        r = bad.record
        return domain.rejection_id(r.topic, r.partition, r.offset)

    async def __call__(self, conn: asyncpg.Connection, bad: list[Bad], now: datetime) -> list[CloudEvent[Any]]:
        refused = [b.info if isinstance(b.info, Refused) else Refused(Rejection(b.reason, b.detail), False)  # type: ignore[arg-type]
                   for b in bad]  # not Refused: a record the consumer base isolated as UNPROCESSABLE
        hourly = [(x.rejection, x.rejection.org_id, x.rejection.resource) for x in refused
                  if x.counted and x.rejection.org_id and x.rejection.resource]
        await store.add_hourly(conn, [org for _, org, _ in hourly], [res for _, _, res in hourly],
                               [r.bucket_time(now) for r, _, _ in hourly], [0] * len(hourly),
                               [r.counted_quantity for r, _, _ in hourly])
        return [self._event(b.record, x.rejection, self.key(b), now) for b, x in zip(bad, refused, strict=True)]

    def committed(self, bad: list[Bad]) -> None:
        for b in bad:
            REJECTED.labels(b.reason).inc()
            log.info("usage rejected", extra={"reason": b.reason, "topic": topics.USAGE})

    def _event(self, record: ConsumerRecord, x: Rejection, rid: str, now: Any) -> CloudEvent[Any]:
        subject = domain.rejection_subject(x, record.key)
        data = UsageRejectedData(reason=x.reason, detail=x.detail[:2000], received_at=now,
                                 headers=kept_headers(record), **original_fields(record, x.reason))
        return self.rt.event(subject, data, id=rid)


def orders(rt: Runtime) -> Subscription:
    """Learns which organisations have an agreement; other order events are ignored, bad records
    go to aimis.metering.dlq.v1."""

    async def learn(conn: asyncpg.Connection, events: list[CloudEvent[Any]], now: datetime) -> list[CloudEvent[Any]]:
        await store.add_known_orgs(conn, [(e.data.org_id, e.data.recorded_at) for e in events])
        return []

    return Subscription(
        topic=topics.ORDERS, accepts=(AgreementRecordedData,),
        ignores=tuple(m for m in models_on(topics.ORDERS) if m is not AgreementRecordedData),
        stream="orders", policy=learn, rejects=DeadLetters(rt),
    )
