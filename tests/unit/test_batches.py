"""The batch transport's own rules (shared/kafka.py): when a batch is topped up, how a failed one is
rewound, how offsets are committed behind the batches. Fakes stand in for aiokafka's consumer here;
tests/integration/test_fresh_batches.py runs the same against a real broker."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from aiokafka import ConsumerRecord, TopicPartition

from shared import kafka
from tests.support.kafka import wait_until


def rec(partition: int, offset: int, age_ms: float = 0.0, topic: str = "t") -> ConsumerRecord:
    ts = int(time.time() * 1000 - age_ms)
    return ConsumerRecord(topic, partition, offset, ts, 0, b"k", b"v", None, 1, 1, [])


class FakeConsumer:
    def __init__(self, fetched: list[ConsumerRecord] | None = None, owned: set[TopicPartition] | None = None):
        self.fetched, self.owned = fetched or [], owned
        self.getmany_calls: list[dict[str, Any]] = []
        self.seeks: list[tuple[TopicPartition, int]] = []
        self.commits: list[dict[TopicPartition, int]] = []
        self.gate: asyncio.Event | None = None  # a commit waits on it when set
        self.in_commit = 0
        self.fail_commit = False

    async def getmany(self, *, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[ConsumerRecord]]:
        self.getmany_calls.append({"timeout_ms": timeout_ms, "max_records": max_records})
        out: dict[TopicPartition, list[ConsumerRecord]] = {}
        for r in self.fetched[:max_records]:
            out.setdefault(TopicPartition(r.topic, r.partition), []).append(r)
        return out

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks.append((tp, offset))

    def assignment(self) -> set[TopicPartition]:
        return self.owned if self.owned is not None else {TopicPartition("t", p) for p in range(8)}

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.in_commit += 1
        assert self.in_commit == 1, "two commits in flight at once"
        try:
            if self.gate is not None:
                await self.gate.wait()
            if self.fail_commit:
                raise RuntimeError("coordinator gone")
            self.commits.append(dict(offsets))
        finally:
            self.in_commit -= 1


async def test_a_batch_that_waited_in_the_buffer_is_topped_up_with_room_left():
    c = FakeConsumer(fetched=[rec(0, 10 + i) for i in range(5)])
    stale = [rec(0, i, age_ms=kafka.TOPUP_AGE_MS + 50) for i in range(3)]
    more = await kafka.top_up(c, stale, max_records=6)  # type: ignore[arg-type]
    assert [r.offset for r in more] == [10, 11, 12]
    assert c.getmany_calls == [{"timeout_ms": kafka.TOPUP_WAIT_MS, "max_records": 3}]


async def test_a_fresh_batch_or_a_full_one_is_not_topped_up():
    c = FakeConsumer(fetched=[rec(0, 10)])
    assert await kafka.top_up(c, [rec(0, 1, age_ms=0), rec(0, 0, age_ms=500)], 100) == []  # type: ignore[arg-type]
    full = [rec(0, i, age_ms=500) for i in range(4)]
    assert await kafka.top_up(c, full, max_records=4) == []  # type: ignore[arg-type]
    assert c.getmany_calls == []


async def test_a_top_up_whose_fetch_fails_leaves_the_batch_as_it_was(caplog):
    class Failing(FakeConsumer):
        async def getmany(self, *, timeout_ms: int, max_records: int):  # type: ignore[override]
            raise RuntimeError("fetch error")

    assert await kafka.top_up(Failing(), [rec(0, 1, age_ms=500)], 100) == []  # type: ignore[arg-type]
    assert "top-up fetch failed" in caplog.text


def test_a_failed_batch_is_rewound_to_its_first_record_in_every_partition_it_holds():
    records = [rec(0, 7), rec(0, 5), rec(1, 3), rec(0, 6), rec(2, 40, topic="u"), rec(1, 4)]
    c = FakeConsumer()
    kafka.rewind(c, records)  # type: ignore[arg-type]
    assert sorted(c.seeks) == sorted([(TopicPartition("t", 0), 5), (TopicPartition("t", 1), 3),
                                      (TopicPartition("u", 2), 40)])


async def test_offsets_are_committed_behind_the_batch_in_order_one_commit_at_a_time():
    c = FakeConsumer()
    c.gate = asyncio.Event()
    offsets = kafka.Offsets("svc:t", every_s=0)
    await offsets.commit(c, [rec(0, 4), rec(0, 9), rec(1, 2)])  # type: ignore[arg-type]
    assert c.commits == [], "the handler waited for its commit"
    await wait_until(lambda: c.in_commit == 1, timeout=1, interval=0.001)
    await offsets.commit(c, [rec(0, 10), rec(1, 3)])  # type: ignore[arg-type]  # does not wait either
    assert c.in_commit == 1 and c.commits == [], "a second commit left while one was in flight"
    c.gate.set()
    await offsets.settle()
    assert c.commits == [{TopicPartition("t", 0): 10, TopicPartition("t", 1): 3},
                         {TopicPartition("t", 0): 11, TopicPartition("t", 1): 4}]


async def test_one_commit_covers_the_batches_handled_within_the_interval():
    """The first commit leaves at once; those of the batches handled in the next `every_s` wait and
    leave as one, with each partition's highest offset (a partition's earlier offset never wins)."""
    c = FakeConsumer()
    offsets = kafka.Offsets("svc:t", every_s=60)
    await offsets.commit(c, [rec(0, 4)])  # type: ignore[arg-type]
    await wait_until(lambda: len(c.commits) == 1, timeout=1, interval=0.001)
    await offsets.commit(c, [rec(0, 5), rec(1, 8)])  # type: ignore[arg-type]
    await offsets.commit(c, [rec(1, 6), rec(2, 1)])  # type: ignore[arg-type]  # partition 1 behind: 8 stays
    await asyncio.sleep(0.05)  # a short look: nothing more may leave within the interval
    assert c.commits == [{TopicPartition("t", 0): 5}], "a commit left before its interval was up"
    await offsets.settle()  # what a graceful stop does: what is due leaves now
    assert c.commits == [{TopicPartition("t", 0): 5},
                         {TopicPartition("t", 0): 6, TopicPartition("t", 1): 9, TopicPartition("t", 2): 2}]


async def test_the_next_commit_leaves_when_the_interval_is_up():
    c = FakeConsumer()
    offsets = kafka.Offsets("svc:t", every_s=0.1)
    await offsets.commit(c, [rec(0, 1)])  # type: ignore[arg-type]
    await wait_until(lambda: len(c.commits) == 1, timeout=1, interval=0.001)
    started = time.monotonic()
    await offsets.commit(c, [rec(0, 2)])  # type: ignore[arg-type]
    await wait_until(lambda: len(c.commits) == 2, timeout=2, interval=0.001)
    assert time.monotonic() - started >= 0.09, "the second commit did not wait for the interval"
    assert c.commits == [{TopicPartition("t", 0): 2}, {TopicPartition("t", 0): 3}]
    await offsets.settle()


async def test_a_revoked_partition_is_not_committed_and_a_failed_commit_does_not_fail_the_batch(caplog):
    c = FakeConsumer(owned={TopicPartition("t", 1)})
    offsets = kafka.Offsets("svc:t")
    await offsets.commit(c, [rec(0, 4), rec(1, 2)])  # type: ignore[arg-type]
    await offsets.settle()
    assert c.commits == [{TopicPartition("t", 1): 3}]
    c.fail_commit = True
    await offsets.commit(c, [rec(1, 3)])  # type: ignore[arg-type]
    await offsets.settle()
    assert "offset commit failed" in caplog.text
    c.owned = set()
    c.fail_commit = False
    await offsets.commit(c, [rec(1, 4)])  # type: ignore[arg-type]
    await offsets.settle()
    assert c.commits == [{TopicPartition("t", 1): 3}], "a partition no longer ours was committed"


async def test_a_stop_sends_what_is_due_at_once_and_waits_for_the_commits_in_flight():
    c = FakeConsumer()
    offsets = kafka.Offsets("svc:t", every_s=60)
    await offsets.commit(c, [rec(0, 1)])  # type: ignore[arg-type]
    await wait_until(lambda: len(c.commits) == 1, timeout=1, interval=0.001)
    c.gate = asyncio.Event()
    await offsets.commit(c, [rec(0, 2)])  # type: ignore[arg-type]  # due in 60 s
    settled = asyncio.create_task(kafka.settle_commits(timeout_s=5))
    await wait_until(lambda: c.in_commit == 1, timeout=1, interval=0.001)  # sent now, not in 60 s
    assert not settled.done(), "the stop did not wait for the commit in flight"
    c.gate.set()
    await asyncio.wait_for(settled, 1)
    assert c.commits == [{TopicPartition("t", 0): 2}, {TopicPartition("t", 0): 3}]


@pytest.fixture(autouse=True)
def _no_commits_left():
    yield
    assert not kafka._IN_FLIGHT
