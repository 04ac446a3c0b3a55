"""SPEC 7.4, table-driven: every role against every route of every service, on running services.

Roles: no token, admin, finance, platform, an org token for its own org (`own`), and the same org
token aimed at another organisation's resources (`other`). Another org's order, service or account
answers exactly like a missing one (404, same body); a role the route does not admit gets 403.
A route without a row in ROUTES fails `test_every_route_has_a_rule`.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import asyncpg
import httpx
import pytest

from tests.support.inproc import stack_with_orgs
from tests.support.services import SECRET, bearer

pytestmark = pytest.mark.integration

ROLES = ("anon", "admin", "finance", "platform", "own", "other")
PUBLIC = {"/healthz", "/readyz", "/metrics", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}
NOW = datetime.now(timezone.utc)
CI_LINE = {"sku": "CI-QTY", "quantity": 1000, "storage_years": 2}


@dataclass
class World:
    stack: Any
    a: str  # the org of the `own`/`other` token
    b: str  # another organisation
    http: httpx.AsyncClient

    def url(self, service: str, path: str) -> str:
        return self.stack.urls[service] + path

    def headers(self, role: str) -> dict[str, str]:
        if role == "anon":
            return {}
        if role in ("own", "other"):
            return bearer(SECRET, self.a)
        return bearer(SECRET, role=role)

    def org_for(self, role: str) -> str:
        return self.b if role == "other" else self.a

    async def placed_order(self, org: str) -> dict[str, Any]:
        r = await self.http.post(self.url("order", "/v1/orders"), json={"org_id": org, "lines": [CI_LINE]},
                                 headers=bearer(SECRET))
        assert r.status_code == 201, r.text
        return r.json()


@pytest.fixture(scope="module")
async def world(real_infra):
    async with stack_with_orgs(real_infra, "org-a", "org-b") as (stack, http, (a, b)):
        w = World(stack, a, b, http)
        conn = await asyncpg.connect(stack.dsn, server_settings={"search_path": "entitlement"})
        try:  # one service awaiting acceptance per org: only what the acceptance rule needs
            for org in (a, b):
                await conn.execute(
                    "INSERT INTO services (service_id, org_id, order_id, line, sku, mode, purchased_at, accept_by,"
                    " status) VALUES ($1, $2, $3, 0, 'SVC-DELIVERY', 'remote', $4, $5, 'awaiting_acceptance')",
                    f"svc-{org}", org, f"ord-{org}", NOW, NOW + timedelta(days=300))
        finally:
            await conn.close()
        yield w


Req = tuple[str, str, Any]  # service, path, json body (None: no body)
Build = Callable[[World, str], Any]


def _usage(org: str) -> dict[str, Any]:
    return {"specversion": "1.0", "id": f"u-{uuid.uuid4().hex}", "source": "/test", "type": "aimis.usage.cloud_inspection",
            "subject": org, "time": NOW.isoformat(), "data": {"inspection_id": "insp-1"}}


async def _agreement(w: World, role: str) -> Req:
    return "order", f"/v1/admin/orgs/{w.org_for(role)}/agreement", {"agreement_ref": f"AGR-{w.org_for(role)}",
                                                                  "signed_at": "2026-01-01T00:00:00Z"}


async def _place(w: World, role: str) -> Req:
    return "order", "/v1/orders", {"org_id": w.org_for(role), "lines": [CI_LINE]}


async def _pay(w: World, role: str) -> Req:
    o = await w.placed_order(w.org_for(role))
    return "order", f"/v1/orders/{o['order_id']}/payment", {"payment_ref": f"p-{uuid.uuid4().hex[:6]}", "amount": o["total"]}


async def _cancel(w: World, role: str) -> Req:
    o = await w.placed_order(w.org_for(role))
    return "order", f"/v1/orders/{o['order_id']}/cancel", None


async def _get_order(w: World, role: str) -> Req:
    o = await w.placed_order(w.org_for(role))
    return "order", f"/v1/orders/{o['order_id']}", None


async def _import(w: World, role: str) -> Req:
    return "order", "/v1/admin/orders/import", {
        "order_id": f"imp-{uuid.uuid4().hex[:8]}", "org_id": w.org_for(role), "lines": [CI_LINE],
        "paid_at": (NOW - timedelta(days=1)).isoformat(), "payment_ref": "wire-1"}


async def _webhook(w: World, role: str) -> Req:
    return "order", "/v1/payments/webhook", {"event_id": "e", "order_id": "o", "amount": "1.00", "currency": "USD",
                                             "paid_at": NOW.isoformat(), "payment_ref": "r"}


def _org_path(service: str, tail: str) -> Callable[[World, str], Any]:
    async def build(w: World, role: str) -> Req:
        return service, f"/v1/orgs/{w.org_for(role)}{tail}", None
    return build


async def _accept(w: World, role: str) -> Req:
    org = w.org_for(role)
    return "entitlement", f"/v1/orgs/{org}/services/svc-{org}/acceptance", None


async def _usage_post(w: World, role: str) -> Req:
    return "metering", "/v1/usage", _usage(w.org_for(role))


# expected status per role, in ROLES order: anon, admin, finance, platform, own, other
READ_ACCOUNT = (401, 200, 200, 403, 200, 404)
READ_ENTITLEMENT = (401, 200, 200, 200, 200, 404)
ROUTES: dict[tuple[str, str, str], tuple[Build, tuple[int | None, ...]]] = {
    ("order", "GET", "/v1/catalog"): (lambda w, r: _ret("order", "/v1/catalog"), (200, 200, 200, 200, 200, 200)),
    ("order", "PUT", "/v1/admin/orgs/{org_id}/agreement"): (_agreement, (401, 200, 200, 403, 403, 403)),
    ("order", "POST", "/v1/orders"): (_place, (401, 201, 403, 403, 201, 403)),
    ("order", "POST", "/v1/orders/{order_id}/payment"): (_pay, (401, 200, 200, 403, 403, 403)),
    ("order", "POST", "/v1/orders/{order_id}/cancel"): (_cancel, (401, 200, 403, 403, 200, 404)),
    ("order", "GET", "/v1/orders/{order_id}"): (_get_order, (401, 200, 200, 403, 200, 404)),
    ("order", "GET", "/v1/orgs/{org_id}/orders"): (_org_path("order", "/orders"), READ_ACCOUNT),
    ("order", "POST", "/v1/admin/orders/import"): (_import, (401, 201, 201, 403, 403, 403)),
    # no AIMIS-Signature: a bearer token is no authority here
    ("order", "POST", "/v1/payments/webhook"): (_webhook, (401, 401, 401, 401, 401, 401)),
    ("entitlement", "GET", "/v1/orgs/{org_id}/balances"): (_org_path("entitlement", "/balances"), READ_ACCOUNT),
    ("entitlement", "GET", "/v1/orgs/{org_id}/ledger"): (_org_path("entitlement", "/ledger"), READ_ACCOUNT),
    ("entitlement", "GET", "/v1/orgs/{org_id}/features"): (_org_path("entitlement", "/features"), READ_ENTITLEMENT),
    ("entitlement", "GET", "/v1/orgs/{org_id}/features/{feature}"): (
        _org_path("entitlement", "/features/cloud_film"), READ_ENTITLEMENT),
    ("entitlement", "GET", "/v1/orgs/{org_id}/services"): (_org_path("entitlement", "/services"), READ_ACCOUNT),
    ("entitlement", "POST", "/v1/orgs/{org_id}/services/{service_id}/acceptance"): (
        _accept, (401, 200, 403, 403, 200, 404)),
    ("entitlement", "GET", "/v1/orgs/{org_id}/ai-review/allowance"): (
        _org_path("entitlement", "/ai-review/allowance"), READ_ENTITLEMENT),
    ("metering", "POST", "/v1/usage"): (_usage_post, (401, 202, 403, 202, 403, 403)),
    ("metering", "GET", "/v1/orgs/{org_id}/usage"): (_org_path("metering", "/usage"), READ_ACCOUNT),
    ("expiry", "GET", "/v1/orgs/{org_id}/schedule"): (_org_path("expiry", "/schedule"), READ_ACCOUNT),
    **{(svc, "GET", "/v1/admin/outbox/parked"): (
        lambda w, r, svc=svc: _ret(svc, "/v1/admin/outbox/parked"), (401, 200, 200, 403, 403, 403))
       for svc in ("order", "entitlement", "metering", "expiry")},
    # re-publish or discard a parked row: admin only (no row 1 is parked here: the admin gets 404 or 409)
    **{(svc, "POST", f"/v1/admin/outbox/parked/{{seq}}/{action}"): (
        lambda w, r, svc=svc, action=action: _parked(svc, action), (401, None, 403, 403, 403, 403))
       for svc in ("order", "entitlement", "metering", "expiry") for action in ("republish", "discard")},
}


async def _ret(service: str, path: str) -> Req:
    return service, path, None


async def _parked(service: str, action: str) -> Req:
    return service, f"/v1/admin/outbox/parked/1/{action}", {"reason": "authority table"}


def test_every_route_has_a_rule():
    from services.entitlement.app import create_app as entitlement
    from services.expiry.app import create_app as expiry
    from services.metering.app import create_app as metering
    from services.order.app import create_app as order
    from shared.config import Settings

    s = Settings(auth_secret=SECRET)
    found = {  # every operation each service publishes in its OpenAPI document
        (name, method.upper(), path)
        for name, make in (("order", order), ("entitlement", entitlement), ("metering", metering), ("expiry", expiry))
        for path, ops in make(s).openapi()["paths"].items()
        if path not in PUBLIC
        for method in ops
    }
    assert found == set(ROUTES)


CASES = [(key, role, expected[i]) for key, (_, expected) in ROUTES.items() for i, role in enumerate(ROLES)]


@pytest.mark.parametrize(("key", "role", "expected"), CASES, ids=[f"{k[0]}:{k[1]} {k[2]}:{r}" for k, r, _ in CASES])
async def test_role_against_route(world: World, key, role, expected):
    service, method, _ = key
    build, _ = ROUTES[key]
    svc, path, body = await build(world, role)
    r = await world.http.request(method, world.url(svc, path), json=body, headers=world.headers(role))
    if expected is None:  # allowed; what the call finds decides (no such parked row: 404 or 409)
        assert r.status_code in (200, 404, 409) and r.json().get("error", {}).get("code") != "FORBIDDEN", r.text
        return
    assert r.status_code == expected, r.text
    if expected >= 400:
        assert r.json()["error"]["code"] == {401: "UNAUTHORIZED", 403: "FORBIDDEN", 404: "NOT_FOUND"}[expected]


@pytest.mark.parametrize("service,tail", [("entitlement", "/balances"), ("order", "/orders"),
                                          ("metering", "/usage"), ("expiry", "/schedule"),
                                          ("entitlement", "/services/svc-x/acceptance")])
async def test_another_orgs_account_answers_exactly_like_a_missing_one(world: World, service, tail):
    missing = f"org-missing-{uuid.uuid4().hex[:8]}"
    method = "POST" if tail.endswith("acceptance") else "GET"
    token = world.headers("own")
    other = await world.http.request(method, world.url(service, f"/v1/orgs/{world.b}{tail}"), headers=token)
    absent = await world.http.request(method, world.url(service, f"/v1/orgs/{missing}{tail}"), headers=token)
    assert other.status_code == absent.status_code == 404
    assert other.json() == {"error": {"code": "NOT_FOUND", "message": f"no organisation {world.b!r}"}}
    assert absent.json() == {"error": {"code": "NOT_FOUND", "message": f"no organisation {missing!r}"}}


async def test_another_orgs_order_answers_exactly_like_a_missing_one(world: World):
    theirs = await world.placed_order(world.b)
    token = world.headers("own")
    for suffix, method in (("", "GET"), ("/cancel", "POST")):
        for oid in (theirs["order_id"], f"ord-missing-{uuid.uuid4().hex[:6]}"):
            r = await world.http.request(method, world.url("order", f"/v1/orders/{oid}{suffix}"), headers=token)
            assert r.status_code == 404
            assert r.json() == {"error": {"code": "NOT_FOUND", "message": f"no order {oid}"}}
    # and nothing changed: the other org's order is still placed
    r = await world.http.get(world.url("order", f"/v1/orders/{theirs['order_id']}"), headers=bearer(SECRET))
    assert r.json()["status"] == "placed"


async def test_another_orgs_service_in_the_own_path_answers_like_a_missing_one(world: World):
    token = world.headers("own")
    for sid in (f"svc-{world.b}", "svc-missing"):
        r = await world.http.post(world.url("entitlement", f"/v1/orgs/{world.a}/services/{sid}/acceptance"),
                                  headers=token)
        assert r.status_code == 404 and r.json()["error"]["code"] == "NOT_FOUND"


async def test_org_token_cannot_confirm_payment_of_its_own_order(world: World):
    o = await world.placed_order(world.a)
    r = await world.http.post(world.url("order", f"/v1/orders/{o['order_id']}/payment"),
                              json={"payment_ref": "self-pay", "amount": o["total"]}, headers=world.headers("own"))
    assert r.status_code == 403 and r.json()["error"]["code"] == "FORBIDDEN"
    r = await world.http.get(world.url("order", f"/v1/orders/{o['order_id']}"), headers=world.headers("own"))
    assert r.json()["status"] == "placed"
