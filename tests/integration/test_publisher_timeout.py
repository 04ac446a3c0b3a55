"""The relay's publisher never waits for good on Kafka's acknowledgement (issue 13: in the cluster
fault test the deductions once stopped for minutes). aiokafka's idempotent producer retries a
retriable failure for ever, such as a broker it cannot reach: here the only broker is stopped."""

from __future__ import annotations

import asyncio
import time

import pytest

from shared.kafka import ProducerPublisher, PublishTimeout
from tests.support.infra import local_infra
from tests.support.kafka import TopicReader, new_topic

pytestmark = pytest.mark.integration


async def test_a_publish_kafka_does_not_acknowledge_fails_in_bounded_time_and_a_new_producer_sends_the_next():
    with local_infra() as infra:  # a private broker: this test stops it
        topic = await new_topic(infra.bootstrap, "t-acks")
        assert infra.stop_kafka is not None and infra.start_kafka is not None
        pub = ProducerPublisher(infra.bootstrap, "t-acks", ack_timeout_s=2.0, stop_s=1.0)
        await pub.start()
        try:
            await pub([(topic, b"org-1", b'{"n": 0}')])  # connected, the topic's leader known
            first = pub.producer
            await asyncio.to_thread(infra.stop_kafka)
            started = time.monotonic()
            with pytest.raises(PublishTimeout):
                # the outer bound only keeps a regression from hanging the suite
                await asyncio.wait_for(pub([(topic, b"org-1", b'{"n": 1}')]), timeout=30)
            took = time.monotonic() - started
            assert took < 10, f"the publish failed only after {took:.1f} s"
            assert pub.producer is None, "the producer that held the unacknowledged records was kept"

            await asyncio.to_thread(infra.start_kafka)
            async with TopicReader(infra.bootstrap, topic, from_beginning=True) as reader:
                await asyncio.wait_for(pub([(topic, b"org-1", b'{"n": 2}')]), timeout=60)
                assert pub.producer is not None and pub.producer is not first
                await reader.wait_for(lambda e: e == {"n": 2})
        finally:
            await pub.stop()


async def test_a_publish_goes_out_at_once_not_after_the_producers_linger(settings):
    """The relay's batches are complete when handed over: closed, they are sent at once. An open
    batch waits for the producer's `linger_ms` (here 3 s, to make it plain) on every publish."""
    topic = await new_topic(settings.kafka_bootstrap, "t-linger", 2)
    pub = ProducerPublisher(settings.kafka_bootstrap, "t-linger", linger_ms=3000)
    await pub.start()
    try:
        await pub([(topic, b"warm-up", b"{}")])  # metadata and connection first
        rows = [(topic, f"org-{i}".encode(), f'{{"n": {i}}}'.encode()) for i in range(20)]
        started = time.monotonic()
        await pub(rows)
        took = time.monotonic() - started
        assert took < 1.5, f"a publish took {took:.2f} s: the batches waited for the linger"
    finally:
        await pub.stop()
