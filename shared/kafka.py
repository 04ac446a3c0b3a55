"""Kafka plumbing on FastStream/aiokafka: the broker, topic creation, raw batch consumers."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Any, NamedTuple

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
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

COMMIT_EVERY_S = 0.25  # the least time between two offset commits of one consumer (Offsets)
ACK_TIMEOUT_S = 60.0  # the longest a publish waits for Kafka's acknowledgements (ProducerPublisher)
STOP_S = 10.0  # the longest a producer's stop waits to deliver what it holds, then drops it


def make_broker(bootstrap: str, client_id: str, options: dict[str, str] | None = None, **kw: Any) -> KafkaBroker:
    """FastStream's broker; `options` are Settings.kafka_options() (SASL/SCRAM when secured).

    Without FastStream's dependency injection (`apply_types=False`): the one handler shape
    (`batch_consumer`) takes the batch's raw records and consumer, which `keep_raw` hands over as
    the decoded body. With injection, the `KafkaMessage` annotation was resolved on a worker thread for every batch
    (fast_depends runs the synchronous `Context.use` through anyio's thread pool): two thread
    switches per batch on the consumers' hot path (docs/benchmarks.md, ninth pass)."""
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
        apply_types=False,
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

    The records reach the handler undecoded (`keep_raw` hands over the raw records): FastStream's
    default decoder would JSON-decode each one before the handler runs, and a record it cannot decode
    (nested too deeply: RecursionError) would fail outside the handler, be redelivered forever and stop
    the partition.

    A batch whose records waited in the consumer's buffer is topped up with what reached the broker
    meanwhile (`top_up`). Offsets are committed only after the handler returned (it commits its own
    database transaction first), in the background while the next batch runs (`Offsets`). When the
    handler raises, every partition of the batch is rewound to its first record and the batch is
    redelivered after a back-off: a failing database never loses or skips a message. Handlers never
    raise for bad input: they route it to a rejected/dead-letter topic inside their transaction.
    """

    subscriber = broker.subscriber(
        topic,
        group_id=group_id,
        batch=True,
        auto_offset_reset="earliest",
        ack_policy=AckPolicy.MANUAL,  # committed and rewound here (auto-commit stays off)
        max_records=max_records,
        batch_timeout_ms=batch_timeout_ms,
        title=f"{service}:{topic}",
        decoder=kw.pop("decoder", keep_raw),
        parser=kw.pop("parser", raw_batch),
        **kw,
    )
    offsets = Offsets(f"{service}:{topic}")

    @subscriber  # type: ignore[untyped-decorator]  # FastStream types it loosely
    async def _consume(batch: RawBatch) -> None:  # what `keep_raw` decoded (no injection)
        raw, consumer = batch
        records = list(raw) if isinstance(raw, tuple) else [raw]
        records += await top_up(consumer, records, max_records)
        started = time.perf_counter()
        try:
            await handler(records)
        except Exception:
            obs.MESSAGES.labels(service, topic, "retry").inc(len(records))
            log.exception("batch of %d from %s failed; will be redelivered", len(records), topic)
            rewind(consumer, records)
            await asyncio.sleep(retry_backoff_s)
            return
        obs.BATCH_SECONDS.labels(service, topic).observe(time.perf_counter() - started)  # the handler's time only
        obs.MESSAGES.labels(service, topic, "ok").inc(len(records))
        await offsets.commit(consumer, records)

    return subscriber


TOPUP_AGE_MS = 5  # a batch whose newest record is older than this waited in the consumer's buffer
TOPUP_WAIT_MS = 10  # the longest a top-up waits for the fetch that taking the batch started


async def top_up(consumer: AIOKafkaConsumer, records: list[ConsumerRecord], max_records: int) -> list[ConsumerRecord]:
    """The records that reached the broker while `records` waited in the consumer's buffer, up to
    `max_records` in all (docs/decisions.md, "Fresh batches").

    aiokafka fetches a node's partitions again only once their buffered records are taken: the
    fetch sent when one batch is taken comes back at once with the few records then at the broker,
    and those wait in the buffer while that batch runs, to be the next batch, one batch late, while
    everything that arrived meanwhile waits one batch more. Taking the buffered records sends the
    next fetch; when they are stale (their newest is older than TOPUP_AGE_MS by the record
    timestamps), the answer to that fetch joins the batch: a batch then holds what reached the
    broker up to the moment it starts. A top-up waits at most TOPUP_WAIT_MS (the broker holds a
    fetch up to fetch_max_wait_ms when it has nothing). The clocks only decide whether to wait; a
    skewed one costs a wasted wait or a batch one batch late, never a record."""
    room = max_records - len(records)
    if room <= 0 or not records or time.time() * 1000 - max(r.timestamp for r in records) <= TOPUP_AGE_MS:
        return []
    try:
        more = await consumer.getmany(timeout_ms=TOPUP_WAIT_MS, max_records=room)
    except Exception as e:  # noqa: BLE001 - aiokafka raises only when it returns nothing
        log.warning("top-up fetch failed (%r); the batch goes as it was", e)
        return []
    return [r for part in more.values() for r in part]


def rewind(consumer: AIOKafkaConsumer, records: list[ConsumerRecord]) -> None:
    """Seek every partition of a failed batch back to its first record in the batch, so the whole
    batch comes again (SPEC 7.6: FastStream before 0.7.8 rewound only the first partition)."""
    first: dict[TopicPartition, int] = {}
    for r in records:
        tp = TopicPartition(r.topic, r.partition)
        if r.offset < first.get(tp, r.offset + 1):
            first[tp] = r.offset
    for tp, offset in first.items():
        consumer.seek(tp, offset)


class Offsets:
    """Commits a consumer's offsets behind its batches, at most one commit every `every_s`.

    A batch's offsets are due when its handler returned (after its database transaction
    committed); the handler does not wait for them. A commit is sent at once when the last left at
    least `every_s` ago, else when that time comes, with the offsets due by then: under load one
    commit covers many batches (at 5,000 events/s the commits, one per batch, were ~100 a second and
    the broker's group coordinator spent 0.06 of a core on them). Commits leave one at a time, in
    order. A commit that fails, one lost with the process, or offsets due but not yet sent when a
    process dies, only mean records handled again on their next delivery, which the consumers'
    inboxes make a no-op (SPEC 4). A graceful stop (`settle_commits`) sends what is due at once."""

    def __init__(self, name: str, every_s: float = COMMIT_EVERY_S):
        self.name, self.every_s = name, every_s
        self._due: dict[TopicPartition, int] = {}
        self._consumer: AIOKafkaConsumer | None = None
        self._sent_at = float("-inf")
        self._hurry = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def commit(self, consumer: AIOKafkaConsumer, records: list[ConsumerRecord]) -> None:
        last: dict[tuple[str, int], int] = {}
        for r in records:  # plain tuples: a TopicPartition per record cost 1.6% of entitlement's CPU
            k = (r.topic, r.partition)
            if last.get(k, -1) < r.offset:
                last[k] = r.offset
        for (t, p), o in last.items():
            tp = TopicPartition(t, p)
            if self._due.get(tp, -1) <= o:
                self._due[tp] = o + 1
        self._consumer = consumer
        if self._task is None or self._task.done():
            # In an empty context, the task and its done callback: each keeps the context it was
            # created in, and the consumer's holds FastStream's message of this batch (with every
            # record) for as long as it is kept (the task waits up to `every_s`).
            empty = contextvars.Context()
            self._task = asyncio.create_task(self._run(), name=f"commit-{self.name}", context=empty)
            _IN_FLIGHT[self._task] = self
            self._task.add_done_callback(_forget, context=empty)

    async def settle(self) -> None:
        """Send what is due now, and wait for it."""
        if self._task is not None and not self._task.done():
            self._hurry.set()
            await asyncio.wait([self._task])

    async def _run(self) -> None:
        try:
            while self._due:
                wait = self._sent_at + self.every_s - time.monotonic()
                if wait > 0 and not self._hurry.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._hurry.wait(), wait)
                due, self._due = self._due, {}
                self._sent_at = time.monotonic()
                assert self._consumer is not None
                await self._send(self._consumer, due)
        finally:
            self._hurry.clear()

    async def _send(self, consumer: AIOKafkaConsumer, upto: dict[TopicPartition, int]) -> None:
        owned = consumer.assignment()
        upto = {tp: o for tp, o in upto.items() if tp in owned}  # a partition revoked meanwhile: its new owner's
        if not upto:
            return
        try:
            await consumer.commit(upto)
        except Exception as e:  # noqa: BLE001 - the records come again and are found processed
            log.warning("%s: offset commit failed (%r); the batch's records may be delivered again", self.name, e)


_IN_FLIGHT: dict[asyncio.Task[None], Offsets] = {}


def _forget(task: asyncio.Task[None]) -> None:
    _IN_FLIGHT.pop(task, None)


async def settle_commits(timeout_s: float = 5.0) -> None:
    """Send the offsets due now and wait (bounded) for the commits in flight: a graceful stop does
    not leave its last batches uncommitted."""
    if _IN_FLIGHT:
        for offsets in list(_IN_FLIGHT.values()):
            offsets._hurry.set()  # noqa: SLF001 - the module's own class
        await asyncio.wait(list(_IN_FLIGHT), timeout=timeout_s)


class RawBatch(NamedTuple):
    raw: Any  # the batch's ConsumerRecords as consumed (a tuple; one record for a single message)
    consumer: AIOKafkaConsumer


async def keep_raw(msg: KafkaMessage) -> RawBatch:
    """FastStream decoder that decodes nothing: the handler gets the raw records and their consumer.
    Not the message itself: FastStream keeps the decoded body on the message, and a message that
    held itself would be a reference cycle, freed (with every record of its batch) only by the
    cyclic collector, which the services run rarely (shared/service.py): a backlog of 300,000 usage
    events took entitlement from 70 to 200 MiB."""
    return RawBatch(msg.raw_message, msg.consumer)


async def raw_batch(records: tuple[ConsumerRecord, ...], original: Callable[..., Awaitable[Any]]) -> Any:
    """FastStream batch parser that reads nothing of the records: the handler takes them as consumed
    (`keep_raw`), so the message FastStream carries them in needs no body or headers. FastStream's
    own walks every record (its value into a body list, its headers decoded into a dict): 0.35 µs
    a record in each service, for values no one reads (docs/benchmarks.md, thirteenth pass). Falls
    back to `any_headers` when `original` is not the bound `parse_batch` of a FastStream parser
    with the message class and consumer it builds messages from (another FastStream version)."""
    parser: Any = getattr(original, "__self__", None)
    msg_class, consumer = getattr(parser, "msg_class", None), getattr(parser, "_consumer", None)
    if msg_class is None or consumer is None or not isinstance(records, tuple) or not records:
        return await any_headers(records, original)
    first = records[0]
    return msg_class(body=b"", raw_message=records, consumer=consumer,
                     message_id=f"{first.offset}-{records[-1].offset}-{first.timestamp}")


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
    batch goes out as closed record batches per partition (`send_in_batches`; `send` per record
    costs a future, a partitioner call and an accumulator lookup each, FastStream's
    `broker.publish` about twice that; an open batch would wait `linger_ms`, 5 ms on every relay
    send, twice on the usage path).

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
            acks += await send_in_batches(producer, topic, partition, [(k, v) for _, k, v in group], _HEADERS)
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


async def send_in_batches(producer: AIOKafkaProducer, topic: str, partition: int,
                          records: Sequence[tuple[bytes, bytes]],
                          headers: Sequence[tuple[str, bytes]] = ()) -> list[asyncio.Future[Any]]:
    """Hand `records` (key, value) of one partition to `producer` in order, as closed record batches
    (`create_batch`/`send_batch`: no per-record future, partitioner call or accumulator lookup, which
    `send` costs for each record); returns their acks. Each batch is closed before it is handed over:
    aiokafka sends an open batch only after `linger_ms`, a closed one at once."""
    acks = []
    hdrs = list(headers)  # aiokafka's record batch builder takes a list only
    batch = producer.create_batch()
    for key, value in records:
        if batch.append(key=key, value=value, timestamp=None, headers=hdrs) is not None:
            continue
        if batch.record_count():  # full (max_batch_size): send it, start the next one
            batch.close()
            acks.append(await producer.send_batch(batch, topic, partition=partition))
            batch = producer.create_batch()
            if batch.append(key=key, value=value, timestamp=None, headers=hdrs) is not None:
                continue
        # Larger than a batch: alone, as `send` takes it (up to the producer's request size; beyond,
        # MessageSizeTooLargeError, which the relay parks). Same partition, same order.
        acks.append(await producer.send(topic, value, key=key, partition=partition, headers=hdrs or None))
    if batch.record_count():
        batch.close()
        acks.append(await producer.send_batch(batch, topic, partition=partition))
    return acks


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
