"""`python -m services.order` as a real process: kill -9 and restart lose nothing and repeat nothing."""

from __future__ import annotations

import json

import httpx
import pytest

from contracts import topics
from tests.support.kafka import TopicReader
from tests.support.services import SECRET, ServiceProcess, bearer

pytestmark = pytest.mark.integration


async def test_paid_order_survives_kill9_and_the_repeated_payment_emits_nothing_new(
    real_infra, fresh_db, org_id, tmp_path
):
    env = {
        "AIMIS_KAFKA_BOOTSTRAP": real_infra.bootstrap,
        "AIMIS_DATABASE_URL": fresh_db,
        "AIMIS_AUTH_SECRET": SECRET,
    }
    admin, org = bearer(SECRET), bearer(SECRET, org_id)
    svc = await ServiceProcess("order", env, tmp_path).start()
    reader = await TopicReader(real_infra.bootstrap, topics.ORDERS).start()
    try:
        async with httpx.AsyncClient(base_url=svc.url, timeout=30) as c:
            assert (await c.get("/v1/catalog")).status_code == 200
            agreement = {"agreement_ref": "AGR-1", "signed_at": "2026-10-01T00:00:00Z"}
            assert (await c.put(f"/v1/admin/orgs/{org_id}/agreement", json=agreement, headers=admin)).status_code == 200
            body = {"order_id": "o-kill", "org_id": org_id, "lines": [{"sku": "AI-QTY", "quantity": 1000}]}
            order = (await c.post("/v1/orders", json=body, headers=org)).json()
            pay = {"payment_ref": "pay-1", "amount": order["total"]}
            paid = await c.post("/v1/orders/o-kill/payment", json=pay, headers=admin)
            assert paid.status_code == 200
        svc.kill9()
        await svc.start()
        async with httpx.AsyncClient(base_url=svc.url, timeout=30) as c:
            assert (await c.post("/v1/orders", json=body, headers=org)).status_code == 200
            again = await c.post("/v1/orders/o-kill/payment", json=pay, headers=admin)
            assert again.status_code == 200 and again.json() == paid.json()
        is_paid = lambda e: e["subject"] == org_id and e["type"] == "aimis.orders.order_paid"  # noqa: E731
        await reader.wait_for(is_paid)
        await reader.settle()
        # the relay may publish a row twice across a kill (at-least-once); consumers dedupe on the id
        assert len({e["id"] for e in reader.events(is_paid)}) == 1
        mine = [r for r in reader.records if json.loads(r.value)["subject"] == org_id]
        assert mine and {r.key for r in mine} == {org_id.encode()}
    finally:
        await reader.stop()
        svc.stop()
