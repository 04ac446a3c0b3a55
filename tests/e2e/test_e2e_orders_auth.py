"""SPEC 2.6 and 5.3 end to end: order lifecycle, idempotency, payment rules, auth."""

from __future__ import annotations

import uuid

import pytest

from cli.client import CliError
from tests.e2e.helpers import eventually, onboard

pytestmark = pytest.mark.e2e

CI_LINE = {"sku": "CI-QTY", "quantity": 1000, "storage_years": 2}


async def test_order_lifecycle_placed_paid_fulfilled(stack, org_id):
    await onboard(stack.admin, org_id)
    o = stack.admin.place_order(org_id, [CI_LINE])
    assert o["status"] == "placed"
    with pytest.raises(CliError) as e:
        stack.admin.pay(o["order_id"], "0.01", "PAY-wrong")
    assert (e.value.status, e.value.code) == (422, "AMOUNT_MISMATCH")
    paid = stack.admin.pay(o["order_id"], o["total"], "PAY-1")
    assert paid["status"] in ("paid", "fulfilled")
    done = await eventually(lambda: stack.admin.order(o["order_id"]), lambda x: x["status"] == "fulfilled")
    assert done["paid_at"] is not None
    again = stack.admin.pay(o["order_id"], o["total"], "PAY-1")  # the same payment again: idempotent
    assert again["order_id"] == o["order_id"]
    with pytest.raises(CliError) as e:
        stack.admin.call("order", "POST", f"/v1/orders/{o['order_id']}/cancel")
    assert e.value.status == 409


async def test_cancelled_order_cannot_be_paid(stack, org_id):
    await onboard(stack.admin, org_id)
    o = stack.admin.place_order(org_id, [CI_LINE])
    c = stack.admin.call("order", "POST", f"/v1/orders/{o['order_id']}/cancel")
    assert c["status"] == "cancelled"
    with pytest.raises(CliError) as e:
        stack.admin.pay(o["order_id"], o["total"], "PAY-x")
    assert e.value.code == "ORDER_NOT_PAYABLE"


async def test_order_id_is_idempotent_and_conflicting_body_is_409(stack, org_id):
    await onboard(stack.admin, org_id)
    oid = f"client-{uuid.uuid4().hex[:8]}"
    a = stack.admin.place_order(org_id, [CI_LINE], oid)
    b = stack.admin.place_order(org_id, [CI_LINE], oid)
    assert a == b
    with pytest.raises(CliError) as e:
        stack.admin.place_order(org_id, [{**CI_LINE, "quantity": 2000}], oid)
    assert (e.value.status, e.value.code) == (409, "ORDER_ID_CONFLICT")
    listed = stack.admin.call("order", "GET", f"/v1/orgs/{org_id}/orders")
    assert [x["order_id"] for x in listed["orders"]] == [oid]


async def test_requests_without_a_token_are_401(stack, org_id):
    anon = stack.anonymous()
    for service, path in [("entitlement", f"/v1/orgs/{org_id}/balances"), ("order", f"/v1/orgs/{org_id}/orders"),
                          ("metering", f"/v1/orgs/{org_id}/usage"), ("expiry", f"/v1/orgs/{org_id}/schedule")]:
        with pytest.raises(CliError) as e:
            anon.call(service, "GET", path)
        assert (e.value.status, e.value.code) == (401, "UNAUTHORIZED"), path


async def test_org_token_reads_its_own_org_only_and_admin_endpoints_are_admin_only(stack, org_id):
    mine = stack.org_api(org_id)
    assert mine.balances(org_id)["org_id"] == org_id
    for service, path in [("entitlement", "/v1/orgs/someone-else/balances"), ("order", "/v1/orgs/someone-else/orders"),
                          ("expiry", "/v1/orgs/someone-else/schedule"), ("metering", "/v1/orgs/someone-else/usage")]:
        with pytest.raises(CliError) as e:
            mine.call(service, "GET", path)
        assert (e.value.status, e.value.code) == (404, "NOT_FOUND"), path  # as if missing (SPEC 7.4)
    with pytest.raises(CliError) as e:
        mine.record_agreement(org_id, "AGR-self", "2026-01-01T00:00:00Z")
    assert e.value.status == 403
    with pytest.raises(CliError) as e:
        mine.import_order("o-self", org_id, [CI_LINE], "2026-01-01T00:00:00Z", "x")
    assert e.value.status == 403
    with pytest.raises(CliError) as e:
        mine.place_order("someone-else", [CI_LINE])
    assert e.value.status == 403


async def test_every_service_serves_health_readiness_metrics_and_openapi(stack):
    import httpx

    for name, url in stack.urls.items():
        for path in ("/healthz", "/readyz", "/openapi.json", "/metrics"):
            r = httpx.get(url + path, timeout=10)
            assert r.status_code == 200, (name, path)
        assert 'aimis_http_requests_total{service=' in r.text and 'status="200"' in r.text, name
