"""The fulfilment promise on the real database and broker: a paid order not fulfilled within
AIMIS_FULFILMENT_SLA_S shows as overdue in the order view and is counted on /metrics, and stops
being either once the ledger reports it fulfilled (services/order/sla.py)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import asyncpg
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from contracts import topics
from contracts.events import OrderFulfilledData, encode, new_event
from services.order.app import create_app
from shared.clock import FixedClock
from shared.config import Settings
from tests.support.kafka import producer, wait_until
from tests.support.services import SECRET, bearer, serve_in_process

pytestmark = pytest.mark.integration

ADMIN = bearer(SECRET)
SLA = timedelta(seconds=3600)
T0 = datetime(2026, 11, 2, 9, 0, tzinfo=timezone.utc)
LINE = {"sku": "AI-QTY", "quantity": 1000}


@dataclass
class Svc:
    http: httpx.AsyncClient
    clock: FixedClock
    settings: Settings

    async def paid_order(self, org: str) -> dict[str, Any]:
        await self.http.put(f"/v1/admin/orgs/{org}/agreement",
                            json={"agreement_ref": "AGR-1", "signed_at": "2026-10-01T09:00:00Z"}, headers=ADMIN)
        placed = await self.http.post("/v1/orders", json={"org_id": org, "lines": [LINE]}, headers=bearer(SECRET, org))
        assert placed.status_code == 201, placed.text
        assert placed.json()["fulfilment_due_by"] is None and placed.json()["fulfilment_overdue"] is False
        order = placed.json()
        paid = await self.http.post(f"/v1/orders/{order['order_id']}/payment",
                                    json={"payment_ref": "pay-1", "amount": order["total"]}, headers=ADMIN)
        assert paid.status_code == 200, paid.text
        return paid.json()

    async def view(self, order_id: str) -> dict[str, Any]:
        got = await self.http.get(f"/v1/orders/{order_id}", headers=ADMIN)
        assert got.status_code == 200, got.text
        return got.json()

    async def gauges(self) -> dict[str, float]:
        text = (await self.http.get("/metrics")).text
        return {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples
                if s.name.startswith("aimis_orders_")}

    async def gauges_become(self, overdue: float, oldest_s: float) -> None:
        want = {"aimis_orders_unfulfilled_overdue": overdue, "aimis_orders_oldest_unfulfilled_seconds": oldest_s}

        async def matches() -> bool:
            got = await self.gauges()
            return all(got.get(k) == v for k, v in want.items())

        try:
            await wait_until(matches, timeout=10)
        except AssertionError:
            raise AssertionError(f"gauges {await self.gauges()} never became {want}") from None


@pytest.fixture
async def svc(real_infra: Any) -> AsyncIterator[Svc]:
    """The order service on a fresh database with a clock standing at T0, recounting every 0.1 s."""
    name = f"t_sla_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(real_infra.dsn)
    await admin.execute(f"CREATE DATABASE {name}")
    settings = Settings(kafka_bootstrap=real_infra.bootstrap, database_url=f"{real_infra.dsn.rsplit('/', 1)[0]}/{name}",
                        auth_secret=SECRET, fulfilment_sla_s=int(SLA.total_seconds()), fulfilment_check_s=0.1)
    clock = FixedClock(T0)
    try:
        async with serve_in_process(create_app(settings, clock)) as url, \
                httpx.AsyncClient(base_url=url, timeout=30) as http:
            yield Svc(http, clock, settings)
    finally:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.close()


async def test_a_paid_order_is_due_within_the_sla_and_overdue_one_second_after(svc: Svc, org_id: str) -> None:
    order = await svc.paid_order(org_id)
    assert datetime.fromisoformat(order["paid_at"]) == T0
    assert datetime.fromisoformat(order["fulfilment_due_by"]) == T0 + SLA
    assert order["fulfilment_overdue"] is False
    await svc.gauges_become(overdue=0, oldest_s=0)

    svc.clock.advance(SLA)  # exactly at the deadline: still on time
    assert (await svc.view(order["order_id"]))["fulfilment_overdue"] is False
    await svc.gauges_become(overdue=0, oldest_s=SLA.total_seconds())

    svc.clock.advance(timedelta(seconds=1))
    late = await svc.view(order["order_id"])
    assert late["status"] == "paid" and late["fulfilment_overdue"] is True
    listed = (await svc.http.get(f"/v1/orgs/{org_id}/orders", headers=ADMIN)).json()["orders"]
    assert [(o["order_id"], o["fulfilment_overdue"]) for o in listed] == [(order["order_id"], True)]
    await svc.gauges_become(overdue=1, oldest_s=SLA.total_seconds() + 1)


async def test_fulfilment_on_the_ledger_clears_the_overdue_order_and_its_count(svc: Svc, org_id: str) -> None:
    order = await svc.paid_order(org_id)
    svc.clock.advance(SLA + timedelta(minutes=5))
    await svc.gauges_become(overdue=1, oldest_s=(SLA + timedelta(minutes=5)).total_seconds())

    fulfilled_at = svc.clock.now()
    event = new_event(org_id, OrderFulfilledData(
        org_id=org_id, order_id=order["order_id"], fulfilled_at=fulfilled_at), "/aimis/entitlement")
    p = await producer(svc.settings.kafka_bootstrap)
    try:
        await p.send_and_wait(topics.LEDGER, encode(event), key=org_id.encode())
    finally:
        await p.stop()

    async def fulfilled() -> dict[str, Any] | None:
        got = await svc.view(order["order_id"])
        return got if got["status"] == "fulfilled" else None

    got = await wait_until(fulfilled, timeout=30)
    assert got["fulfilment_overdue"] is False  # fulfilled late, but no longer waiting
    assert datetime.fromisoformat(got["fulfilment_due_by"]) == T0 + SLA
    await svc.gauges_become(overdue=0, oldest_s=0)


async def test_only_paid_orders_past_their_own_deadline_are_counted(svc: Svc, org_id: str) -> None:
    first = await svc.paid_order(org_id)
    svc.clock.advance(timedelta(minutes=30))
    second = await svc.paid_order(org_id)
    placed = await svc.http.post("/v1/orders", json={"org_id": org_id, "lines": [LINE]}, headers=bearer(SECRET, org_id))
    svc.clock.advance(timedelta(minutes=31))  # first: 61 min since payment, second: 31 min

    assert (await svc.view(first["order_id"]))["fulfilment_overdue"] is True
    assert (await svc.view(second["order_id"]))["fulfilment_overdue"] is False
    unpaid = await svc.view(placed.json()["order_id"])
    assert unpaid["status"] == "placed" and unpaid["fulfilment_overdue"] is False
    assert unpaid["fulfilment_due_by"] is None
    await svc.gauges_become(overdue=1, oldest_s=61 * 60)
