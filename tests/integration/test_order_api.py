"""Order service over HTTP on the real database and broker: one test per error code, pricing,
idempotency, auth, pagination, OpenAPI. (`OrderService`/`start` are reused by test_order_events.)"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI

from services.order.app import create_app
from shared.config import Settings
from tests.support.services import SECRET, bearer, serve_in_process

pytestmark = pytest.mark.integration

ADMIN = bearer(SECRET)
FINANCE = bearer(SECRET, role="finance")


def org_token(org: str) -> dict[str, str]:
    return bearer(SECRET, org)


@dataclass
class OrderService:
    url: str
    app: FastAPI
    http: httpx.AsyncClient
    settings: Settings

    async def agree(self, org: str, ref: str = "AGR-1", signed_at: str = "2026-10-01T09:00:00Z") -> httpx.Response:
        return await self.http.put(
            f"/v1/admin/orgs/{org}/agreement", json={"agreement_ref": ref, "signed_at": signed_at}, headers=ADMIN
        )

    async def place(
        self, org: str, lines: list[dict[str, Any]], order_id: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        body: dict[str, Any] = {"org_id": org, "lines": lines}
        if order_id is not None:
            body["order_id"] = order_id
        return await self.http.post("/v1/orders", json=body, headers=org_token(org) if headers is None else headers)

    async def pay(
        self, org: str, order: dict[str, Any], ref: str = "pay-1", amount: str | None = None
    ) -> httpx.Response:
        return await self.http.post(
            f"/v1/orders/{order['order_id']}/payment",
            json={"payment_ref": ref, "amount": amount or order["total"]}, headers=FINANCE,
        )

    async def import_(self, org: str, lines: list[dict[str, Any]], paid_at: str, order_id: str | None = None,
                      payment_ref: str = "wire-1") -> httpx.Response:
        body = {"order_id": order_id or f"imp-{uuid.uuid4().hex[:10]}", "org_id": org, "lines": lines,
                "paid_at": paid_at, "payment_ref": payment_ref}
        return await self.http.post("/v1/admin/orders/import", json=body, headers=ADMIN)


async def start(real_infra: Any, **app_kw: Any):  # type: ignore[no-untyped-def]
    """Async generator for a module-scoped fixture: a fresh database and the service serving on it
    (`app_kw`: create_app's keywords, e.g. a test price book and registry)."""
    name = f"t_order_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(real_infra.dsn)
    await admin.execute(f"CREATE DATABASE {name}")
    dsn = f"{real_infra.dsn.rsplit('/', 1)[0]}/{name}"
    settings = Settings(kafka_bootstrap=real_infra.bootstrap, database_url=dsn, auth_secret=SECRET)
    try:
        app = create_app(settings, **app_kw)
        async with serve_in_process(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
            yield OrderService(url, app, http, settings)
    finally:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.close()


@pytest.fixture(scope="module")
async def svc(real_infra):
    async for s in start(real_infra):
        yield s


@pytest.fixture
async def org(svc, org_id) -> str:
    """An org with a recorded agreement."""
    assert (await svc.agree(org_id)).status_code == 200
    return org_id


def _error(resp: httpx.Response, status: int, code: str, line: int | None = None) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert err["code"] == code and err["message"]
    if line is not None:
        assert err["line"] == line
    return err


async def _unit_prices(svc: OrderService) -> dict[str, dict[str, Any]]:
    items = (await svc.http.get("/v1/catalog")).json()["items"]
    return {i["sku"]: i for i in items}


GOOD = {"sku": "AI-QTY", "quantity": 1000}
BASIC = {"sku": "SW-BASIC", "months": 12}


# ---------------------------------------------------------------- catalog, openapi, auth


async def test_catalog_needs_no_token_and_lists_every_sku_with_version(svc):
    resp = await svc.http.get("/v1/catalog")
    assert resp.status_code == 200
    body = resp.json()
    assert body["price_book_version"] == "2026-11-01" and body["currency"] == "USD"
    skus = {i["sku"]: i for i in body["items"]}
    assert set(skus) == {"CI-QTY", "CI-ANNUAL", "AI-QTY", "AI-PERPETUAL", "SW-BASIC", "SW-OPT",
                         "SVC-DELIVERY", "SVC-SCHEDULED", "SVC-MAINTENANCE"}
    assert skus["AI-PERPETUAL"]["online"] is False
    assert skus["CI-QTY"]["unit_prices"]["15"] == "3.20"  # money as a decimal string


async def test_openapi_lists_every_endpoint(svc):
    paths = (await svc.http.get("/openapi.json")).json()["paths"]
    expected = {
        "/v1/catalog": {"get"},
        "/v1/admin/orgs/{org_id}/agreement": {"put"},
        "/v1/orders": {"post"},
        "/v1/orders/{order_id}/payment": {"post"},
        "/v1/orders/{order_id}/cancel": {"post"},
        "/v1/orders/{order_id}": {"get"},
        "/v1/orgs/{org_id}/orders": {"get"},
        "/v1/admin/orders/import": {"post"},
        "/healthz": {"get"}, "/readyz": {"get"}, "/metrics": {"get"},
    }
    for path, methods in expected.items():
        assert methods <= set(paths.get(path, {})), path


async def test_missing_or_bad_token_is_401(svc, org):
    _error(await svc.place(org, [GOOD], headers={}), 401, "UNAUTHORIZED")
    _error(await svc.place(org, [GOOD], headers={"Authorization": "Bearer nonsense"}), 401, "UNAUTHORIZED")
    forged = bearer("another-secret", org)
    _error(await svc.place(org, [GOOD], headers=forged), 401, "UNAUTHORIZED")
    _error(await svc.http.get(f"/v1/orgs/{org}/orders"), 401, "UNAUTHORIZED")


async def test_org_token_for_another_org_is_403_in_a_body_and_404_for_its_order(svc, org):
    other = f"{org}-other"
    _error(await svc.place(org, [GOOD], headers=org_token(other)), 403, "FORBIDDEN")
    order = (await svc.place(org, [GOOD])).json()
    _error(await svc.http.get(f"/v1/orders/{order['order_id']}", headers=org_token(other)), 404, "NOT_FOUND")
    _error(await svc.http.get(f"/v1/orgs/{org}/orders", headers=org_token(other)), 404, "NOT_FOUND")
    resp = await svc.http.post(f"/v1/orders/{order['order_id']}/payment",
                               json={"payment_ref": "p", "amount": order["total"]}, headers=org_token(other))
    _error(resp, 403, "FORBIDDEN")  # confirming a payment is finance's
    assert (await svc.http.get(f"/v1/orders/{order['order_id']}", headers=ADMIN)).status_code == 200


async def test_admin_endpoints_need_admin_role(svc, org):
    resp = await svc.http.put(f"/v1/admin/orgs/{org}/agreement",
                              json={"agreement_ref": "A", "signed_at": "2026-10-01T00:00:00Z"}, headers=org_token(org))
    _error(resp, 403, "FORBIDDEN")
    body = {"order_id": "x-1", "org_id": org, "lines": [GOOD], "paid_at": "2026-01-01T00:00:00Z", "payment_ref": "w"}
    _error(await svc.http.post("/v1/admin/orders/import", json=body, headers=org_token(org)), 403, "FORBIDDEN")


async def test_unknown_order_is_404(svc, org):
    _error(await svc.http.get("/v1/orders/no-such-order", headers=ADMIN), 404, "NOT_FOUND")
    resp = await svc.http.post("/v1/orders/no-such-order/payment", json={"payment_ref": "p", "amount": "1.00"},
                               headers=ADMIN)
    _error(resp, 404, "NOT_FOUND")


# ---------------------------------------------------------------- placing: one test per error code


@pytest.mark.parametrize(
    "body",
    [
        {"lines": [GOOD]},  # org_id missing
        {"org_id": "x", "lines": []},  # no lines
        {"org_id": "x", "lines": [{"sku": "AI-QTY", "quantity": "many"}]},
        {"org_id": "x", "lines": [{**GOOD, "colour": "red"}]},  # unknown field
        {"org_id": "bad org!", "lines": [GOOD]},
    ],
)
async def test_malformed_order_body_is_400_validation_error(svc, body):
    _error(await svc.http.post("/v1/orders", json=body, headers=ADMIN), 400, "VALIDATION_ERROR")


async def test_non_json_body_is_400_validation_error(svc, org):
    resp = await svc.http.post(
        "/v1/orders", content=b"{not json", headers={**ADMIN, "content-type": "application/json"}
    )
    _error(resp, 400, "VALIDATION_ERROR")


async def test_line_missing_a_field_its_sku_needs_is_400_with_line(svc, org):
    _error(await svc.place(org, [GOOD, {"sku": "CI-QTY", "quantity": 1000}]), 400, "VALIDATION_ERROR", line=1)


async def test_org_without_agreement_is_agreement_required(svc, org_id):
    _error(await svc.place(org_id, [GOOD]), 422, "AGREEMENT_REQUIRED")


@pytest.mark.parametrize(
    "bad_line, code",
    [
        ({"sku": "CI-QTY", "quantity": 999, "storage_years": 1}, "QUANTITY_BELOW_MINIMUM"),
        ({"sku": "AI-QTY", "quantity": 2500}, "QUANTITY_NOT_MULTIPLE"),
        ({"sku": "CI-ANNUAL", "quantity": 10_001_000, "storage_years": 1}, "QUANTITY_TOO_LARGE"),
        ({"sku": "CI-QTY", "quantity": 1000, "storage_years": 4}, "INVALID_STORAGE_YEARS"),
        ({"sku": "CI-ANNUAL", "quantity": 1000, "storage_years": 31}, "INVALID_STORAGE_YEARS"),
        ({"sku": "SW-BASIC", "months": 121}, "INVALID_DURATION"),
        ({"sku": "SVC-MAINTENANCE", "years": 11}, "INVALID_DURATION"),
        ({"sku": "SVC-DELIVERY", "mode": "teleport"}, "INVALID_MODE"),
        ({"sku": "SVC-SCHEDULED", "quantity": 366}, "QUANTITY_TOO_LARGE"),
        ({"sku": "CI-LIFETIME", "quantity": 1000}, "UNKNOWN_SKU"),
        ({"sku": "SW-OPT", "months": 1, "feature": "hologram"}, "UNKNOWN_FEATURE"),
        ({"sku": "SW-OPT", "months": 1, "feature": "cloud_film"}, "BASIC_EDITION_REQUIRED"),
        ({"sku": "AI-PERPETUAL"}, "OFFLINE_ONLY_PRODUCT"),
    ],
)
async def test_order_rule_violation_is_422_with_code_and_line(svc, org, bad_line, code):
    # UNKNOWN_FEATURE needs Basic in the order, so the feature check is what fails
    first = BASIC if code == "UNKNOWN_FEATURE" else GOOD
    _error(await svc.place(org, [first, bad_line]), 422, code, line=1)
    listed = (await svc.http.get(f"/v1/orgs/{org}/orders", headers=org_token(org))).json()
    assert listed["orders"] == []  # nothing was stored


async def test_optional_feature_allowed_while_paid_basic_is_active(svc, org):
    basic = (await svc.place(org, [{"sku": "SW-BASIC", "months": 1}])).json()
    opt = [{"sku": "SW-OPT", "months": 1, "feature": "remote_teaching"}]
    _error(await svc.place(org, opt), 422, "BASIC_EDITION_REQUIRED", line=0)  # placed, not paid
    assert (await svc.pay(org, basic)).status_code == 200
    assert (await svc.place(org, opt)).status_code == 201


async def test_optional_feature_refused_once_imported_basic_has_ended(svc, org):
    resp = await svc.import_(org, [{"sku": "SW-BASIC", "months": 1}], paid_at="2024-01-01T00:00:00Z")
    assert resp.status_code == 201
    _error(await svc.place(org, [{"sku": "SW-OPT", "months": 1, "feature": "follow_up"}]),
           422, "BASIC_EDITION_REQUIRED", line=0)


async def test_optional_feature_in_the_same_order_as_basic(svc, org):
    resp = await svc.place(org, [{"sku": "SW-OPT", "months": 6, "feature": "advanced_viewer"}, BASIC])
    assert resp.status_code == 201


# ---------------------------------------------------------------- pricing


async def test_billing_example_10000_inspections_15_years_by_quantity(svc, org):
    unit = Decimal((await _unit_prices(svc))["CI-QTY"]["unit_prices"]["15"])
    resp = await svc.place(org, [{"sku": "CI-QTY", "quantity": 10_000, "storage_years": 15}])
    assert resp.status_code == 201
    order = resp.json()
    assert Decimal(order["lines"][0]["price"]) == 10_000 * unit == Decimal(order["total"])
    assert order["total"] == f"{10_000 * unit:.2f}"
    assert order["price_book_version"] == "2026-11-01" and order["status"] == "placed"


async def test_billing_example_10000_inspections_15_years_annually(svc, org):
    per_year = Decimal((await _unit_prices(svc))["CI-ANNUAL"]["unit_price"])
    resp = await svc.place(org, [{"sku": "CI-ANNUAL", "quantity": 10_000, "storage_years": 15}])
    assert resp.status_code == 201
    assert Decimal(resp.json()["total"]) == 10_000 * per_year * 15


async def test_every_line_is_priced_and_the_total_is_their_sum(svc, org):
    c = await _unit_prices(svc)
    lines = [
        BASIC,
        {"sku": "SW-OPT", "months": 3, "feature": "mobile_terminal"},
        {"sku": "SVC-DELIVERY", "mode": "local"},
        {"sku": "SVC-SCHEDULED", "quantity": 10},
        {"sku": "SVC-MAINTENANCE", "years": 2},
    ]
    order = (await svc.place(org, lines)).json()
    prices = [Decimal(ln["price"]) for ln in order["lines"]]
    assert prices == [
        12 * Decimal(c["SW-BASIC"]["unit_price"]),
        3 * Decimal(c["SW-OPT"]["unit_prices"]["mobile_terminal"]),
        Decimal(c["SVC-DELIVERY"]["unit_prices"]["local"]),
        10 * Decimal(c["SVC-SCHEDULED"]["unit_price"]),
        Decimal(c["SVC-MAINTENANCE"]["unit_price"]) * 12 * 2,
    ]
    assert Decimal(order["total"]) == sum(prices)
    assert [ln["line"] for ln in order["lines"]] == [0, 1, 2, 3, 4]


# ---------------------------------------------------------------- idempotency


async def test_same_order_id_and_body_returns_the_same_order(svc, org):
    oid = f"o-{uuid.uuid4().hex[:8]}"
    first = await svc.place(org, [GOOD, BASIC], order_id=oid)
    again = await svc.place(org, [GOOD, BASIC], order_id=oid)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json() == first.json()
    listed = (await svc.http.get(f"/v1/orgs/{org}/orders", headers=org_token(org))).json()["orders"]
    assert [o["order_id"] for o in listed] == [oid]


async def test_same_order_id_with_a_different_body_is_order_id_conflict(svc, org):
    oid = f"o-{uuid.uuid4().hex[:8]}"
    assert (await svc.place(org, [GOOD], order_id=oid)).status_code == 201
    _error(await svc.place(org, [{"sku": "AI-QTY", "quantity": 2000}], order_id=oid), 409, "ORDER_ID_CONFLICT")
    assert (await svc.http.get(f"/v1/orders/{oid}", headers=ADMIN)).json()["lines"][0]["quantity"] == 1000


async def test_order_id_is_generated_when_absent(svc, org):
    a, b = (await svc.place(org, [GOOD])).json(), (await svc.place(org, [GOOD])).json()
    assert a["order_id"] and b["order_id"] and a["order_id"] != b["order_id"]


# ---------------------------------------------------------------- payment and cancel


async def test_payment_must_equal_the_total(svc, org):
    order = (await svc.place(org, [GOOD])).json()
    wrong = f"{Decimal(order['total']) - Decimal('0.01'):.2f}"
    _error(await svc.pay(org, order, amount=wrong), 422, "AMOUNT_MISMATCH")
    assert (await svc.http.get(f"/v1/orders/{order['order_id']}", headers=ADMIN)).json()["status"] == "placed"


async def test_payment_marks_paid_and_repeating_it_is_idempotent(svc, org):
    order = (await svc.place(org, [GOOD])).json()
    first = await svc.pay(org, order, ref="pay-A")
    again = await svc.pay(org, order, ref="pay-A")
    assert (first.status_code, again.status_code) == (200, 200)
    assert first.json()["status"] == "paid" and first.json()["payment_ref"] == "pay-A"
    assert again.json() == first.json()


async def test_a_different_payment_for_a_paid_order_is_payment_conflict(svc, org):
    order = (await svc.place(org, [GOOD])).json()
    assert (await svc.pay(org, order, ref="pay-A")).status_code == 200
    _error(await svc.pay(org, order, ref="pay-B"), 409, "PAYMENT_CONFLICT")


async def test_cancelled_order_is_not_payable(svc, org):
    order = (await svc.place(org, [GOOD])).json()
    cancel = await svc.http.post(f"/v1/orders/{order['order_id']}/cancel", headers=org_token(org))
    assert cancel.status_code == 200 and cancel.json()["status"] == "cancelled"
    assert cancel.json()["cancelled_at"]
    _error(await svc.pay(org, order), 409, "ORDER_NOT_PAYABLE")


async def test_paid_order_is_not_cancellable(svc, org):
    order = (await svc.place(org, [GOOD])).json()
    assert (await svc.pay(org, order)).status_code == 200
    resp = await svc.http.post(f"/v1/orders/{order['order_id']}/cancel", headers=org_token(org))
    _error(resp, 409, "ORDER_NOT_CANCELLABLE")


# ---------------------------------------------------------------- admin import


async def test_import_places_and_pays_in_one_step_with_offline_skus(svc, org):
    paid_at = "2026-03-15T08:30:00+00:00"
    resp = await svc.import_(org, [{"sku": "AI-PERPETUAL"}, GOOD], paid_at=paid_at, payment_ref="contract-7")
    assert resp.status_code == 201, resp.text
    order = resp.json()
    assert order["status"] == "paid" and order["payment_ref"] == "contract-7"
    assert datetime.fromisoformat(order["paid_at"]) == datetime.fromisoformat(paid_at)
    assert order["lines"][0]["quantity"] == 1  # one product set by default


async def test_import_with_paid_at_in_the_future_is_refused(svc, org):
    future = (datetime.now(timezone.utc) + timedelta(hours=1)).isoformat()
    _error(await svc.import_(org, [GOOD], paid_at=future), 422, "PAID_AT_IN_FUTURE")


async def test_import_enforces_quantity_rules(svc, org):
    resp = await svc.import_(org, [GOOD, {"sku": "AI-QTY", "quantity": 1001}], paid_at="2026-01-01T00:00:00Z")
    _error(resp, 422, "QUANTITY_NOT_MULTIPLE", line=1)


async def test_import_needs_the_agreement(svc, org_id):
    _error(await svc.import_(org_id, [GOOD], paid_at="2026-01-01T00:00:00Z"), 422, "AGREEMENT_REQUIRED")


async def test_import_is_idempotent_on_order_id(svc, org):
    oid = f"imp-{uuid.uuid4().hex[:8]}"
    first = await svc.import_(org, [GOOD], paid_at="2026-01-01T00:00:00Z", order_id=oid)
    again = await svc.import_(org, [GOOD], paid_at="2026-01-01T00:00:00Z", order_id=oid)
    assert (first.status_code, again.status_code) == (201, 200) and again.json() == first.json()
    other = await svc.import_(org, [GOOD], paid_at="2026-01-02T00:00:00Z", order_id=oid)
    _error(other, 409, "ORDER_ID_CONFLICT")


# ---------------------------------------------------------------- agreement and listing


async def test_agreement_put_is_idempotent_and_a_new_ref_replaces_it(svc, org_id):
    first = await svc.agree(org_id, ref="AGR-1")
    again = await svc.agree(org_id, ref="AGR-1")
    assert first.status_code == again.status_code == 200
    assert again.json() == first.json()
    replaced = await svc.agree(org_id, ref="AGR-2")
    assert replaced.status_code == 200 and replaced.json()["agreement_ref"] == "AGR-2"


async def test_org_orders_are_paginated_with_a_cursor(svc, org):
    ids = [(await svc.place(org, [GOOD])).json()["order_id"] for _ in range(5)]
    seen, after, pages = [], None, 0
    while True:
        params = {"limit": 2} | ({"after": after} if after else {})
        page = (await svc.http.get(f"/v1/orgs/{org}/orders", params=params, headers=org_token(org))).json()
        seen += [o["order_id"] for o in page["orders"]]
        pages += 1
        after = page["next"]
        if after is None:
            break
    assert seen == ids and pages == 3
    _error(await svc.http.get(f"/v1/orgs/{org}/orders", params={"after": "zzz"}, headers=ADMIN),
           400, "VALIDATION_ERROR")
    _error(await svc.http.get(f"/v1/orgs/{org}/orders", params={"limit": 0}, headers=ADMIN),
           400, "VALIDATION_ERROR")
