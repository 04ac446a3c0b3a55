"""The fulfilment promise: a paid order is credited (fulfilled) within AIMIS_FULFILMENT_SLA_S.

The overview promises credit within 24 hours of purchase; here it takes seconds, so the default SLA
is one hour. The order view shows `fulfilment_due_by` and `fulfilment_overdue`; /metrics exports the
number of overdue orders (`aimis_orders_unfulfilled_overdue`) and the age of the oldest paid order
still waiting, recounted every AIMIS_FULFILMENT_CHECK_S by a background task, for the alert in
deploy/prometheus/alerts.yml.
"""

from __future__ import annotations

import asyncio
import logging
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg
from prometheus_client import Gauge

from services.order import store
from shared.clock import Clock
from shared.config import get_settings

log = logging.getLogger(__name__)

UNFULFILLED_OVERDUE = Gauge(
    "aimis_orders_unfulfilled_overdue", "Paid orders not fulfilled within AIMIS_FULFILMENT_SLA_S"
)
OLDEST_UNFULFILLED = Gauge(
    "aimis_orders_oldest_unfulfilled_seconds",
    "Seconds since the oldest paid, not yet fulfilled order was paid (0 when none waits)",
)


@dataclass(frozen=True)
class Policy:
    sla: timedelta
    clock: Clock

    def fields(self, order: dict[str, Any]) -> dict[str, Any]:
        return view_fields(order["status"], order.get("paid_at"), self.clock.now(), self.sla)


def view_fields(status: str, paid_at: datetime | None, now: datetime, sla: timedelta) -> dict[str, Any]:
    """`fulfilment_due_by` (paid and fulfilled orders) and `fulfilment_overdue` (paid, past due)."""
    if paid_at is None or status not in ("paid", "fulfilled"):
        return {"fulfilment_due_by": None, "fulfilment_overdue": False}
    due_by = paid_at + sla
    return {"fulfilment_due_by": due_by, "fulfilment_overdue": status == "paid" and now > due_by}


# The policy of the app serving the current request (set by the order app's middleware), so the
# order view can show the SLA without every route passing it along.
_current: ContextVar[Policy | None] = ContextVar("aimis_order_sla_policy", default=None)


def bind(policy: Policy) -> None:
    _current.set(policy)


def annotate(order: dict[str, Any]) -> dict[str, Any]:
    """`order` with the SLA fields of the bound policy (the settings' SLA and the real clock if none)."""
    policy = _current.get() or Policy(timedelta(seconds=get_settings().fulfilment_sla_s), Clock())
    return {**order, **policy.fields(order)}


async def refresh(pool: asyncpg.Pool, policy: Policy) -> tuple[int, float]:
    """Recount the overdue orders into the gauges; return (overdue, age of the oldest in seconds)."""
    now = policy.clock.now()
    async with pool.acquire() as conn:
        overdue, oldest = await store.unfulfilled_summary(conn, now - policy.sla)
    age = max(0.0, (now - oldest).total_seconds()) if oldest is not None else 0.0
    UNFULFILLED_OVERDUE.set(overdue)
    OLDEST_UNFULFILLED.set(age)
    return overdue, age


async def watch(get_pool: Any, policy: Policy, every_s: float) -> None:
    """`refresh` every `every_s` until cancelled; a failed count (database down) keeps the last values."""
    while True:
        try:
            await refresh(get_pool(), policy)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - the watch never stops the service
            log.warning("fulfilment SLA count failed: %r", e)
        await asyncio.sleep(every_s)
