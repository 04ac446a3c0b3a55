"""Kafka consumer of the order service: `aimis.ledger.order_fulfilled` marks an order fulfilled."""

from __future__ import annotations

import json
import logging
from typing import Any

from aiokafka import ConsumerRecord
from prometheus_client import Counter

from contracts.events import EVENT_TYPES, EventError, parse_event
from shared import inbox
from shared.service import Runtime

from services.order import store

log = logging.getLogger(__name__)

FULFILLED = "aimis.ledger.order_fulfilled"
LEDGER_KINDS = frozenset(t for t in EVENT_TYPES if t.startswith("aimis.ledger."))

LEDGER_SKIPPED = Counter(
    "aimis_order_ledger_skipped_total",
    "Records on aimis.ledger.v1 the order service could not use (logged and skipped)",
    ["reason"],
)
LEDGER_IGNORED = Counter(
    "aimis_order_ledger_ignored_total", "Valid ledger records of kinds the order service does not need"
)


def _decode(record: ConsumerRecord) -> Any | None:
    """The order_fulfilled event of `record`, or None (other kinds ignored, bad records skipped)."""
    try:
        return parse_event(record.value or b"", allowed={FULFILLED})
    except EventError as e:
        if e.reason == "UNKNOWN_TYPE" and _type_of(record) in LEDGER_KINDS:
            LEDGER_IGNORED.inc()
            return None
        reason, detail = e.reason, e.detail
    except Exception as e:  # noqa: BLE001 - bad input never stops the consumer
        reason, detail = "MALFORMED", repr(e)
    LEDGER_SKIPPED.labels(reason).inc()
    log.warning(
        "skipping ledger record %s/%s@%s: %s %s", record.topic, record.partition, record.offset,
        reason, detail[:500], extra={"topic": record.topic, "reason": reason},
    )
    return None


def _type_of(record: ConsumerRecord) -> str | None:
    try:
        doc = json.loads(record.value)
        return doc.get("type") if isinstance(doc, dict) else None
    except (ValueError, TypeError):
        return None


def ledger_handler(rt: Runtime):  # type: ignore[no-untyped-def]
    async def handle(records: list[ConsumerRecord]) -> None:
        events = [ev for ev in map(_decode, records) if ev is not None]
        if not events:
            return
        async with rt.pool.acquire() as conn, conn.transaction():  # type: ignore[union-attr]
            new = await inbox.claim(conn, "ledger", [ev.id for ev in events])
            todo, seen = [], set()
            for ev in events:
                if ev.id in new and ev.id not in seen:
                    seen.add(ev.id)
                    todo.append(ev)
            if not todo:
                return
            changed = await store.mark_fulfilled(
                conn, [e.data.order_id for e in todo], [e.data.org_id for e in todo],
                [e.data.fulfilled_at for e in todo],
            )
        for ev in todo:
            if ev.data.order_id not in changed:
                LEDGER_SKIPPED.labels("NOT_A_PAID_ORDER").inc()
                log.warning(
                    "order_fulfilled %s for order %s (org %s) matched no paid order; ignored",
                    ev.id, ev.data.order_id, ev.data.org_id, extra={"org_id": ev.data.org_id},
                )

    return handle
