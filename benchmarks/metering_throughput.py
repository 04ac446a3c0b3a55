"""Metering throughput: usage events/second from the first produce to the last deduction published.

    .venv/bin/python benchmarks/metering_throughput.py [--events 100000] [--orgs 4]
        [--batch-max-records 2000] [--batch-timeout-ms 50]

Uses AIMIS_KAFKA_BOOTSTRAP / AIMIS_DATABASE_URL when both are set, else starts deploy/local on free
ports (tests.support.infra). The service runs in this process on a new database and a new consumer
group (whose offsets start at the topics' ends, so no earlier traffic is replayed); a child process
plays the imaging platform and produces the usage events keyed by org. The end time is when every
deduction_requested row of the outbox is seen sent (`outbox_state`, polled every 0.2 s; the relay
marks rows after Kafka acknowledged them).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import secrets
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition  # noqa: E402

from contracts import topics  # noqa: E402
from contracts.events import (  # noqa: E402
    USAGE_AI_REVIEW,
    USAGE_CLOUD_INSPECTION,
    AgreementRecordedData,
    new_event,
)
from shared import kafka as shared_kafka  # noqa: E402
from shared.config import Settings  # noqa: E402


def _produce(bootstrap: str, orgs: list[str], n: int, started: mp.Queue[float]) -> None:
    """Child process: the imaging platform, producing `n` usage events round-robin over `orgs`."""

    async def run() -> None:
        base = datetime.now(timezone.utc) - timedelta(hours=1)
        payloads = []
        for i in range(n):
            org = orgs[i % len(orgs)]
            ev = {
                "specversion": "1.0", "id": f"bench-{uuid.uuid4().hex}", "source": "/bench",
                "type": USAGE_CLOUD_INSPECTION if i % 4 else USAGE_AI_REVIEW,
                "subject": org, "time": (base + timedelta(milliseconds=i)).isoformat(),
                "data": {"quantity": 1 + i % 3, "inspection_id": f"insp-{i}"},
            }
            payloads.append((org.encode(), json.dumps(ev).encode()))
        p = AIOKafkaProducer(
            bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=20,
            max_batch_size=512 * 1024,
        )
        await p.start()
        try:
            started.put(time.time())
            futures = [await p.send(topics.USAGE, value, key=key) for key, value in payloads]
            await p.flush()
            await asyncio.gather(*futures)
            started.put(time.time())
        finally:
            await p.stop()

    asyncio.run(run())


async def _start_group_at_end(bootstrap: str, group: str) -> None:
    """Commit the new group's offsets at the current ends of the topics metering reads."""
    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await c.start()
    try:
        tps = [TopicPartition(t, p) for t in (topics.USAGE, topics.ORDERS)
               for p in sorted(c.partitions_for_topic(t) or await _partitions(c, t))]
        c.assign(tps)
        ends = await c.end_offsets(tps)
        await c.commit({tp: off for tp, off in ends.items()})
    finally:
        await c.stop()


async def _partitions(c: AIOKafkaConsumer, topic: str) -> set[int]:
    await c._client.force_metadata_update()  # noqa: SLF001 - metadata for a topic not subscribed
    return c.partitions_for_topic(topic) or set()


