"""Kafka plumbing on FastStream/aiokafka: the broker, topic creation, raw batch consumers."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Any

from aiokafka import AIOKafkaProducer, ConsumerRecord
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaTimeoutError, TopicAlreadyExistsError
from aiokafka.partitioner import DefaultPartitioner
from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from faststream.security import SASLScram512

from contracts import topics
from contracts.events import CloudEvent, encode, topic_of
from shared import observability as obs

log = logging.getLogger(__name__)

BatchHandler = Callable[[list[ConsumerRecord]], Awaitable[None]]

ACK_TIMEOUT_S = 60.0  # the longest a publish waits for Kafka's acknowledgements (ProducerPublisher)
STOP_S = 10.0  # the longest a producer's stop waits to deliver what it holds, then drops it


def make_broker(bootstrap: str, client_id: str, options: dict[str, str] | None = None, **kw: Any) -> KafkaBroker:
    """FastStream's broker; `options` are Settings.kafka_options() (SASL/SCRAM when secured)."""
    if options:
        kw["security"] = SASLScram512(options["sasl_plain_username"], options["sasl_plain_password"])
    return KafkaBroker(
        [b.strip() for b in bootstrap.split(",") if b.strip()],  # "h1:p1,h2:p2": FastStream wants a list
        client_id=client_id,
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        max_batch_size=256 * 1024,
        logger=logging.getLogger(f"faststream.{client_id}"),
        log_level=logging.DEBUG,
        **kw,
    )


