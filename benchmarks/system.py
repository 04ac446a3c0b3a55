"""The performance protocol of SPEC 9, in one run on one broker and one database.

    .venv/bin/python benchmarks/system.py [--events 100000] [--warmup 20000] [--rounds 3] [--orgs 50]
        [--rate 5000] [--seconds 60] [--skip-latency] [--batches] [--record docs/benchmarks.md]

0. warm-up: `--warmup` events through the reference pipe before it is measured, and through the
   system before it is (a fresh broker's JIT, the database's caches, the services' first batches:
   both measured at their steady state, as a deployment runs after its first minute);

1. reference: one bare aiokafka process consumes N usage-shaped JSON records, parses each, produces
   each to another topic and commits offsets (records/s from the first produce to the last ack);
2. the system: N usage events for `--orgs` organisations with balance, produced to aimis.usage.v1
   while metering and entitlement run as `python -m services.<name>` processes; from the first
   produce to the N-th usage entry on aimis.ledger.v1 (events/s), and the ratio 2/1;
   1 and 2 are measured in turn `--rounds` times (3), and their medians compared: on a shared
   machine one measurement of either moved by a quarter from minute to minute (docs/benchmarks.md,
   twelfth pass), and a ratio of two single measurements moved with it. The reference runs beside
   the services, idle then (their CPU meanwhile is printed);
3. latency: usage paced at `--rate` events/s for `--seconds`; p50, p99 and max from produce to the
   ledger entry being readable on the topic (each event carries its send time in `attributes`);
4. each service's peak resident memory (VmHWM).
Phase 3 also counts PostgreSQL's own work meanwhile (checkpoints, autovacuums and autoanalyzes of
the services' tables): the latency's tail comes in bursts with it.
Phase 2 also prints each service's CPU per 1,000 events (steadier than rates on a shared machine),
and PostgreSQL's (the cluster's processes) and Kafka's when they run on this machine;
`--batches` prints each consumer's mean batch size and time and the outbox rows published.

Starts its own throwaway Kafka and PostgreSQL (tests/support/infra.py) unless AIMIS_KAFKA_BOOTSTRAP
and AIMIS_DATABASE_URL are both set; the services get a fresh database either way. Targets on a
2-core machine (SPEC 9): ratio >= 0.5, p99 <= 250 ms, <= 300 MiB per service. The services' logs
(WARNING and up) are removed after a run that finished, unless AIMIS_BENCH_KEEP_LOGS is set.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import math
import multiprocessing as mp
import os
import platform
import secrets
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition  # noqa: E402
from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # noqa: E402
from aiokafka.partitioner import DefaultPartitioner  # noqa: E402
from aiokafka.protocol.fetch import FetchRequest  # noqa: E402

from contracts import topics  # noqa: E402
from shared import kafka as shared_kafka  # noqa: E402
from shared.service import collect_rarely  # noqa: E402
from tests.support.infra import free_port, infra  # noqa: E402
from tests.support.services import ServiceProcess  # noqa: E402

PARTITIONS = 6  # the services' default (AIMIS topic_partitions)
USAGE_MARK = b'"type":"aimis.ledger.usage_'
SENT_MARK = b'"sent":'  # the paced usage's send time, which its ledger entry keeps in attributes
END_POLL_S = 0.005  # how often the watch asks the ledger's end offsets when it cannot fetch them (LedgerWatch)
WATCH_WAIT_MS = 100  # the longest the broker holds the watch's fetch when nothing new is readable
PRODUCER_KW = dict(acks="all", enable_idempotence=True, linger_ms=5, max_batch_size=256 * 1024)


def usage_record(org: str, i: int, occurred: datetime, sent: float | None = None) -> tuple[bytes, bytes]:
    """One usage event as the imaging platform sends it: (key, value)."""
    return org.encode(), _usage_value(org, i, occurred.isoformat(), sent)


def _usage_value(org: str, i: int, occurred: str, sent: float | None) -> bytes:
    """The JSON of one usage event, written out directly (the load generator makes one per event:
    json.dumps of a document cost it more than the aiokafka send; tests/unit/test_bench_load.py
    checks each parses as the usage event it stands for)."""
    kind = "ai_review" if i % 4 == 0 else "cloud_inspection"
    attributes = "" if sent is None else f',"attributes":{{"sent":"{sent!r}"}}'
    return (f'{{"specversion":"1.0","id":"bench-{os.urandom(16).hex()}","source":"/bench/platform",'
            f'"type":"aimis.usage.{kind}","subject":"{org}","time":"{occurred}","data":{{"quantity":{1 + i % 3},'
            f'"inspection_id":"insp-{i}","site_id":"site-1"{attributes}}}}}').encode()


class Load:
    """The load generator's producer: records go out as one closed record batch per partition
    (`shared.kafka.send_in_batches`, as the services' relays send), each key on the partition the
    default partitioner gives it, so each organisation's usage stays in order on one partition as
    with `send`, at a fraction of `send`'s CPU per record. It stands in for the imaging platform,
    which runs elsewhere: what it costs here is taken from the system under test."""

    def __init__(self, producer: AIOKafkaProducer, topic: str):
        self.producer, self.topic = producer, topic
        self.partition_of: dict[bytes, int] = {}
        self._parts: list[int] = []
        self.acks: list[asyncio.Future[object]] = []

    async def send(self, records: list[tuple[bytes, bytes]]) -> None:
        """Hand `records` (key, value) to the producer, in order per key; their acks join `acks`."""
        if not self._parts:
            self._parts = sorted(await self.producer.partitions_for(self.topic))
        by_partition: dict[int, list[tuple[bytes, bytes]]] = {}
        for key, value in records:
            partition = self.partition_of.get(key)
            if partition is None:
                partition = self.partition_of[key] = DefaultPartitioner()(key, self._parts, self._parts)
            by_partition.setdefault(partition, []).append((key, value))
        for partition, group in by_partition.items():
            self.acks += await shared_kafka.send_in_batches(self.producer, self.topic, partition, group)

    async def acked(self) -> None:
        await asyncio.gather(*self.acks)


# ------------------------------------------------------------------ child processes


def _produce_burst(bootstrap: str, topic: str, orgs: list[str], n: int, q: mp.Queue[float]) -> None:
    """Produce `n` usage records as fast as possible; put the first-send and last-ack times."""

    async def run() -> None:
        occurred = (datetime.now(timezone.utc) - timedelta(minutes=30)).isoformat()
        records = [(orgs[i % len(orgs)].encode(), _usage_value(orgs[i % len(orgs)], i, occurred, None))
                   for i in range(n)]
        p = AIOKafkaProducer(bootstrap_servers=bootstrap, **PRODUCER_KW)
        await p.start()
        try:
            load = Load(p, topic)
            await load.send([])  # the topic's partitions, before the clock starts
            q.put(time.time())
            for i in range(0, n, 5000):  # 5,000 at a time: sending starts before all are handed over
                await load.send(records[i:i + 5000])
            await load.acked()
            q.put(time.time())
        finally:
            await p.stop()

    asyncio.run(run())


def _produce_paced(bootstrap: str, orgs: list[str], rate: int, seconds: float, q: mp.Queue[tuple[int, float]]) -> None:
    """Produce usage at `rate` events/s for `seconds`, in 10 ms ticks; put the count sent and the
    CPU seconds that took. Each event carries the time its tick handed it to the producer."""

    async def run() -> None:
        p = AIOKafkaProducer(bootstrap_servers=bootstrap, **PRODUCER_KW)
        await p.start()
        load = Load(p, topics.USAGE)
        await load.send([])
        # The services' collector policy in the processes of the bench that take times during the
        # latency minute: with CPython's defaults, the paced load generator and the bench's own watch
        # each ran full collections of 90-117 ms during the minute (gc.callbacks), and every event
        # stamped or looked at across one was late by it (docs/benchmarks.md, twelfth pass).
        collect_rarely()
        sent, cpu0 = 0, time.process_time()
        try:
            t0 = time.monotonic()
            occurred = (datetime.now(timezone.utc) - timedelta(minutes=1)).isoformat()
            while (elapsed := time.monotonic() - t0) < seconds:
                due, now = int(elapsed * rate), time.time()
                tick = [(orgs[i % len(orgs)].encode(), _usage_value(orgs[i % len(orgs)], i, occurred, now))
                        for i in range(sent, due)]
                if tick:
                    await load.send(tick)
                    sent = due
                await asyncio.sleep(0.01)
            await load.acked()
        finally:
            await p.stop()
        q.put((sent, time.process_time() - cpu0))

    asyncio.run(run())


def _reference(bootstrap: str, src: str, dst: str, n: int, q: mp.Queue[object]) -> None:
    """The bare pipe: consume, parse, produce, commit; put 'ready', then the time of the n-th ack."""

    async def run() -> None:
        c = AIOKafkaConsumer(
            src, bootstrap_servers=bootstrap, group_id=f"bench-ref-{uuid.uuid4().hex[:8]}",
            enable_auto_commit=False, auto_offset_reset="earliest", max_poll_records=2000,
        )
        p = AIOKafkaProducer(bootstrap_servers=bootstrap, **PRODUCER_KW)
        await c.start()
        await p.start()
        try:
            while not c.assignment():
                await c.getmany(timeout_ms=100)
            q.put("ready")
            done = 0
            while done < n:
                batches = await c.getmany(timeout_ms=50, max_records=2000)
                futures = []
                for records in batches.values():
                    for r in records:
                        doc = json.loads(r.value)
                        futures.append(await p.send(dst, json.dumps(doc).encode(), key=r.key))
                await asyncio.gather(*futures)
                if batches:
                    await c.commit()
                done += len(futures)
            q.put(time.time())
        finally:
            await p.stop()
            await c.stop()

    asyncio.run(run())


# ------------------------------------------------------------------ the run


@dataclass
class Results:
    events: int
    reference_rps: float = 0.0
    system_eps: float = 0.0
    latency: dict[str, float] = field(default_factory=dict)
    latency_note: str = ""
    rss_mib: dict[str, float] = field(default_factory=dict)
    cpu_ms_per_1k: dict[str, float] = field(default_factory=dict)  # CPU per 1,000 events in phase 2
    rounds: list[tuple[float, float]] = field(default_factory=list)  # (reference, system) of each round
    cores: str = ""  # CPU used in phase 3, per process group, in cores
    maintenance: str = ""  # PostgreSQL's own work during phase 3 (`maintenance`)

    @property
    def ratio(self) -> float:
        return self.system_eps / self.reference_rps if self.reference_rps else 0.0


async def create_topics(bootstrap: str, names: list[str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(t, PARTITIONS, 1) for t in names])
    finally:
        await admin.close()


async def reference(bootstrap: str, n: int, orgs: list[str]) -> float:
    run = uuid.uuid4().hex[:8]
    src, dst = f"bench.ref.in.{run}", f"bench.ref.out.{run}"
    await create_topics(bootstrap, [src, dst])
    ctx = mp.get_context("spawn")
    q_ref: mp.Queue[object] = ctx.Queue()
    q_prod: mp.Queue[float] = ctx.Queue()
    ref = ctx.Process(target=_reference, args=(bootstrap, src, dst, n, q_ref), daemon=True)
    ref.start()
    if q_ref.get(timeout=120) != "ready":
        raise RuntimeError("reference pipe did not start")
    prod = ctx.Process(target=_produce_burst, args=(bootstrap, src, orgs, n, q_prod), daemon=True)
    prod.start()
    t0 = q_prod.get(timeout=120)
    t_end = float(q_ref.get(timeout=600))  # type: ignore[arg-type]
    prod.join(timeout=60)
    ref.join(timeout=60)
    return n / (t_end - t0)


async def consumer_at_end(bootstrap: str, topic: str) -> AIOKafkaConsumer:
    """A consumer of every partition of `topic`, from its current end (no group)."""
    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await c.start()
    parts = c.partitions_for_topic(topic)
    if not parts:
        await c._client.force_metadata_update()  # noqa: SLF001 - metadata of an unsubscribed topic
        parts = c.partitions_for_topic(topic) or set()
    tps = [TopicPartition(topic, p) for p in sorted(parts)]
    c.assign(tps)
    await c.seek_to_end(*tps)
    for tp in tps:
        await c.position(tp)
    return c


class LedgerWatch:
    """Reads aimis.ledger.v1 from its current end: counts usage entries, keeps latencies."""

    def __init__(self, bootstrap: str, topic: str = topics.LEDGER):
        self.bootstrap, self.topic = bootstrap, topic
        self.consumer: AIOKafkaConsumer | None = None
        # End offsets are learnt through a consumer of its own, with no partition assigned (its
        # client sends the watch's fetches, `_next_ends`): a consumer that fetches records answers
        # them after its fetch in flight, which the broker holds up to fetch_max_wait_ms (500 ms).
        self.looker: AIOKafkaConsumer | None = None
        # (usage id, sent, entitlement's deduction, its relay's send, readable), epoch seconds
        self.parts: list[tuple[str, float, float, float, float]] = []

    async def start(self) -> None:
        self.consumer = await consumer_at_end(self.bootstrap, self.topic)
        self.consumer.pause(*self.consumer.assignment())  # read only once entries are readable
        self.looker = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False)
        await self.looker.start()

    async def stop(self) -> None:
        for c in (self.consumer, self.looker):
            if c is not None:
                await c.stop()

    async def _ends(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        assert self.looker is not None
        return await self.looker.end_offsets(tps)

    async def _next_ends(self, tps: list[TopicPartition],
                         known: dict[TopicPartition, int]) -> dict[TopicPartition, int]:
        """The ledger's end offsets as soon as any partition's has moved past `known` (at the latest
        after WATCH_WAIT_MS): one fetch from `known`, which the broker holds until an entry is
        readable past it and answers with every partition's high watermark; the records the
        answer brings (at most one batch) are not read. Asked every 5 ms instead (ListOffsets,
        `_ends`: 156 questions a second on a quiet broker cost this process 0.11 and the broker
        0.13 of a core), the watch took 0.08 of a core from the latency minute, now 0.03
        (docs/benchmarks.md, thirteenth pass); this asks once per change, and times each change
        as it is answered rather than up to 5 ms late.
        Partitions with more than one leader, or an error, fall back to asking, END_POLL_S apart."""
        assert self.looker is not None
        client = self.looker._client  # noqa: SLF001 - aiokafka's client: a fetch that reads no records
        leaders = {client.cluster.leader_for_partition(tp) for tp in tps}
        node = next(iter(leaders)) if len(leaders) == 1 else None
        if node is None or node < 0:
            return await self._ends_after_a_poll(tps)
        request = FetchRequest(WATCH_WAIT_MS, 1, 1, 0, [(self.topic, [(tp.partition, known[tp], 1) for tp in tps])])
        response = await client.send(node, request)
        out = dict(known)
        for topic, partitions in response.topics:
            for partition, error_code, highwater, *_ in partitions:
                if error_code:
                    return await self._ends_after_a_poll(tps)
                tp = TopicPartition(topic, partition)
                if tp in out and highwater > out[tp]:
                    out[tp] = highwater
        return out

    async def _ends_after_a_poll(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        """`_next_ends` when it cannot fetch: the end offsets asked (ListOffsets), END_POLL_S on."""
        await asyncio.sleep(END_POLL_S)
        return await self._ends(tps)

    async def count_until(self, n: int, timeout_s: float) -> tuple[int, float]:
        """Wait for n usage entries after the consumer's position; (count seen, time the n-th was
        readable). The ledger's end offsets are watched first: reading every entry as it arrived
        cost this process 0.09 of a core during phase 2 (0.64 s of CPU in 7.3 s), taken from the
        system under test, which the reference pipe does not pay (it times its own acks). Once n
        entries are readable, they are read, off the clock: when n usage entries are among them,
        the time they became readable stands; otherwise the reading goes on, timed as it reads,
        until n usage entries were read."""
        c = self.consumer
        assert c is not None
        deadline = time.monotonic() + timeout_s
        tps = sorted(c.assignment())
        start = {tp: await c.position(tp) for tp in tps}
        window: dict[TopicPartition, int] = {}  # the end offsets when n entries were readable
        readable_at = 0.0
        ends = dict(start)
        while time.monotonic() < deadline:
            ends = await self._next_ends(tps, ends)
            if sum(ends[tp] - start[tp] for tp in tps) >= n:
                window, readable_at = ends, time.time()
                break
        seen = in_window = 0
        t_end = time.time()
        c.resume(*tps)
        try:
            while seen < n and time.monotonic() < deadline:
                batches = await c.getmany(timeout_ms=100, max_records=5000)
                for tp, records in batches.items():
                    usage = [r for r in records if USAGE_MARK in r.value]
                    seen += len(usage)
                    in_window += sum(1 for r in usage if r.offset < window.get(tp, 0))
                t_end = time.time()
        finally:
            c.pause(*tps)
        return seen, (readable_at if in_window >= n else t_end)

    async def latencies(self, expected: asyncio.Future[int], timeout_s: float,
                        timed_end: Callable[[], None] = lambda: None) -> list[float]:
        """Latency (s) of every usage entry carrying a send time, until `expected` of them are
        readable: from its send time to the first answer about the ledger's end offsets that
        showed it readable on the topic (SPEC 9; `_next_ends`). The entries themselves are read
        once `expected` are readable, off the clock. Reading each entry as it arrived, as this did
        before, cost this process 0.10-0.20 of a core during the minute, taken from the system
        under test, and its own delays were in the measure (its slowest 1% 23-137 ms).
        `timed_end` is called when the timed part ends, before the first entry is read."""
        c = self.consumer
        assert c is not None
        tps = sorted(c.assignment())
        start = {tp: await c.position(tp) for tp in tps}
        ends = dict(start)
        shown: dict[TopicPartition, list[tuple[int, float]]] = {tp: [] for tp in tps}  # (end offset, first seen)
        out: list[float] = []
        deadline: float | None = None

        async def read_readable() -> None:  # the entries readable so far, read off the clock
            if not out:
                timed_end()
            out.extend(self._read_upto(await self._records_upto(ends), shown))

        while True:
            if expected.done():
                deadline = deadline or time.monotonic() + timeout_s
                if sum(ends[tp] - start[tp] for tp in tps) >= expected.result() - len(out):
                    # enough entries readable, if all are usage entries: read them (untimed)
                    await read_readable()
                    if len(out) >= expected.result():
                        break
                    start = dict(ends)  # others among them: the rest are still to come
                if time.monotonic() > deadline:  # some never came: the latencies of those that did
                    await read_readable()
                    break
            now_ends = await self._next_ends(tps, ends)
            seen = time.time()
            for tp in tps:
                if now_ends[tp] > ends[tp]:
                    shown[tp].append((now_ends[tp], seen))
                    ends[tp] = now_ends[tp]
        return out

    async def _records_upto(self, ends: dict[TopicPartition, int]) -> list[ConsumerRecord]:
        """The records from the consumer's position up to `ends` (exclusive), each partition's."""
        c = self.consumer
        assert c is not None
        records: list[ConsumerRecord] = []
        c.resume(*ends)
        try:
            while behind := [tp for tp, end in ends.items() if await c.position(tp) < end]:
                for tp, batch in (await c.getmany(*behind, timeout_ms=500, max_records=5000)).items():
                    records += [r for r in batch if r.offset < ends[tp]]
                    if batch and batch[-1].offset >= ends[tp]:
                        c.seek(tp, ends[tp])  # the rest is read with the next entries
        finally:
            c.pause(*ends)
        return records

    def _read_upto(self, records: list[ConsumerRecord], shown: dict[TopicPartition, list[tuple[int, float]]],
                   ) -> list[float]:
        """The latencies of the usage entries among `records` that carry a send time, each readable
        at the first look at the end offsets past its offset."""
        out: list[float] = []
        for r in records:
            if USAGE_MARK not in r.value or SENT_MARK not in r.value:
                continue
            looks = shown[TopicPartition(r.topic, r.partition)]
            readable = looks[bisect.bisect_right(looks, (r.offset, math.inf))][1]
            doc = json.loads(r.value)
            sent = float(doc["data"]["attributes"]["sent"])
            out.append(readable - sent)
            # where it went: to entitlement's deduction (the entry's time), to the relay's send (the
            # record's timestamp), to being readable
            deducted = datetime.fromisoformat(doc["time"]).timestamp()
            self.parts.append((doc["data"]["usage_id"], sent, deducted, r.timestamp / 1000, readable))
        return out


async def setup_orgs(bootstrap: str, dsn: str, orgs: list[str]) -> None:
    """Agreements and a large paid order (inspections + AI reviews) for each org, straight onto
    aimis.orders.v1 as the order service would write them; wait until both services have them."""
    now = datetime.now(timezone.utc)
    p = AIOKafkaProducer(bootstrap_servers=bootstrap, **PRODUCER_KW)
    await p.start()
    try:
        for org in orgs:
            for doc in (_agreement(org, now), _order_paid(org, now)):
                await p.send_and_wait(topics.ORDERS, json.dumps(doc).encode(), key=org.encode())
    finally:
        await p.stop()
    conn = await asyncpg.connect(dsn)
    try:
        deadline = time.monotonic() + 120
        while True:
            known = await conn.fetchval("SELECT count(*) FROM metering.known_orgs")
            lots = await conn.fetchval("SELECT count(*) FROM entitlement.lots")
            if known >= len(orgs) and lots >= 2 * len(orgs):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"set-up not applied in 120 s: {known} orgs known, {lots} lots")
            await asyncio.sleep(0.2)
    finally:
        await conn.close()


def _envelope(org: str, kind: str, data: dict[str, object], now: datetime) -> dict[str, object]:
    return {"specversion": "1.0", "id": str(uuid.uuid4()), "source": "/bench/order",
            "type": f"aimis.orders.{kind}", "subject": org, "time": now.isoformat(), "data": data}


def _agreement(org: str, now: datetime) -> dict[str, object]:
    return _envelope(org, "agreement_recorded", {
        "org_id": org, "agreement_ref": "bench", "signed_at": now.isoformat(), "recorded_at": now.isoformat(),
    }, now)


def _order_paid(org: str, now: datetime) -> dict[str, object]:
    paid = (now - timedelta(days=1)).isoformat()
    lines = [
        {"line": 0, "sku": "CI-QTY", "quantity": 10_000_000, "storage_years": 5, "price": "0.00"},
        {"line": 1, "sku": "AI-QTY", "quantity": 10_000_000, "price": "0.00"},
    ]
    return _envelope(org, "order_paid", {
        "order_id": f"{org}-o1", "org_id": org, "lines": lines, "total": "0.00",
        "price_book_version": "bench", "placed_at": paid, "paid_at": paid, "payment_ref": "bench",
    }, now)


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def batch_sizes(url: str) -> str:
    """Mean consumer batch (records, seconds) per topic and outbox rows published, from /metrics."""
    import httpx

    async with httpx.AsyncClient() as c:
        text = (await c.get(f"{url}/metrics")).text
    sums: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(("aimis_batch_seconds_sum", "aimis_batch_seconds_count", "aimis_outbox_published_total")):
            name, value = line.rsplit(" ", 1)
            sums[name] = sums.get(name, 0.0) + float(value)
    out = []
    for name, count in sums.items():
        if name.startswith("aimis_batch_seconds_count") and count:
            labels = name.removeprefix("aimis_batch_seconds_count")
            records = sum(float(v) for k, v in [ln.rsplit(" ", 1) for ln in text.splitlines()
                                                 if ln.startswith("aimis_messages_total") and 'outcome="ok"' in ln
                                                 and labels.strip("{}").split(",")[1] in ln])
            out.append(f"{labels} {count:,.0f} batches, {records / count:,.0f} records and "
                       f"{sums['aimis_batch_seconds_sum' + labels] / count * 1000:,.0f} ms each")
    out += [f"{k} {v:,.0f}" for k, v in sums.items() if k.startswith("aimis_outbox")]
    return "; ".join(out)


def cpu_s(pid: int) -> float:
    """User + system CPU seconds a process has used (less noisy than rates on a shared machine)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def infra_pids(conn_pid: int, bootstrap: str) -> dict[str, list[int]]:
    """The database server's processes (the postmaster, parent of our backend, and its children)
    and the broker's (the process listening on the bootstrap port), when they run on this machine;
    {} when they cannot be found (containers, another host)."""
    procs: dict[int, int] = {}  # pid -> ppid
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                procs[int(d.name)] = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                pass
    out: dict[str, list[int]] = {}
    master = procs.get(conn_pid)
    if master:
        out["postgres"] = [master] + [pid for pid, ppid in procs.items() if ppid == master]
    port = int(bootstrap.rsplit(":", 1)[1]) if ":" in bootstrap else 0
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            for line in Path(table).read_text().splitlines()[1:]:
                cols = line.split()
                if cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:  # LISTEN
                    inodes.add(cols[9])
        except (OSError, IndexError, ValueError):
            pass
    for pid in procs:
        try:
            fds = {os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
        except OSError:
            continue
        if any(f"socket:[{i}]" in fds for i in inodes):
            out["kafka"] = [pid]
            break
    return out


def machine_cpu() -> tuple[float, float, float]:
    """The machine's (busy, steal, total) CPU seconds since boot, all cores (/proc/stat)."""
    v = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle, steal = v[3] + v[4], v[7] if len(v) > 7 else 0
    tick = os.sysconf("SC_CLK_TCK")
    total = sum(v[:8])
    return (total - idle - steal) / tick, steal / tick, total / tick


class CpuMeter:
    """CPU used by named groups of processes over a phase, in cores (seconds per second), and the
    machine's busy and stolen share meanwhile: where the two cores went while latency was measured."""

    def __init__(self, groups: dict[str, list[int]]):
        self.groups = groups
        self.t0 = time.monotonic()
        self.before = {k: pids_cpu_s(v) for k, v in groups.items()}
        self.machine0 = machine_cpu()

    def cores(self, measured: dict[str, float]) -> str:
        """`measured`: CPU seconds of processes that reported their own (and are gone by now)."""
        elapsed = time.monotonic() - self.t0
        parts = [f"{k} {v / elapsed:.2f}" for k, v in measured.items()]
        for k, pids in self.groups.items():
            used = sum(t - self.before[k].get(pid, 0.0) for pid, t in pids_cpu_s(pids).items())
            parts.append(f"{k} {used / elapsed:.2f}")
        busy, steal, total = (b - a for a, b in zip(self.machine0, machine_cpu(), strict=True))
        cores = os.cpu_count() or 1
        return (", ".join(parts) + f"; the machine {busy / total * cores:.2f} of {cores} busy, "
                f"{steal / total * cores:.2f} stolen by the host")


def pids_cpu_s(pids: list[int]) -> dict[int, float]:
    out = {}
    for pid in pids:
        try:
            out[pid] = cpu_s(pid)
        except OSError:  # exited
            pass
    return out


class DeductionWatch:
    """Reads aimis.metering.deductions.v1 from its current end in the background: for each usage
    id, when metering's batch took it (`received_at`) and when its relay sent it (the record's
    timestamp). For the latency's legs only (--batches)."""

    def __init__(self, bootstrap: str):
        self.bootstrap = bootstrap
        self.seen: dict[str, tuple[float, float]] = {}
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        c = await consumer_at_end(self.bootstrap, topics.DEDUCTIONS)

        async def read() -> None:
            try:
                while True:
                    for records in (await c.getmany(timeout_ms=100, max_records=5000)).values():
                        for r in records:
                            data = json.loads(r.value)["data"]
                            received = datetime.fromisoformat(data["received_at"]).timestamp()
                            self.seen[data["usage_id"]] = (received, r.timestamp / 1000)
            finally:
                await c.stop()

        self.task = asyncio.create_task(read())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)


