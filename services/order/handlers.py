"""Kafka consumer of the order service: `aimis.ledger.order_fulfilled` marks an order fulfilled.

Other ledger kinds are ignored (counted); bad records go to `aimis.order.dlq.v1`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg
from prometheus_client import Counter

from contracts import topics
from contracts.events import CloudEvent, OrderFulfilledData, models_on
from services.order import store
from shared.consumer import DeadLetters, Subscription
from shared.service import Runtime

log = logging.getLogger(__name__)

UNMATCHED = Counter(
    "aimis_order_fulfilled_unmatched_total", "order_fulfilled events that matched no paid order (ignored)"
)


async def mark_fulfilled(
    conn: asyncpg.Connection, events: list[CloudEvent[Any]], now: datetime
) -> Sequence[CloudEvent[Any]]:
    """Policy: set each paid order fulfilled (matching org only); emits nothing."""
    done = [e.data for e in events]
    changed = await store.mark_fulfilled(
        conn, [d.order_id for d in done], [d.org_id for d in done], [d.fulfilled_at for d in done]
    )
    for d in done:
        if d.order_id not in changed:
            UNMATCHED.inc()
            log.warning("order_fulfilled for order %s (org %s) matched no paid order; ignored",
                        d.order_id, d.org_id, extra={"org_id": d.org_id})
    return []


def ledger(rt: Runtime) -> Subscription:
    return Subscription(
        topic=topics.LEDGER,
        accepts=(OrderFulfilledData,),
        ignores=tuple(m for m in models_on(topics.LEDGER) if m is not OrderFulfilledData),
        stream="ledger",
        policy=mark_fulfilled,
        rejects=DeadLetters(rt, "order"),
    )