async def ensure_topics(
    bootstrap: str, partitions: int, names: Sequence[str] = topics.ALL, *, replication: int = 1,
    min_isr: int = 1, options: dict[str, str] | None = None,
) -> None:
    """Create the topics (key = org_id, `partitions` each, `replication` copies of which `min_isr`
    must acknowledge a write) if they do not exist yet."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15_000, **(options or {}))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        config = {"min.insync.replicas": str(min_isr)}
        missing = [NewTopic(n, partitions, replication, topic_configs=config) for n in names if n not in existing]
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
) -> Any:
    """Subscribe `handler` to raw record batches of `topic`; returns FastStream's subscriber (its
    `consumer`, once started, tells which partitions this process is assigned).

    The records reach the handler undecoded (`keep_raw`): FastStream's default decoder would
    JSON-decode each one before the handler runs, and a record it cannot decode (nested too deeply:
    RecursionError) would fail outside the handler, be redelivered forever and stop the partition.

    Offsets are committed only after the handler returned (it commits its own database
    transaction first). When the handler raises, the batch is rewound and redelivered after a
    back-off: a failing database never loses or skips a message. Handlers never raise for bad
    input: they route it to a rejected/dead-letter topic inside their transaction.
    """

    subscriber = broker.subscriber(
        topic,
        group_id=group_id,
        batch=True,
        auto_offset_reset="earliest",
        ack_policy=AckPolicy.NACK_ON_ERROR,
        max_records=max_records,
        batch_timeout_ms=batch_timeout_ms,
        title=f"{service}:{topic}",
        decoder=kw.pop("decoder", keep_raw),
        parser=kw.pop("parser", any_headers),
        **kw,
    )

    @subscriber  # type: ignore[untyped-decorator]  # FastStream types it loosely
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

    return subscriber


async def keep_raw(msg: Any) -> None:
    """FastStream decoder that decodes nothing: batch handlers read the raw records."""
    return None


async def any_headers(records: tuple[ConsumerRecord, ...], original: Callable[..., Awaitable[Any]]) -> Any:
    """FastStream batch parser that survives any header value. FastStream's own decodes every header
    value of every record as UTF-8 and, on one that is not (or has no value), fails the batch before
    the handler runs, and the batch comes back for ever: one record would stop its partition. Then
    it parses copies with readable values; the handler still gets the records as consumed (the
    consumer base rejects such a record and keeps its headers)."""
    try:
        return await original(records)
    except (UnicodeDecodeError, AttributeError):
        readable = tuple(replace(r, headers=tuple((k, (v or b"").decode("utf-8", "replace").encode())
                                                  for k, v in r.headers)) for r in records)
        parsed = await original(readable)
        parsed.raw_message = records
        return parsed


_HEADERS = [("content-type", b"application/cloudevents+json")]


Row = tuple[str, bytes, bytes]  # (topic, key, value)


class PublishTimeout(KafkaTimeoutError):  # type: ignore[misc]  # aiokafka is untyped
    """Kafka did not acknowledge a publish within the publisher's `ack_timeout_s`: transient (the
    relay sends the rows again, with a new producer)."""


class ProducerPublisher:
    """The outbox relay's publish function: a plain idempotent aiokafka producer (acks=all, key =
    org_id, the default partitioner). The relay is on every service's hot path, so a drained
    batch goes out as one record batch per partition (`create_batch`/`send_batch`): no per-record
    future, partitioner call or accumulator lookup, which `send` costs for each record (and
    FastStream's `broker.publish` about twice that). Each batch is closed before it is handed over:
    aiokafka sends an open batch only after `linger_ms` (5 ms on every relay send, twice on the
    usage path), a closed one at once.

    A publish waits at most `ack_timeout_s` for Kafka's acknowledgements (Java's producer has
    `delivery.timeout.ms` for this; aiokafka has no bound: its idempotent producer retries a
    retriable refusal, such as NOT_ENOUGH_REPLICAS, for ever, so one wedged producer would hold the
    relay, and every deduction behind it, for good). Past it the producer is dropped with what it
    still holds and the publish raises `PublishTimeout`; the rows are still in the outbox, and the
    relay sends them again with a new producer (consumers' inboxes make a repeat a no-op)."""

    def __init__(self, bootstrap: str, client_id: str, options: dict[str, str] | None = None, *,
                 ack_timeout_s: float = ACK_TIMEOUT_S, stop_s: float = STOP_S, linger_ms: int = 5):
        self.bootstrap, self.client_id, self.options = bootstrap, client_id, options or {}
        self.ack_timeout_s, self.stop_s, self.linger_ms = ack_timeout_s, stop_s, linger_ms
        self.producer: AIOKafkaProducer | None = None
        self._partitioner = DefaultPartitioner()
        self._slots: dict[tuple[bytes, int], int] = {}  # (key, partition count) -> partition index

    async def start(self) -> None:
        # Created here: aiokafka binds a producer to the running loop.
        self.producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap, client_id=self.client_id, acks="all",
            enable_idempotence=True, linger_ms=self.linger_ms, max_batch_size=256 * 1024, **self.options,
        )
        await self.producer.start()

    async def stop(self) -> None:
        producer, self.producer = self.producer, None
        if producer is not None:
            await _close(producer, self.stop_s)

    async def __call__(self, rows: Sequence[Row]) -> None:
        """Publish `rows`, in their order within each partition; return when Kafka acknowledged
        all of them (raise when any failed, or when not all were within `ack_timeout_s`). After a
        failure the producer is replaced: an idempotent producer whose batch was refused keeps a
        sequence the broker no longer accepts (OutOfOrderSequenceNumber on every later send); a new
        one starts a new sequence."""
        if self.producer is None:
            await self.start()
        try:
            await asyncio.wait_for(self._publish(rows), self.ack_timeout_s)
        except TimeoutError:
            await self.stop()  # the next call starts a new producer
            raise PublishTimeout(f"Kafka acknowledged not all of {len(rows)} records within "
                                 f"{self.ack_timeout_s:g} s; the producer was replaced") from None
        except Exception:
            await self.stop()
            raise

    async def _publish(self, rows: Sequence[Row]) -> None:
        producer = self.producer
        assert producer is not None, "ProducerPublisher.start() first"
        groups: dict[tuple[str, int], list[Row]] = {}
        parts: dict[str, list[int]] = {}
        for row in rows:
            topic = row[0]
            if topic not in parts:
                parts[topic] = sorted(await producer.partitions_for(topic))
            groups.setdefault((topic, self._partition(row[1], parts[topic])), []).append(row)
        acks = []
        for (topic, partition), group in groups.items():
            batch = producer.create_batch()
            for _, key, value in group:
                if batch.append(key=key, value=value, timestamp=None, headers=_HEADERS) is not None:
                    continue
                if batch.record_count():  # full (max_batch_size): send it, start the next one
                    batch.close()
                    acks.append(await producer.send_batch(batch, topic, partition=partition))
                    batch = producer.create_batch()
                    if batch.append(key=key, value=value, timestamp=None, headers=_HEADERS) is not None:
                        continue
                # Larger than a batch: alone, as `send` takes it (up to the producer's request size;
                # beyond, MessageSizeTooLargeError, which the relay parks). Same partition, same order.
                acks.append(await producer.send(topic, value, key=key, partition=partition, headers=_HEADERS))
            if batch.record_count():
                batch.close()  # complete: sent at once, not after the producer's linger
                acks.append(await producer.send_batch(batch, topic, partition=partition))
        if acks:
            for ack in acks:  # read its failure even when no one waits any more (a timeout)
                ack.add_done_callback(_retrieve)
            # `wait`, not `gather`: a timeout must not cancel the producer's own batch futures
            await asyncio.wait(acks)
        for ack in acks:
            ack.result()  # the first failure, raised

    def _partition(self, key: bytes, partitions: list[int]) -> int:
        """The default partitioner's choice (murmur2 of the key), as every producer of the topic
        makes it; memoised, since the same organisations recur (bounded)."""
        slot = (key, len(partitions))
        index = self._slots.get(slot)
        if index is None:
            if len(self._slots) >= 100_000:
                self._slots.clear()
            index = self._slots[slot] = partitions.index(self._partitioner(key, partitions, partitions))
        return partitions[index]


def _retrieve(f: asyncio.Future[Any]) -> None:
    if not f.cancelled():
        f.exception()


async def _close(producer: AIOKafkaProducer, wait_s: float) -> None:
    """Stop `producer`: it first delivers what it holds, for at most `wait_s`; what it could not
    deliver by then (it would retry for ever) is failed and dropped. What the relay publishes is
    still in the outbox, so nothing is lost by dropping it."""
    stopping = asyncio.ensure_future(producer.stop())
    if not (await asyncio.wait([stopping], timeout=wait_s))[0]:
        log.warning("a Kafka producer could not deliver what it held within %g s; dropped", wait_s)
        # aiokafka has no public way to drop what a producer cannot deliver: end its sender (the
        # retries), which lets `stop` close the client, then fail the batches it kept (their waiters
        # end, the flush `stop` started among them)
        producer._sender.sender_task.cancel()  # noqa: SLF001
        await stopping
        producer._message_accumulator.fail_all(KafkaTimeoutError("the producer was dropped"))  # noqa: SLF001
    else:
        stopping.result()


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
