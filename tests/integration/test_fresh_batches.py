"""Batches hold what reached the broker up to their start, and their offsets are committed behind
them (shared/kafka.py; docs/decisions.md "Fresh batches"), on a real broker.

aiokafka fetches a partition again only once its buffered records are taken: without the top-up, a
record that reaches the broker while a batch runs is fetched right away but waits in the buffer, and
one that arrives after it waits a whole batch more (issue 13: at 5,000 events/s each consumer's leg
was 1-2 of its batches long)."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from shared import kafka
from shared.config import Settings
from shared.service import Runtime
from tests.support.kafka import new_topic, producer, wait_until

pytestmark = pytest.mark.integration
MIGRATIONS = Path(__file__).with_name("foundation_migrations")


async def test_a_record_that_arrives_while_a_batch_runs_is_in_the_next_batch_with_the_one_buffered_before_it(
        settings: Settings, fresh_db: str):
    topic = await new_topic(settings.kafka_bootstrap, "t-fresh")
    rt = Runtime("foundation", MIGRATIONS, settings=settings.model_copy(update={"database_url": fresh_db}),
                 group_id=f"t-{uuid.uuid4().hex[:8]}")
    batches: list[list[bytes]] = []
    release = asyncio.Event()

    async def slow(records):
        batches.append([r.value for r in records])
        if len(batches) == 1:
            await release.wait()  # the first batch runs until the test lets it end

    rt.consume(topic, slow)
    p = await producer(settings.kafka_bootstrap)
    await rt.start()
    try:
        await (await p.send(topic, b"first", key=b"k"))
        await wait_until(lambda: batches, timeout=60)
        consumer = rt._subscribers[0].consumer
        buffered = await (await p.send(topic, b"buffered", key=b"k"))  # fetched while the batch runs
        await wait_until(lambda: consumer.highwater(TopicPartition(topic, 0)) == buffered.offset + 1)
        await wait_until(lambda: time.time() * 1000 - buffered.timestamp > kafka.TOPUP_AGE_MS)
        await (await p.send(topic, b"later", key=b"k"))  # reaches the broker after that fetch
        release.set()
        await wait_until(lambda: sum(len(b) for b in batches) == 3)
    finally:
        release.set()
        await p.stop()
        await rt.stop()
    assert batches == [[b"first"], [b"buffered", b"later"]]


async def test_the_offsets_of_handled_batches_are_committed(settings: Settings, fresh_db: str):
    topic = await new_topic(settings.kafka_bootstrap, "t-commit", partitions=3)
    group = f"t-{uuid.uuid4().hex[:8]}"
    rt = Runtime("foundation", MIGRATIONS, settings=settings.model_copy(update={"database_url": fresh_db}),
                 group_id=group)
    seen: list[int] = []

    async def handle(records):
        seen.extend(r.offset for r in records)

    rt.consume(topic, handle)
    p = await producer(settings.kafka_bootstrap)
    # reads the group's offsets without joining it (as metering's catch-up does)
    offsets = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=group, enable_auto_commit=False)
    await offsets.start()
    await rt.start()
    try:
        async with asyncio.timeout(120):  # a hung call fails here, not at the suite's timeout
            metas = [await f for f in [await p.send(topic, f"v{i}".encode(), key=f"k{i}".encode())
                                       for i in range(60)]]
            ends: dict[TopicPartition, int] = {}
            for m in metas:
                tp = TopicPartition(topic, m.partition)
                ends[tp] = max(ends.get(tp, 0), m.offset + 1)

            async def committed() -> bool:
                return all([await offsets.committed(tp) == end for tp, end in ends.items()])

            await wait_until(committed, timeout=60)
    finally:
        await p.stop()
        await offsets.stop()
        await rt.stop()
    assert sorted(seen) == sorted(m.offset for m in metas) and len(seen) == 60


async def test_a_batch_reaches_its_handler_without_a_worker_thread(
        settings: Settings, fresh_db: str, monkeypatch: pytest.MonkeyPatch):
    """FastStream's dependency injection resolved the handler's `KafkaMessage` on anyio's thread
    pool, one round trip to a worker thread per batch on every consumer's hot path; the transport
    hands the message over itself (shared/kafka.py, make_broker)."""
    import anyio.to_thread

    hops: list[object] = []
    run_sync = anyio.to_thread.run_sync

    async def counted(func, *args, **kwargs):
        hops.append(func)
        return await run_sync(func, *args, **kwargs)

    monkeypatch.setattr(anyio.to_thread, "run_sync", counted)
    topic = await new_topic(settings.kafka_bootstrap, "t-thread")
    rt = Runtime("foundation", MIGRATIONS, settings=settings.model_copy(update={"database_url": fresh_db}),
                 group_id=f"t-{uuid.uuid4().hex[:8]}")
    seen: list[bytes] = []

    async def handle(records):
        seen.extend(r.value for r in records)

    rt.consume(topic, handle)
    p = await producer(settings.kafka_bootstrap)
    await rt.start()
    try:
        for i in range(5):  # one at a time: five batches
            await (await p.send(topic, f"v{i}".encode(), key=b"k"))
            await wait_until(lambda i=i: len(seen) == i + 1, timeout=60)
    finally:
        await p.stop()
        await rt.stop()
    assert seen == [f"v{i}".encode() for i in range(5)]
    assert hops == []


async def test_a_handled_batch_is_freed_without_the_cyclic_collector(settings: Settings, fresh_db: str):
    """A batch's records are freed as soon as it was handled, by reference counting: FastStream's
    message must not hold itself, and the offset commit's task must not keep the consumer's context
    (which holds the message). Either kept every record of its batch until the cyclic collector
    ran, which the services run rarely: entitlement grew from 70 to 200 MiB over a backlog of
    300,000 usage events."""
    import gc
    import weakref

    topic = await new_topic(settings.kafka_bootstrap, "t-freed")
    rt = Runtime("foundation", MIGRATIONS, settings=settings.model_copy(update={"database_url": fresh_db}),
                 group_id=f"t-{uuid.uuid4().hex[:8]}")
    handled: list[weakref.ref] = []

    async def handle(records):
        handled.append(weakref.ref(records[0]))

    rt.consume(topic, handle)
    p = await producer(settings.kafka_bootstrap)
    await rt.start()
    gc.collect()
    gc.disable()
    try:
        for i in range(4):
            await (await p.send(topic, f"v{i}".encode(), key=b"k"))
            await wait_until(lambda i=i: len(handled) == i + 1, timeout=60)
        alive = [ref() is not None for ref in handled[:-1]]  # the last one may still be in use
    finally:
        gc.enable()
        await p.stop()
        await rt.stop()
    assert alive == [False, False, False], "a handled batch's records were kept (a reference cycle)"
