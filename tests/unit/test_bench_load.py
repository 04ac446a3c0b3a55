"""The benchmark's load generator (benchmarks/system.py) feeds the system valid usage events, each
organisation's on the partition the default partitioner gives its key, as the platform's producer
would: a generator that wrote events the services reject, or scattered an org over partitions,
would measure something else than the usage path."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timezone

import pytest
from aiokafka.partitioner import DefaultPartitioner

from benchmarks.system import Load, usage_record
from contracts.events import UsageData, parse_event


@pytest.mark.parametrize("sent", [None, 1790000000.123456])
def test_each_generated_record_is_the_usage_event_it_stands_for(sent: float | None) -> None:
    occurred = datetime(2026, 11, 27, 7, 0, tzinfo=timezone.utc)
    for i in range(8):
        key, value = usage_record("bench-org-01", i, occurred, sent)
        event = parse_event(value)
        assert key == b"bench-org-01" and event.subject == "bench-org-01"
        assert event.type == ("aimis.usage.ai_review" if i % 4 == 0 else "aimis.usage.cloud_inspection")
        assert isinstance(event.data, UsageData)
        assert (event.data.quantity, event.data.inspection_id) == (1 + i % 3, f"insp-{i}")
        assert event.time == occurred
        if sent is None:
            assert event.data.attributes is None
        else:
            assert event.data.attributes is not None and float(event.data.attributes["sent"]) == sent
    ids = {json.loads(usage_record("o", i, occurred)[1])["id"] for i in range(100)}
    assert len(ids) == 100


class _Batch:
    def __init__(self, room: int):
        self.room, self.closed = room, False
        self.records: list[tuple[bytes, bytes]] = []

    def append(self, *, key: bytes, value: bytes, timestamp: None, headers: object) -> object | None:
        assert isinstance(headers, list), "aiokafka's batch builder takes a list only"
        if len(self.records) == self.room:
            return None
        self.records.append((key, value))
        return object()

    def record_count(self) -> int:
        return len(self.records)

    def close(self) -> None:
        self.closed = True


class _Producer:
    def __init__(self, room: int):
        self.room = room
        self.sent: list[tuple[int, list[tuple[bytes, bytes]]]] = []

    async def partitions_for(self, topic: str) -> set[int]:
        return set(range(6))

    def create_batch(self) -> _Batch:
        return _Batch(self.room)

    async def send_batch(self, batch: _Batch, topic: str, *, partition: int) -> object:
        assert batch.closed
        self.sent.append((partition, batch.records))
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut


async def test_load_sends_each_key_on_its_default_partition_in_order() -> None:
    producer = _Producer(room=3)  # small batches: a full one is sent and a new one started
    load = Load(producer, "aimis.usage.v1")
    orgs = [f"org-{n}".encode() for n in range(7)]
    records = [(orgs[i % 7], str(i).encode()) for i in range(70)]
    await load.send(records[:35])
    await load.send(records[35:])
    await load.acked()
    parts = list(range(6))
    got: dict[bytes, list[bytes]] = {}
    for partition, batch in producer.sent:
        for key, value in batch:
            assert partition == DefaultPartitioner()(key, parts, parts)
            got.setdefault(key, []).append(value)
    assert got == {k: [v for kk, v in records if kk == k] for k in orgs}
    assert max(len(b) for _, b in producer.sent) == 3