def latency_parts(parts: list[tuple[str, float, float, float, float]], metering: dict[str, tuple[float, float]]) -> str:
    """p50/p99 of each leg (produce -> metering's batch -> its relay's send -> entitlement's deduction
    -> its relay's send -> read), and the worst latency in each 5 s of the run (a periodic stall
    shows as a pattern)."""
    rows = [(sent, *metering[u], deducted, relayed, read) for u, sent, deducted, relayed, read in parts
            if u in metering]
    legs = []
    names = ("to metering's batch", "to its relay's send", "to entitlement's deduction", "to its relay's send",
             "to read")
    for i, name in enumerate(names):
        v = sorted(r[i + 1] - r[i] for r in rows)
        if v:
            legs.append(f"{name} p50 {percentile(v, 0.5) * 1000:,.0f} / p99 {percentile(v, 0.99) * 1000:,.0f} ms")
    tot = sorted(r[5] - r[0] for r in rows)
    if tot:
        cut = percentile(tot, 0.99)
        slow = [r for r in rows if r[5] - r[0] >= cut]
        means = (sum(r[i + 1] - r[i] for r in slow) / len(slow) * 1000 for i in range(5))
        legs.append("the slowest 1%'s legs, mean ms: " + " / ".join(f"{m:.0f}" for m in means))
    t0 = min(p[1] for p in parts)
    worst: dict[int, float] = {}
    for p in parts:
        w = int((p[1] - t0) // 5)
        worst[w] = max(worst.get(w, 0.0), p[4] - p[1])
    return "legs: " + "; ".join(legs) + "\n   worst per 5 s (ms): " + " ".join(
        f"{worst[w] * 1000:.0f}" for w in sorted(worst))


async def maintenance(conn: asyncpg.Connection) -> tuple[int, int, int]:
    """PostgreSQL's own work so far: checkpoints (the server's), and autovacuums and autoanalyzes
    of the services' tables (in `conn`'s database). The latency's tail comes in bursts that matched
    these in PostgreSQL's log (docs/benchmarks.md, seventh pass); counted here, every run says so."""
    try:  # PostgreSQL 17 moved the checkpoint counters
        checkpoints = await conn.fetchval("SELECT num_timed + num_requested FROM pg_stat_checkpointer")
    except asyncpg.UndefinedTableError:
        checkpoints = await conn.fetchval("SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter")
    row = await conn.fetchrow(
        """SELECT coalesce(sum(autovacuum_count), 0), coalesce(sum(autoanalyze_count), 0)
           FROM pg_stat_all_tables WHERE schemaname IN ('metering', 'entitlement')""")
    return int(checkpoints), int(row[0]), int(row[1])


def percentile(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


async def bench(bootstrap: str, base_dsn: str, args: argparse.Namespace) -> Results:
    res = Results(events=args.events)
    orgs = [f"bench-{uuid.uuid4().hex[:6]}-{i:02d}" for i in range(args.orgs)]
    await shared_kafka.ensure_topics(bootstrap, PARTITIONS)

    if args.warmup:  # the broker's JIT and caches warmed for the reference as for the system (below)
        await reference(bootstrap, args.warmup, orgs)

    db = f"bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(base_dsn)
    await admin.execute(f"CREATE DATABASE {db}")
    dsn = f"{base_dsn.rsplit('/', 1)[0]}/{db}"
    env = {
        "AIMIS_KAFKA_BOOTSTRAP": bootstrap, "AIMIS_DATABASE_URL": dsn, "AIMIS_LOG_LEVEL": "WARNING",
        "AIMIS_AUTH_SECRET": secrets.token_hex(32), "AIMIS_ENV": "development",
        "AIMIS_TOPIC_PARTITIONS": str(PARTITIONS),
    }
    logs = Path(tempfile.mkdtemp(prefix="aimis-bench-"))  # removed after a run that finished
    finished = False
    procs = [ServiceProcess(name, {**env, f"AIMIS_{name.upper()}_PORT": str(free_port())}, logs)
             for name in ("metering", "entitlement")]
    watch = LedgerWatch(bootstrap)
    try:
        for p in procs:
            await p.start()
        await setup_orgs(bootstrap, dsn, orgs)
        await watch.start()

        ctx = mp.get_context("spawn")

        async def burst(n: int, what: str) -> tuple[float, float]:
            """`n` usage events produced at once: (first produce, n-th usage entry readable)."""
            q: mp.Queue[float] = ctx.Queue()
            prod = ctx.Process(target=_produce_burst, args=(bootstrap, topics.USAGE, orgs, n, q), daemon=True)
            prod.start()
            t0 = await asyncio.to_thread(q.get, True, 120)
            seen, t_end = await watch.count_until(n, args.timeout)
            prod.join(timeout=60)
            if seen < n:
                raise SystemExit(f"{what}: only {seen} of {n} usage entries on the ledger in {args.timeout:.0f} s")
            return t0, t_end

        if args.warmup:  # the services, the database and the broker's paths of the system warmed
            await burst(args.warmup, "warm-up")
        backend = await admin.fetchval("SELECT pg_backend_pid()")
        cpu_used: dict[str, float] = {}
        for i in range(args.rounds):  # the reference and the system in turn, `rounds` times
            idle0 = {p.name: cpu_s(p.proc.pid) for p in procs if p.proc is not None}
            t_ref = time.monotonic()
            res.rounds.append((await reference(bootstrap, args.events, orgs), 0.0))
            idle = sum(cpu_s(p.proc.pid) - idle0[p.name] for p in procs if p.proc is not None)
            idle_cores = idle / (time.monotonic() - t_ref)
            cpu0 = {p.name: cpu_s(p.proc.pid) for p in procs if p.proc is not None}
            others0 = {k: pids_cpu_s(v) for k, v in infra_pids(backend, bootstrap).items()}
            t0, t_end = await burst(args.events, "the system")
            res.rounds[-1] = (res.rounds[-1][0], args.events / (t_end - t0))
            for p in procs:
                if p.proc is not None:
                    cpu_used[p.name] = cpu_used.get(p.name, 0.0) + cpu_s(p.proc.pid) - cpu0[p.name]
            for k, pids in infra_pids(backend, bootstrap).items():  # a process started since counts whole
                used = sum(t - others0.get(k, {}).get(pid, 0.0) for pid, t in pids_cpu_s(pids).items())
                cpu_used[k] = cpu_used.get(k, 0.0) + used
            ref_rps, sys_eps = res.rounds[-1]
            print(f"   round {i + 1}: reference {ref_rps:,.0f} records/s (the idle services beside it: "
                  f"{idle_cores:.2f} cores), system {sys_eps:,.0f} events/s, ratio {sys_eps / ref_rps:.2f}",
                  flush=True)
        res.reference_rps = statistics.median(r for r, _ in res.rounds)
        res.system_eps = statistics.median(s for _, s in res.rounds)
        res.cpu_ms_per_1k = {k: v * 1e6 / (args.events * args.rounds) for k, v in cpu_used.items()}
        print(f"1. reference (bare aiokafka consume-parse-produce-commit): {res.reference_rps:,.0f} records/s "
              f"(median of {args.rounds})", flush=True)
        print(f"2. system (usage topic -> ledger, metering + entitlement processes, {args.orgs} orgs): "
              f"{res.system_eps:,.0f} events/s (median of {args.rounds}); ratio {res.ratio:.2f}; CPU per 1,000 "
              "events: " + ", ".join(f"{k} {v:,.0f} ms" for k, v in res.cpu_ms_per_1k.items()), flush=True)

        if not args.skip_latency:
            collect_rarely()  # this process watches the ledger's end offsets during the minute (see _produce_paced)
            deductions = DeductionWatch(bootstrap)
            if args.batches:
                await deductions.start()
            q2: mp.Queue[tuple[int, float]] = ctx.Queue()
            pp = ctx.Process(target=_produce_paced, args=(bootstrap, orgs, args.rate, args.seconds, q2), daemon=True)
            pp.start()
            meter = CpuMeter({
                **{p.name: [p.proc.pid] for p in procs if p.proc is not None},
                **infra_pids(backend, bootstrap),
                "bench (reader)": [os.getpid()],
            })
            generator_cpu_s = 0.0
            expected: asyncio.Future[int] = asyncio.get_running_loop().create_future()

            async def wait_count() -> None:
                nonlocal generator_cpu_s
                sent, generator_cpu_s = await asyncio.to_thread(q2.get, True, args.seconds + 120)
                expected.set_result(sent)

            waiter = asyncio.create_task(wait_count())
            in_db = await asyncpg.connect(dsn)
            try:
                before = await maintenance(in_db)
                timed: list[str] = []  # where the cores went while latency was timed (not while read after)
                lat = sorted(await watch.latencies(expected, timeout_s=60, timed_end=lambda: timed.append(
                    meter.cores({"load generator": generator_cpu_s}))))
                await waiter
                work = [b - a for a, b in zip(before, await maintenance(in_db), strict=True)]
            finally:
                await in_db.close()
            res.maintenance = (f"{work[0]} checkpoint(s) started, {work[1]} autovacuum(s) and {work[2]} "
                               "autoanalyze(s) of the services' tables")
            await deductions.stop()
            pp.join(timeout=60)
            sent = expected.result()
            if lat:
                res.latency = {"p50": percentile(lat, 0.5) * 1000, "p99": percentile(lat, 0.99) * 1000,
                               "max": lat[-1] * 1000}
            if len(lat) < sent:
                res.latency_note = f"only {len(lat)} of {sent} entries arrived within 60 s after the last send"
            print(f"3. latency at {args.rate:,}/s for {args.seconds:.0f} s ({sent:,} events): "
                  + ", ".join(f"{k} {v:,.0f} ms" for k, v in res.latency.items())
                  + (f" — {res.latency_note}" if res.latency_note else ""), flush=True)
            print(f"   PostgreSQL's own work meanwhile: {res.maintenance}", flush=True)
            res.cores = timed[0] if timed else meter.cores({"load generator": generator_cpu_s})
            print(f"   CPU meanwhile, in cores: {res.cores}", flush=True)
            if args.batches and watch.parts:
                print("   " + latency_parts(watch.parts, deductions.seen), flush=True)
            if args.dump:
                with args.dump.open("w") as f:
                    for u, *times in watch.parts:
                        json.dump([*deductions.seen.get(u, (None, None)), *times], f)
                        f.write("\n")

        for p in procs:
            assert p.proc is not None
            res.rss_mib[p.name] = peak_rss_mib(p.proc.pid)
            if args.batches:
                print(f"   {p.name}: " + await batch_sizes(p.url), flush=True)
        print("4. peak RSS: " + ", ".join(f"{k} {v:,.0f} MiB" for k, v in res.rss_mib.items()), flush=True)
        finished = True
    finally:
        await watch.stop()
        for p in procs:
            p.stop()
        await admin.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
        await admin.close()
        if finished and not os.environ.get("AIMIS_BENCH_KEEP_LOGS"):
            shutil.rmtree(logs, ignore_errors=True)
        else:
            print(f"the services' logs are kept in {logs}", flush=True)
    return res


def verdict(res: Results, args: argparse.Namespace) -> list[str]:
    out = [f"ratio {res.ratio:.2f} {'>=' if res.ratio >= 0.5 else '<'} 0.5"]
    if res.latency:
        ok = res.latency["p99"] <= 250 and not res.latency_note
        out.append(f"p99 {res.latency['p99']:,.0f} ms {'meets' if ok else 'misses'} 250 ms")
    if res.rss_mib:
        top = max(res.rss_mib.values())
        out.append(f"peak RSS {top:,.0f} MiB {'<=' if top <= 300 else '>'} 300 MiB")
    return out


def record(path: Path, res: Results, args: argparse.Namespace, how: str) -> None:
    lines = [
        f"\n### {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC — `make bench` ({how})\n",
        f"Machine: {platform.node()}, {os.cpu_count()} cores, {platform.machine()}, "
        f"Python {platform.python_version()}.",
        f"Git: `{os.popen('git -C ' + str(ROOT) + ' rev-parse --short HEAD').read().strip()}`.\n",
        "| measure | value |", "|---|---|",
        f"| reference pipe (median of {len(res.rounds)}) | {res.reference_rps:,.0f} records/s |",
        f"| system, {args.events:,} events, {args.orgs} orgs (median of {len(res.rounds)}) "
        f"| {res.system_eps:,.0f} events/s |",
        f"| ratio | {res.ratio:.2f} |",
        f"| rounds (reference / system) | {'; '.join(f'{r:,.0f} / {s:,.0f}' for r, s in res.rounds)} |",
    ]
    for k, v in res.cpu_ms_per_1k.items():
        lines.append(f"| CPU of {k} per 1,000 events (phase 2) | {v:,.0f} ms |")
    for k, v in res.latency.items():
        lines.append(f"| latency {k} at {args.rate:,}/s for {args.seconds:.0f} s | {v:,.0f} ms |")
    if res.latency_note:
        lines.append(f"| latency note | {res.latency_note} |")
    if res.maintenance:
        lines.append(f"| PostgreSQL's own work during the latency run | {res.maintenance} |")
    if res.cores:
        lines.append(f"| CPU during the latency run, in cores | {res.cores} |")
    for k, v in res.rss_mib.items():
        lines.append(f"| peak RSS {k} | {v:,.0f} MiB |")
    with path.open("a") as f:
        f.write("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--warmup", type=int, default=20_000,
                    help="events through the reference pipe and through the system, unmeasured, before each "
                         "is measured")
    ap.add_argument("--rounds", type=lambda v: max(1, int(v)), default=3,
                    help="the reference and the system measured in turn this often; their medians are compared")
    ap.add_argument("--orgs", type=int, default=50)
    ap.add_argument("--rate", type=int, default=5_000)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--skip-latency", action="store_true")
    ap.add_argument("--batches", action="store_true", help="print each consumer's mean batch size and time")
    ap.add_argument("--dump", type=Path, help="with --batches: each entry's times as JSON lines ([metering's "
                    "batch, its relay's send, sent, entitlement's deduction, its relay's send, read])")
    ap.add_argument("--record", type=Path, help="append the results to this markdown file")
    args = ap.parse_args()

    with infra() as i:
        print(f"[infra] kafka={i.bootstrap} postgres={i.dsn} via {i.how}", flush=True)
        res = asyncio.run(bench(i.bootstrap, i.dsn, args))
        print("verdict: " + "; ".join(verdict(res, args)))
        if args.record:
            record(args.record, res, args, i.how)


if __name__ == "__main__":
    main()
