"""Test-side Kafka helpers: produce raw records, read a topic from 'now' and await matches."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic


class TopicReader:
    """Reads every partition of `topic` from the end offsets at `start()` (or the beginning)."""

    def __init__(self, bootstrap: str, topic: str, *, from_beginning: bool = False):
        self.bootstrap, self.topic, self.from_beginning = bootstrap, topic, from_beginning
        self.records: list[Any] = []
        self._consumer: AIOKafkaConsumer | None = None

    async def start(self) -> TopicReader:
        parts = await partitions_of(self.bootstrap, self.topic)
        c = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False)
        await c.start()
        tps = [TopicPartition(self.topic, p) for p in sorted(parts)]
        c.assign(tps)
        if self.from_beginning:
            await c.seek_to_beginning(*tps)
        else:
            ends = await c.end_offsets(tps)
            for tp in tps:
                c.seek(tp, ends[tp])
        self._consumer = c
        return self

    async def stop(self) -> None:
        if self._consumer:
            await self._consumer.stop()

    async def __aenter__(self) -> TopicReader:
        return await self.start()

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()

    async def poll(self, timeout_ms: int = 200) -> None:
        assert self._consumer is not None
        got = await self._consumer.getmany(timeout_ms=timeout_ms, max_records=5000)
        for recs in got.values():
            self.records.extend(recs)

    def events(self, predicate: Callable[[dict[str, Any]], bool] | None = None) -> list[dict[str, Any]]:
        out = []
        for r in self.records:
            try:
                ev = json.loads(r.value)
            except ValueError:
                continue
            if predicate is None or predicate(ev):
                out.append(ev)
        return out

    async def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], count: int = 1, timeout: float = 30.0,
        distinct: Callable[[dict[str, Any]], Any] | None = None,
    ) -> list[dict[str, Any]]:
        """Poll until `count` events match `predicate` (with `distinct`: `count` different values of
        it, so that redelivered repeats do not count); fail after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.events(predicate)
            if len(found if distinct is None else {distinct(e) for e in found}) >= count:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{self.topic}: {len(found)} of {count} matching events after {timeout}s "
                    f"({len(self.records)} records read)"
                )
            await self.poll()

    async def settle(self, quiet_s: float = 1.0) -> None:
        """Read until nothing new arrives for `quiet_s` (to assert that something did NOT happen)."""
        while True:
            before = len(self.records)
            await self.poll(timeout_ms=int(quiet_s * 1000))
            if len(self.records) == before:
                return


async def new_topic(bootstrap: str, prefix: str, partitions: int = 1) -> str:
    """A new topic `<prefix>-<random>` with `partitions` partitions (one replica); its name."""
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        await admin.close()
    return name


async def partitions_of(bootstrap: str, topic: str, timeout: float = 30.0) -> list[int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        deadline = time.monotonic() + timeout
        while True:
            desc = await admin.describe_topics([topic])
            parts = [p["partition"] for d in desc if d.get("error_code", 0) == 0 for p in d["partitions"]]
            if parts:
                return sorted(parts)
            if time.monotonic() > deadline:
                raise RuntimeError(f"topic {topic} does not exist")
            await asyncio.sleep(0.2)
    finally:
        await admin.close()


async def producer(bootstrap: str) -> AIOKafkaProducer:
    p = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await p.start()
    return p


async def wait_until(cond: Callable[[], Any], timeout: float = 30.0, interval: float = 0.1) -> Any:
    """Await an (async or sync) condition that returns truthy; fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if asyncio.iscoroutine(v):
            v = await v
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)
