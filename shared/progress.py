"""Stall-aware readiness (SPEC 7.2): is this process still making progress?

`Progress` samples, every few seconds, (1) the lag of each partition this process's consumers are
assigned (end offset minus the group's committed offset) and (2) the age of the oldest outbox row
neither sent nor parked. A partition *stalls* when it has lag and its committed offset did not move
for `AIMIS_STALL_S`; the outbox stalls when its oldest unsent row is older than that. Either makes
`/readyz` answer 503 (checks `consumers` and `outbox`) until progress resumes.

Only the partitions assigned to this instance are judged: a stuck peer makes itself unready, not
every instance of the service. Lag is read with this process's own admin and consumer clients (the
subscribers' clients are busy fetching). While Kafka cannot be asked, consumers are not judged (the
`kafka` check already answers) and their clocks restart when it answers again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from prometheus_client import Gauge

from shared import outbox

log = logging.getLogger(__name__)

CONSUMER_LAG = Gauge(
    "aimis_consumer_lag", "Records not yet consumed (end offset - committed offset) per assigned partition",
    ["service", "topic", "partition"],
)
CONSUMER_STALL = Gauge(
    "aimis_consumer_stall_seconds", "Seconds a partition with lag has made no progress (0: no lag or moving)",
    ["service", "topic", "partition"],
)
OUTBOX_OLDEST = Gauge(
    "aimis_outbox_oldest_unsent_seconds", "Age of the oldest outbox row neither sent nor parked", ["service"]
)

Assigned = Callable[[], Iterable[TopicPartition]]  # the partitions this process consumes now


class Progress:
    def __init__(
        self, service: str, group_id: str, stall_s: float, assigned: Assigned, *,
        bootstrap: str, options: dict[str, str] | None = None, pool: Callable[[], asyncpg.Pool | None],
    ):
        self.service, self.group_id, self.stall_s = service, group_id, stall_s
        self.assigned, self.bootstrap, self.options, self.pool = assigned, bootstrap, options or {}, pool
        self.every_s = max(0.2, min(5.0, stall_s / 4))
        self._moved: dict[TopicPartition, tuple[int, float]] = {}  # committed offset, when it last moved
        self._labelled: set[TopicPartition] = set()
        self.stalled: list[str] = []  # partitions stalled at the last sample, "topic[partition]"
        self.outbox_age_s = 0.0
        self._task: asyncio.Task[None] | None = None
        self._admin: AIOKafkaAdminClient | None = None
        self._consumer: AIOKafkaConsumer | None = None

    # -- readiness checks ------------------------------------------------------
    async def consumers_ok(self) -> bool:
        return not self.stalled

    async def outbox_ok(self) -> bool:
        return self.outbox_age_s <= self.stall_s

    # -- lifecycle ---------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"{self.service}-progress")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass
        await self._close_clients()

    async def _run(self) -> None:
        while True:
            await self.sample()
            await asyncio.sleep(self.every_s)

    async def sample(self) -> None:
        now = time.monotonic()
        try:
            self.outbox_age_s = await asyncio.wait_for(self._outbox_age(), timeout=5)
            OUTBOX_OLDEST.labels(self.service).set(self.outbox_age_s)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - the database check answers for an unreachable database
            log.debug("%s: outbox age unknown: %r", self.service, e)
        tps = sorted(set(self.assigned()))
        if not tps:
            self._forget(set())
            return
        try:
            lags = await asyncio.wait_for(self._lags(tps), timeout=5)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - the kafka check answers for an unreachable broker
            log.debug("%s: consumer lag unknown: %r", self.service, e)
            self._moved.clear()  # judge afresh once Kafka answers
            self.stalled = []
            await self._close_clients()
            return
        self._judge(lags, now)

    def _judge(self, lags: dict[TopicPartition, tuple[int, int]], now: float) -> None:
        stalled = []
        for tp, (committed, lag) in lags.items():
            last = self._moved.get(tp)
            if last is None or last[0] != committed or lag <= 0:
                self._moved[tp] = (committed, now)
                still_s = 0.0
            else:
                still_s = now - last[1]
            CONSUMER_LAG.labels(self.service, tp.topic, str(tp.partition)).set(lag)
            CONSUMER_STALL.labels(self.service, tp.topic, str(tp.partition)).set(still_s)
            if still_s >= self.stall_s:
                stalled.append(f"{tp.topic}[{tp.partition}]")
        if stalled and stalled != self.stalled:
            log.error("%s: no progress for %.0f s with lag on %s: not ready", self.service, self.stall_s, stalled)
        self.stalled = stalled
        self._forget(set(lags))

    def _forget(self, current: set[TopicPartition]) -> None:
        """Drop the gauges of partitions no longer assigned here (a rebalance moved them)."""
        for tp in self._labelled - current:
            for g in (CONSUMER_LAG, CONSUMER_STALL):
                try:
                    g.remove(self.service, tp.topic, str(tp.partition))
                except KeyError:
                    pass
            self._moved.pop(tp, None)
        self._labelled = set(current)
        if not current:
            self.stalled = []

    async def _outbox_age(self) -> float:
        pool = self.pool()
        if pool is None:
            return 0.0
        async with pool.acquire() as conn:
            return await outbox.oldest_unsent_s(conn)

    async def _lags(self, tps: list[TopicPartition]) -> dict[TopicPartition, tuple[int, int]]:
        """(committed offset, lag) per partition; a partition the group never committed counts
        from its first offset (the consumers start at the earliest)."""
        admin, consumer = await self._clients()
        committed = await admin.list_consumer_group_offsets(self.group_id, partitions=tps)
        ends: dict[TopicPartition, int] = await consumer.end_offsets(tps)
        starts: dict[TopicPartition, int] = await consumer.beginning_offsets(tps)
        out = {}
        for tp in tps:
            meta: Any = committed.get(tp)
            at = meta.offset if meta is not None and meta.offset >= 0 else starts[tp]
            out[tp] = (at, max(0, ends[tp] - at))
        return out

    async def _clients(self) -> tuple[AIOKafkaAdminClient, AIOKafkaConsumer]:
        if self._admin is None or self._consumer is None:
            await self._close_clients()
            admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=5000, **self.options)
            consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False,
                                        request_timeout_ms=5000, **self.options)
            await admin.start()
            try:
                await consumer.start()
            except BaseException:
                await admin.close()
                raise
            self._admin, self._consumer = admin, consumer
        return self._admin, self._consumer

    async def _close_clients(self) -> None:
        admin, consumer, self._admin, self._consumer = self._admin, self._consumer, None, None
        for close in ((admin.close if admin else None), (consumer.stop if consumer else None)):
            if close is not None:
                try:
                    await close()
                except Exception:  # noqa: BLE001
                    pass
