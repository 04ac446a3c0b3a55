"""The outbox relay's Kafka publisher for metering: a plain idempotent aiokafka producer.

Metering forwards every accepted use, so its relay is on the hot path. The shared relay publishes
through FastStream's `broker.publish` (about 27 us of CPU per message here); a plain aiokafka
producer with the same settings (acks=all, idempotence, key = org_id, same partitioner and headers)
takes about half. The shared `Relay` (seq order, advisory-lock leadership, mark-sent) is reused
unchanged; only its publish function differs.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import AIOKafkaProducer

from shared.outbox import Relay
from shared.service import Runtime

_HEADERS = [("content-type", b"application/cloudevents+json")]


class ProducerPublisher:
    def __init__(self, bootstrap: str, client_id: str):
        self.producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap, client_id=client_id, acks="all", enable_idempotence=True,
            linger_ms=5, max_batch_size=256 * 1024,
        )

    async def __call__(self, topic: str, key: bytes, value: bytes) -> "asyncio.Future[Any]":
        return await self.producer.send(topic, value, key=key, headers=_HEADERS)


def use_producer_relay(rt: Runtime) -> None:
    """Swap the runtime's relay for one publishing with ProducerPublisher (on start; undone on stop)."""
    publisher = ProducerPublisher(rt.settings.kafka_bootstrap, f"aimis-{rt.name}-relay")

    async def start(rt: Runtime) -> None:
        await publisher.producer.start()
        if rt.relay is not None:
            await rt.relay.stop()
        rt.relay = Relay(rt.settings.database_url, rt.schema, publisher)
        rt.relay.start()

    async def stop(rt: Runtime) -> None:
        if rt.relay is not None:
            await rt.relay.stop()
        await publisher.producer.stop()

    rt.on_start.append(start)
    rt.on_stop.append(stop)