async def bench(bootstrap: str, base_dsn: str, args: argparse.Namespace) -> None:
    from services.metering.app import create_app

    db = f"bench_metering_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(base_dsn)
    await admin.execute(f"CREATE DATABASE {db}")
    dsn = f"{base_dsn.rsplit('/', 1)[0]}/{db}"
    settings = Settings(
        kafka_bootstrap=bootstrap, database_url=dsn, log_level="WARNING", auth_secret=secrets.token_hex(32),
        batch_max_records=args.batch_max_records, batch_timeout_ms=args.batch_timeout_ms,
    )
    group = f"bench-metering-{uuid.uuid4().hex[:8]}"
    await shared_kafka.ensure_topics(bootstrap, settings.topic_partitions)
    await _start_group_at_end(bootstrap, group)
    rt = create_app(settings, group_id=group).state.runtime
    await rt.start()
    try:
        orgs = [f"bench-{uuid.uuid4().hex[:8]}" for _ in range(args.orgs)]
        now = datetime.now(timezone.utc)
        for org in orgs:
            data = AgreementRecordedData(org_id=org, agreement_ref="bench", signed_at=now, recorded_at=now)
            ev = new_event(org, data, "/bench")
            await shared_kafka.publish_events(rt.broker, [ev])
        while await rt.pool.fetchval("SELECT count(*) FROM known_orgs") < len(orgs):
            await asyncio.sleep(0.1)

        started: mp.Queue[float] = mp.get_context("spawn").Queue()
        child = mp.get_context("spawn").Process(
            target=_produce, args=(bootstrap, orgs, args.events, started), daemon=True
        )
        child.start()
        t0 = started.get(timeout=120)
        cpu0 = time.process_time()
        deadline = time.monotonic() + args.timeout
        while True:
            sent = await rt.pool.fetchval(
                "SELECT count(*) FROM outbox_state WHERE topic = $1 AND state = 'sent'", topics.DEDUCTIONS)
            if sent >= args.events:
                last = time.time()  # seen sent (within the 0.2 s poll)
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"only {sent} of {args.events} deductions published in {args.timeout}s")
            await asyncio.sleep(0.2)
        cpu = time.process_time() - cpu0
        produced_at = started.get(timeout=60)
        child.join(timeout=30)
        consumed_at = float(await rt.pool.fetchval("SELECT extract(epoch FROM max(processed_at)) FROM inbox"))
        rejected = await rt.pool.fetchval("SELECT count(*) FROM outbox WHERE topic = $1", topics.USAGE_REJECTED)
        elapsed = float(last) - t0
        count = _sample("aimis_batch_seconds_count", topic=topics.USAGE)
        total = _sample("aimis_batch_seconds_sum", topic=topics.USAGE)
        msgs = _sample("aimis_messages_total", topic=topics.USAGE, outcome="ok")
        print(f"events:                 {args.events} ({args.orgs} orgs, {rejected} rejected)")
        print(f"batch_max_records:      {args.batch_max_records}  batch_timeout_ms: {args.batch_timeout_ms}")
        print(f"consumed batches:       {int(count)} (mean {msgs / max(count, 1):.0f} records, "
              f"mean {1000 * total / max(count, 1):.1f} ms per batch handler)")
        rate = args.events / (produced_at - t0)
        print(f"producer done after:    {produced_at - t0:.2f} s ({rate:,.0f} events/s produced)")
        print(f"last batch committed:   {consumed_at - t0:.2f} s after the first produce")
        print(f"first produce -> last deduction published: {elapsed:.2f} s "
              f"(service process CPU {cpu:.1f} s = {100 * cpu / elapsed:.0f}% of one core)")
        print(f"throughput:             {args.events / elapsed:,.0f} events/s")
    finally:
        await rt.stop()
        await admin.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
        await admin.close()


def _sample(name: str, **labels: str) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value(name, {"service": "metering", **labels}) or 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--orgs", type=int, default=4)
    ap.add_argument("--batch-max-records", type=int, default=Settings().batch_max_records)
    ap.add_argument("--batch-timeout-ms", type=int, default=Settings().batch_timeout_ms)
    ap.add_argument("--timeout", type=float, default=600)
    args = ap.parse_args()

    import os

    from tests.support.infra import infra

    if os.environ.get("AIMIS_KAFKA_BOOTSTRAP") and os.environ.get("AIMIS_DATABASE_URL"):
        asyncio.run(bench(os.environ["AIMIS_KAFKA_BOOTSTRAP"], os.environ["AIMIS_DATABASE_URL"], args))
        return
    with infra() as i:
        print(f"[infra] kafka={i.bootstrap} postgres={i.dsn} via {i.how}")
        asyncio.run(bench(i.bootstrap, i.dsn, args))


if __name__ == "__main__":
    main()
