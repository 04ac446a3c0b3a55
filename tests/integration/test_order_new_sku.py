"""A SKU of an existing kind is one registry entry plus one price: the order service, started with
a test-only registry and price book, sells the test-only `CI-QTY-BULK` end to end over HTTP, and
announces the paid line so that entitlement's domain credits it as a cloud-inspection lot."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from contracts.events import parse_event
from services.entitlement import domain as entitlement
from tests.integration.test_order_api import start
from tests.unit.test_sku_registry import TEST_REGISTRY, bulk_book_doc

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def bulk_svc(real_infra, tmp_path_factory):
    path = tmp_path_factory.mktemp("book") / "bulk.json"
    path.write_text(json.dumps(bulk_book_doc()))
    async for s in start(real_infra, price_book=path, registry=TEST_REGISTRY):
        yield s


async def test_test_only_sku_is_listed_placed_priced_paid_and_credited_as_a_lot(bulk_svc, org_id):
    svc = bulk_svc
    assert (await svc.agree(org_id)).status_code == 200
    catalog = {i["sku"]: i for i in (await svc.http.get("/v1/catalog")).json()["items"]}
    assert catalog["CI-QTY-BULK"]["unit_prices"] == {"5": "1.20", "10": "2.00"}

    resp = await svc.place(org_id, [{"sku": "CI-QTY-BULK", "quantity": 300_000, "storage_years": 5}])
    assert resp.status_code == 201, resp.text
    order = resp.json()
    assert Decimal(order["total"]) == Decimal("360000.00") == Decimal(order["lines"][0]["price"])

    bad = await svc.place(org_id, [{"sku": "CI-QTY-BULK", "quantity": 300_000, "storage_years": 3}])
    assert bad.status_code == 422 and bad.json()["error"] == {
        "code": "INVALID_STORAGE_YEARS", "message": bad.json()["error"]["message"], "line": 0}

    paid = await svc.pay(org_id, order)
    assert paid.status_code == 200 and paid.json()["status"] == "paid"
    async with svc.app.state.runtime.pool.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT payload FROM outbox WHERE key = $1 AND convert_from(payload, 'UTF8') LIKE '%order_paid%'", org_id
        )
    event = parse_event(bytes(row["payload"]))
    (line,) = event.data.lines
    kind = entitlement.check_line(line.line, line.sku, quantity=line.quantity, storage_years=line.storage_years,
                                  months=line.months, feature=line.feature, years=line.years,
                                  registry=TEST_REGISTRY)
    assert (kind, entitlement.lot_resource(line.sku, TEST_REGISTRY)) == ("lot", "cloud_inspection")
    lot = entitlement.new_lot(f"{order['order_id']}.0", line.quantity, line.storage_years, event.data.paid_at)
    assert lot.remaining == 300_000 and lot.storage_years == 5

