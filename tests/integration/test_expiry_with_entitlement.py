"""Expiry and entitlement together (both in-process, real broker and database): a lot's remainder
is forfeited after the grace, and a late use that occurred before expiry but arrived within the
grace is still drawn from that lot."""

from __future__ import annotations

import contextlib
import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import httpx
import pytest

from contracts import topics
from contracts.events import DeductionRequestedData, OrderLineData, OrderPaidData, encode, new_event
from services.entitlement.app import create_app as create_entitlement
from services.expiry.app import create_app as create_expiry
from shared.clock import add_years
from tests.support.kafka import TopicReader, producer, wait_until
from tests.support.services import bearer, serve_in_process

pytestmark = pytest.mark.integration

GRACE_S = 5  # both services share it; long enough for a late use to be sent inside it


def _order_paid(org_id: str, order_id: str, paid_at: datetime):
    line = OrderLineData(line=0, sku="CI-QTY", quantity=1000, storage_years=1, price=Decimal("100.00"))
    data = OrderPaidData(
        order_id=order_id, org_id=org_id, lines=[line], total=Decimal("100.00"), price_book_version="test",
        placed_at=paid_at, paid_at=paid_at, payment_ref="pay-1", imported=True,
    )
    return new_event(org_id, data, "/aimis/order")


def _use(org_id: str, quantity: int, occurred_at: datetime):
    usage_id = str(uuid.uuid4())
    data = DeductionRequestedData(
        usage_id=usage_id, org_id=org_id, resource="cloud_inspection", quantity=quantity,
        occurred_at=occurred_at, received_at=datetime.now(timezone.utc), inspection_id=f"insp-{usage_id[:8]}",
    )
    return new_event(org_id, data, "/aimis/metering", id=usage_id)


async def test_lot_remainder_forfeited_after_grace_and_late_use_within_grace_drawn_from_it(
    settings, fresh_db, org_id
):
    s = settings.model_copy(update={"database_url": fresh_db, "late_usage_grace_s": GRACE_S})
    tag = uuid.uuid4().hex[:8]
    entitlement = create_entitlement(s, group_id=f"t-ent-{tag}")
    expiry = create_expiry(s, group_id=f"t-exp-{tag}")
    kafka = await producer(s.kafka_bootstrap)
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(kafka.stop)
        await stack.enter_async_context(serve_in_process(entitlement))
        expiry_url = await stack.enter_async_context(serve_in_process(expiry))
        ledger = await stack.enter_async_context(TopicReader(s.kafka_bootstrap, topics.LEDGER))

        def mine(kind: str, **data):  # type: ignore[no-untyped-def]
            return lambda e: (e["subject"] == org_id and e["type"] == f"aimis.ledger.{kind}"
                              and all(e["data"].get(k) == v for k, v in data.items()))

        async def send(topic: str, event) -> None:  # type: ignore[no-untyped-def]
            await kafka.send_and_wait(topic, encode(event), key=org_id.encode())

        order_id = f"o-{tag}"
        lot_id = f"{order_id}.0"
        # Paid (almost) a year ago: the lot expires in a few seconds.
        paid_at = add_years(datetime.now(timezone.utc) + timedelta(seconds=8), -1)
        await send(topics.ORDERS, _order_paid(org_id, order_id, paid_at))
        [credited] = await ledger.wait_for(mine("lot_credited", lot_id=lot_id), timeout=60)
        expires_at = datetime.fromisoformat(credited["data"]["expires_at"])
        due_at = expires_at + timedelta(seconds=GRACE_S)

        await send(topics.DEDUCTIONS, _use(org_id, 200, datetime.now(timezone.utc)))
        await ledger.wait_for(mine("usage_deducted"), timeout=30)

        # A use that occurred just before expiry, reported after it (inside the grace).
        await wait_until(lambda: datetime.now(timezone.utc) > expires_at, timeout=30)
        late = _use(org_id, 100, expires_at - timedelta(seconds=1))
        await send(topics.DEDUCTIONS, late)
        [drawn] = await ledger.wait_for(mine("usage_deducted", usage_id=late.id), timeout=30)
        assert datetime.now(timezone.utc) < due_at, "the late use must be processed inside the grace"
        assert [(a["lot_id"], a["quantity"]) for a in drawn["data"]["allocations"]] == [(lot_id, 100)]
        assert drawn["data"]["arrears_quantity"] == 0

        # The expiry service commands the lot at expiry + grace; entitlement forfeits the rest.
        [expired] = await ledger.wait_for(mine("lot_expired", lot_id=lot_id), timeout=30)
        assert expired["data"]["forfeited"] == 1000 - 200 - 100
        assert datetime.fromisoformat(expired["time"]) >= due_at

        # The schedule drops the lot once the ledger says it expired.
        async def schedule_empty() -> bool:
            async with httpx.AsyncClient() as c:
                r = await c.get(f"{expiry_url}/v1/orgs/{org_id}/schedule", headers=bearer(s.auth_secret, org_id))
                return r.status_code == 200 and r.json()["items"] == []
        await wait_until(schedule_empty, timeout=30)

        # A use that occurred before expiry but arrives after the grace no longer draws on the lot.
        too_late = _use(org_id, 50, expires_at - timedelta(seconds=1))
        await send(topics.DEDUCTIONS, too_late)
        [after] = await ledger.wait_for(mine("usage_deducted", usage_id=too_late.id), timeout=30)
        assert after["data"]["allocations"] == [] and after["data"]["arrears_quantity"] == 50

        await ledger.settle(quiet_s=1.5)
        assert len(ledger.events(mine("lot_expired"))) == 1
