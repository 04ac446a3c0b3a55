"""Kafka plumbing on FastStream/aiokafka: the broker, topic creation, raw batch consumers."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiokafka import ConsumerRecord
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage

from contracts import topics
from contracts.events import CloudEvent, encode, topic_of
from shared import observability as obs

log = logging.getLogger(__name__)

BatchHandler = Callable[[list[ConsumerRecord]], Awaitable[None]]


def make_broker(bootstrap: str, client_id: str, **kw: Any) -> KafkaBroker:
    return KafkaBroker(
        bootstrap,
        client_id=client_id,
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        max_batch_size=256 * 1024,
        logger=logging.getLogger(f"faststream.{client_id}"),
        log_level=logging.DEBUG,
        **kw,
    )


async def ensure_topics(bootstrap: str, partitions: int, names: Sequence[str] = topics.ALL) -> None:
    """Create the topics (key = org_id, `partitions` each) if they do not exist yet."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15_000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [NewTopic(n, partitions, 1) for n in names if n not in existing]
        if missing:
            try:
                await admin.create_topics(missing)
            except TopicAlreadyExistsError:
                pass
            # Creation is asynchronous in the controller: wait until metadata shows them.
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                if set(names) <= set(await admin.list_topics()):
                    break
                await asyncio.sleep(0.2)
    finally:
        await admin.close()


def batch_consumer(
    broker: KafkaBroker,
    topic: str,
    group_id: str,
    handler: BatchHandler,
    *,
    service: str,
    max_records: int = 2000,
    batch_timeout_ms: int = 50,
    retry_backoff_s: float = 1.0,
    **kw: Any,
) -> None:
    """Subscribe `handler` to raw record batches of `topic`.

    Offsets are committed only after the handler returned (it commits its own database
    transaction first). When the handler raises, the batch is rewound and redelivered after a
    back-off: a failing database never loses or skips a message. Handlers never raise for bad
    input: they route it to a rejected/dead-letter topic inside their transaction.
    """

    @broker.subscriber(
        topic,
        group_id=group_id,
        batch=True,
        auto_offset_reset="earliest",
        ack_policy=AckPolicy.NACK_ON_ERROR,
        max_records=max_records,
        batch_timeout_ms=batch_timeout_ms,
        title=f"{service}:{topic}",
        **kw,
    )
    async def _consume(msg: KafkaMessage) -> None:
        raw = msg.raw_message
        records = list(raw) if isinstance(raw, tuple) else [raw]
        started = time.perf_counter()
        try:
            await handler(records)
        except Exception:
            obs.MESSAGES.labels(service, topic, "retry").inc(len(records))
            log.exception("batch of %d from %s failed; will be redelivered", len(records), topic)
            await asyncio.sleep(retry_backoff_s)
            raise
        obs.BATCH_SECONDS.labels(service, topic).observe(time.perf_counter() - started)
        obs.MESSAGES.labels(service, topic, "ok").inc(len(records))


def outbox_publisher(broker: KafkaBroker) -> Callable[[str, bytes, bytes], Awaitable[Any]]:
    """The relay's publish function: returns a future that resolves when Kafka acked."""

    async def publish(topic: str, key: bytes, value: bytes) -> Any:
        return await broker.publish(
            value, topic, key=key, headers={"content-type": "application/cloudevents+json"},
            no_confirm=True,
        )

    return publish


async def publish_events(broker: KafkaBroker, events: Sequence[CloudEvent[Any]]) -> None:
    """Publish directly (not through the outbox): for producers with no database state of their own,
    such as HTTP ingestion that only forwards validated usage to its topic."""
    futures = [
        await broker.publish(
            encode(e), topic_of(e.type), key=e.subject.encode(),
            headers={"content-type": "application/cloudevents+json"}, no_confirm=True,
        )
        for e in events
    ]
    await asyncio.gather(*futures)


def record_text(record: ConsumerRecord) -> Any:
    """The record's value for a rejection/dead-letter record: its JSON, else its raw text."""
    value = record.value or b""
    try:
        return json.loads(value)
    except (ValueError, UnicodeDecodeError):
        return value.decode("utf-8", errors="replace")
