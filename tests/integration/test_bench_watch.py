"""The benchmark's watch of the ledger (benchmarks/system.py `LedgerWatch`), against a real broker.
Phase 2: the n-th usage entry is timed by the ledger's end offsets only when the entries those
offsets counted hold n usage entries; otherwise by reading, until n were read. Phase 3: each usage
entry's latency ends when the end offsets first showed it readable, not when it was read."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiokafka import AIOKafkaProducer

from benchmarks.system import USAGE_MARK, LedgerWatch
from shared.config import Settings
from tests.support.kafka import new_topic, producer


def _entry(i: int, usage: bool) -> bytes:
    kind = USAGE_MARK.decode() if usage else '"type":"aimis.ledger.lot_credited'
    return f'{{{kind}", "n": {i}}}'.encode()


def _timed_entry(usage_id: str, sent: float, usage: bool = True) -> bytes:
    kind = "aimis.ledger.usage_deducted" if usage else "aimis.ledger.lot_credited"
    return json.dumps({"type": kind, "time": "2026-11-27T12:00:00+00:00",
                       "data": {"usage_id": usage_id, "attributes": {"sent": repr(sent)}}},
                      separators=(",", ":")).encode()


@asynccontextmanager
async def _watched(settings: Settings, partitions: int = 1) -> AsyncIterator[tuple[str, LedgerWatch, AIOKafkaProducer]]:
    """A new topic, a watch of it from its end, and a producer to it."""
    topic = await new_topic(settings.kafka_bootstrap, "t-watch", partitions=partitions)
    watch = LedgerWatch(settings.kafka_bootstrap, topic)
    await watch.start()
    p = await producer(settings.kafka_bootstrap)
    try:
        yield topic, watch, p
    finally:
        await p.stop()
        await watch.stop()


async def test_n_usage_entries_are_timed_when_readable_by_the_end_offsets(settings: Settings):
    async with _watched(settings, partitions=3) as (topic, watch, p):
        counting = asyncio.create_task(watch.count_until(50, timeout_s=30))
        for i in range(50):
            await p.send(topic, _entry(i, True), key=f"org-{i % 5}".encode())
        await p.flush()
        acked = time.time()
        seen, at = await counting
        assert seen == 50
        assert at <= acked + 1.0, "the time of the n-th entry was not taken when it became readable"


async def test_entries_of_other_types_do_not_count_towards_n(settings: Settings):
    """Readable offsets count every entry: with a non-usage entry among them, the n-th usage entry
    is the one after, and the watch waits for it."""
    async with _watched(settings) as (topic, watch, p):
        counting = asyncio.create_task(watch.count_until(10, timeout_s=30))
        await p.send_and_wait(topic, _entry(0, False), key=b"org-0")
        for i in range(1, 10):
            await p.send_and_wait(topic, _entry(i, True), key=b"org-0")
        await asyncio.sleep(0.3)  # ten entries readable, nine of them usage: the count must not be done
        assert not counting.done(), "an entry of another type counted as a usage entry"
        last_sent = time.time()
        await p.send_and_wait(topic, _entry(10, True), key=b"org-0")
        seen, at = await asyncio.wait_for(counting, 30)
        assert seen == 10 and at >= last_sent


async def test_latency_is_taken_when_each_entry_became_readable_not_when_read(settings: Settings):
    """Each usage entry's latency runs from its send time to when the ledger's end offsets first
    showed it: the entries are read a second after the last was acknowledged, and that second must
    not count. An entry of another type is no latency."""
    async with _watched(settings, partitions=3) as (topic, watch, p):
        expected: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        timing = asyncio.create_task(watch.latencies(expected, timeout_s=30))
        acked: dict[str, tuple[float, float]] = {}  # usage id -> (sent, acknowledged)
        await p.send_and_wait(topic, _timed_entry("other", time.time(), usage=False), key=b"org-0")
        for i in range(12):
            sent = time.time()
            await p.send_and_wait(topic, _timed_entry(f"u-{i}", sent), key=f"org-{i % 4}".encode())
            acked[f"u-{i}"] = (sent, time.time())
        await asyncio.sleep(1.0)  # the reader comes late: its lateness is not the system's
        expected.set_result(12)
        latencies = await asyncio.wait_for(timing, 60)
        assert len(latencies) == 12
        by_id = {usage_id: readable for usage_id, _, _, _, readable in watch.parts}
        assert set(by_id) == set(acked)
        for usage_id, (sent, ack) in acked.items():
            assert sent <= by_id[usage_id] <= ack + 0.25, f"{usage_id} timed at {by_id[usage_id] - ack:+.3f} s from its ack"
        assert max(latencies) < 0.5


async def test_when_fewer_entries_come_than_expected_those_that_came_are_timed(settings: Settings):
    """A run that lost entries still reports the latencies of the entries that came (and the caller
    says how many did not)."""
    async with _watched(settings) as (topic, watch, p):
        expected: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        timing = asyncio.create_task(watch.latencies(expected, timeout_s=2))
        for i in range(3):
            await p.send_and_wait(topic, _timed_entry(f"u-{i}", time.time()), key=b"org-0")
        expected.set_result(5)
        latencies = await asyncio.wait_for(timing, 30)
        assert len(latencies) == 3 and max(latencies) < 0.5


async def test_the_watch_asks_once_per_change_not_every_few_milliseconds(settings: Settings):
    """The watch's question about the end offsets waits at the broker while nothing new is
    readable (a fetch it never reads the records of): over a quiet second it asks about ten times,
    where asking every 5 ms cost the system under test a fifth of a core; an entry that then comes
    is still timed when it became readable."""
    async with _watched(settings, partitions=3) as (topic, watch, p):
        assert watch.looker is not None
        client = watch.looker._client  # noqa: SLF001 - count what the watch asks the broker
        asked = 0
        send = client.send

        async def counted(*args, **kwargs):  # type: ignore[no-untyped-def]
            nonlocal asked
            asked += 1
            return await send(*args, **kwargs)

        client.send = counted
        counting = asyncio.create_task(watch.count_until(2, timeout_s=30))
        await p.send_and_wait(topic, _entry(0, True), key=b"org-0")
        before = asked
        await asyncio.sleep(1.0)  # one readable entry of two, then a quiet second
        quiet = asked - before
        await p.send_and_wait(topic, _entry(1, True), key=b"org-1")
        acked = time.time()
        seen, at = await asyncio.wait_for(counting, 30)
        assert seen == 2
        assert quiet <= 20, f"the watch asked {quiet} times in a quiet second"
        assert at <= acked + 0.25, f"the second entry was timed {at - acked:+.3f} s from its ack"
