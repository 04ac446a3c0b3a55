"""The console's own logic, against fakes of the four services (no broker, no database):
sessions and CSRF, org isolation, 401 handling, the agreement notice, readable rules, i18n, pricing."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from contracts.http import ErrorCode
from services.console import i18n, pricing
from services.console.app import create_app
from services.console.sessions import COOKIE
from services.console.settings import ConsoleSettings
from services.order import domain as order_domain
from services.order.app import load_price_book
from shared import auth

ROOT = Path(__file__).resolve().parents[2]
CONSOLE = ROOT / "services" / "console"
BOOK_PATH = ROOT / "services/order/pricebook/2026-11-01.json"
BOOK = json.loads(BOOK_PATH.read_text())
# What GET /v1/catalog answers: the book's names and prices with the SKU registry's options, resource and online.
CATALOG = load_price_book(BOOK_PATH)[1].model_dump(mode="json")
SECRET = "unit-secret-0123456789abcdef0123456789"


class FakeServices:
    """Answers like the four services for the paths the console calls; records every request."""

    def __init__(self) -> None:
        self.calls: list[httpx.Request] = []
        self.agreement = True
        self.place_error: tuple[int, str] | None = None
        self.place_message: str | None = None
        self.refuse_tokens = False
        self.down: set[int] = set()  # ports that refuse connections
        self.orders: dict[str, dict[str, Any]] = {}
        self.cancelled: list[str] = []
        self.ledger_reads = 0
        self.endless_ledger = False
        self.parked_ports: set[int] = set()  # services that answer the SPEC 7.2 operator reads
        self.refuse_parked: tuple[int, str] | None = None  # what re-publish/discard answers instead

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls.append(request)
        if request.url.port in self.down:
            raise httpx.ConnectError("connection refused", request=request)
        p, m = request.url.path, request.method
        if self.refuse_tokens and request.headers.get("authorization"):
            return _err(401, "UNAUTHORIZED")
        if p == "/healthz":
            return httpx.Response(200, json={"status": "ok"})
        if p == "/v1/catalog":
            return httpx.Response(200, json=CATALOG)
        if p.startswith("/v1/orders/") and p.endswith("/cancel"):
            self.cancelled.append(p.split("/")[3])
            return httpx.Response(200, json={})
        if p.startswith("/v1/orders/") and m == "GET":
            oid = p.split("/")[3]
            if oid in self.orders:
                return httpx.Response(200, json=self.orders[oid])
            return _err(404, "NOT_FOUND")
        if p == "/v1/orders" and m == "POST":
            body = json.loads(request.content)
            if not self.agreement:
                return _err(422, "AGREEMENT_REQUIRED")
            if body["lines"][0].get("quantity") == 0:
                return _err(422, "QUANTITY_BELOW_MINIMUM")
            if self.place_error:
                return _err(*self.place_error, line=0, message=self.place_message)
            return httpx.Response(201, json={"order_id": body["order_id"], "org_id": body["org_id"], "status": "placed",
                                             "lines": [], "total": "500.00", "price_book_version": "v", "placed_at": "2026-11-26T00:00:00Z"})
        if p.endswith("/balances"):
            org = p.split("/")[3]
            return httpx.Response(200, json={"org_id": org, "resources": {
                "cloud_inspection": {"purchased": 3000, "available": 1200, "used": 1800, "arrears": 0, "forfeited": 0,
                                     "lots": [{"lot_id": "o1.0", "order_id": "o1", "sku": "CI-QTY", "quantity": 3000,
                                               "remaining": 1200, "storage_years": 5, "credited_at": "2025-12-10T00:00:00Z",
                                               "expires_at": _in_days(12), "status": "active"},
                                              {"lot_id": "o2.0", "order_id": "o2", "sku": "CI-QTY", "quantity": 1000,
                                               "remaining": 0, "storage_years": 1, "credited_at": "2026-01-10T00:00:00Z",
                                               "expires_at": _in_days(300), "status": "active"}]},
                "ai_review": {"purchased": 0, "available": 0, "used": 0, "arrears": 0, "forfeited": 0, "lots": []}}})
        if p.endswith("/ledger"):
            self.ledger_reads += 1
            entry = {"id": "e1", "type": "aimis.ledger.licence_activated", "time": "2026-02-01T00:00:00Z",
                     "data": {"feature": "cloud_film", "sku": "SW-OPT", "order_id": "o5",
                              "period_start": "2026-02-01T00:00:00Z", "period_end": "2026-08-01T00:00:00Z"}}
            usage = {"id": "e2", "type": "aimis.ledger.usage_deducted", "time": "2026-02-02T00:00:00Z", "data": {}}
            return httpx.Response(200, json={"entries": [entry, usage], "next": "7" if self.endless_ledger else None})
        if p.endswith("/usage"):
            return httpx.Response(200, json={"buckets": [
                {"start": "2026-11-20T00:00:00Z", "resource": "cloud_inspection", "accepted": 700, "rejected": 3}]})
        if p.endswith("/services") and m == "GET":
            return httpx.Response(200, json=[{"service_id": "o9.0", "order_id": "o9", "sku": "SVC-DELIVERY", "mode": "remote",
                                              "status": "awaiting_acceptance", "purchased_at": "2026-11-01T00:00:00Z",
                                              "accept_by": "2027-11-01T00:00:00Z"}])
        if p.endswith("/acceptance"):
            return httpx.Response(200, json={})
        if p == "/v1/admin/outbox/parked" and request.url.port in self.parked_ports:
            return httpx.Response(200, json={"service": "entitlement", "count": 1, "rows": [{
                "seq": 7, "event_id": "ev-parked-1", "topic": "aimis.ledger.v1", "key": "h1", "size": 1300000,
                "created_at": "2026-11-26T00:00:00Z", "parked_at": "2026-11-26T00:00:01Z",
                "park_reason": "MessageSizeTooLargeError"}]})
        if p.startswith("/v1/admin/outbox/parked/") and m == "POST" and request.url.port in self.parked_ports:
            seq, action = p.split("/")[5:7]
            if self.refuse_parked:
                return _err(*self.refuse_parked)
            return httpx.Response(200, json={"seq": int(seq), "event_id": "ev-parked-1", "topic": "aimis.ledger.v1",
                                             "action": action, "actor": "admin",
                                             "reason": json.loads(request.content)["reason"], "at": "2026-11-26T00:00:02Z"})
        if p == "/metrics" and request.url.port in self.parked_ports:
            return httpx.Response(200, text='# TYPE aimis_dead_letters_total counter\n'
                                  'aimis_dead_letters_total{service="entitlement",topic="aimis.orders.v1",'
                                  'reason="UNPROCESSABLE"} 3.0\n')
        return _err(404, "NOT_FOUND")


def _in_days(n: int) -> str:
    return (datetime.now(timezone.utc) + timedelta(days=n, hours=1)).isoformat()


def _err(status: int, code: str, line: int | None = None, message: str | None = None) -> httpx.Response:
    e: dict[str, Any] = {"code": code, "message": message or f"service says {code}"}
    if line is not None:
        e["line"] = line
    return httpx.Response(status, json={"error": e})


@pytest.fixture
def fake() -> FakeServices:
    return FakeServices()


@pytest.fixture
async def console(fake: FakeServices):  # type: ignore[no-untyped-def]
    app = create_app(ConsoleSettings(), transport=httpx.MockTransport(fake))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://console") as c:
        yield c


async def sign_in(c: httpx.AsyncClient, token: str) -> str:
    """Sign in through the form; return the session's CSRF token (read from a page, as a browser would)."""
    page = await c.get("/login")
    csrf = re.search(r'action="/login"[^>]*>\s*<input type="hidden" name="csrf" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    r = await c.post("/login", data={"token": token, "csrf": csrf})
    assert r.status_code == 303, r.text
    return csrf


def org_token(org: str) -> str:
    return auth.mint(SECRET, "org", org)


async def page_csrf(c: httpx.AsyncClient, path: str) -> str:
    r = await c.get(path)
    assert r.status_code == 200, r.text
    return re.search(r'name="csrf" value="([^"]+)"', r.text).group(1)  # type: ignore[union-attr]


# ---------------------------------------------------------------- sessions and CSRF


async def test_login_without_csrf_is_refused(console: httpx.AsyncClient) -> None:
    await console.get("/login")
    r = await console.post("/login", data={"token": org_token("h1")})
    assert r.status_code == 403
    assert COOKIE not in console.cookies


async def test_session_cookie_is_httponly_strict_and_holds_no_token(console: httpx.AsyncClient) -> None:
    token = org_token("h1")
    page = await console.get("/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    r = await console.post("/login", data={"token": token, "csrf": csrf})
    set_cookie = [v for k, v in r.headers.multi_items() if k == "set-cookie" and v.startswith(COOKIE)][0]
    assert "HttpOnly" in set_cookie and "SameSite=strict" in set_cookie.replace("Strict", "strict")
    assert token not in set_cookie and token.split(".")[1] not in set_cookie
    assert r.headers["location"] == "/"
    home = await console.get("/")
    assert home.headers["location"] == "/orgs/h1"
    overview = await console.get("/orgs/h1")
    assert token not in overview.text  # never written into a page


async def test_forged_token_is_refused_at_sign_in(console: httpx.AsyncClient, fake: FakeServices) -> None:
    fake.refuse_tokens = True
    page = await console.get("/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    r = await console.post("/login", data={"token": org_token("h1"), "csrf": csrf})
    assert r.status_code == 400 and "refused" in r.text
    assert COOKIE not in console.cookies


async def test_garbage_token_gets_a_sentence(console: httpx.AsyncClient) -> None:
    page = await console.get("/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    r = await console.post("/login", data={"token": "not-a-jwt", "csrf": csrf})
    assert r.status_code == 400 and "not a valid access token" in r.text


async def test_post_without_csrf_is_403_and_reaches_no_service(console: httpx.AsyncClient, fake: FakeServices) -> None:
    await sign_in(console, org_token("h1"))
    before = len(fake.calls)
    for path, data in [("/orgs/h1/services/o9.0/accept", {}), ("/orgs/h1/buy/resources", {"sku": "CI-QTY", "action": "place"}),
                       ("/logout", {}), ("/orgs/h1/services/o9.0/accept", {"csrf": "wrong"})]:
        r = await console.post(path, data=data)
        assert r.status_code == 403, path
    assert len(fake.calls) == before


async def test_a_non_ascii_csrf_value_is_403_not_a_traceback(console: httpx.AsyncClient, fake: FakeServices) -> None:
    await console.get("/login")
    r = await console.post("/login", data={"token": org_token("h1"), "csrf": "été 会话"})
    assert r.status_code == 403
    assert COOKIE not in console.cookies
    await sign_in(console, org_token("h1"))
    before = len(fake.calls)
    r = await console.post("/orgs/h1/services/o9.0/accept", data={"csrf": "été 会话"})
    assert r.status_code == 403
    assert len(fake.calls) == before


async def test_sign_out_ends_the_session(console: httpx.AsyncClient) -> None:
    await sign_in(console, org_token("h1"))
    old = console.cookies.get(COOKIE)
    csrf = await page_csrf(console, "/orgs/h1")
    r = await console.post("/logout", data={"csrf": csrf})
    assert r.status_code == 303 and r.headers["location"].startswith("/login")
    console.cookies.set(COOKIE, old)  # replaying the old cookie does not bring the session back
    r = await console.get("/orgs/h1")
    assert r.status_code == 303 and r.headers["location"].startswith("/login")


async def test_a_401_from_a_service_ends_the_session(console: httpx.AsyncClient, fake: FakeServices) -> None:
    await sign_in(console, org_token("h1"))
    fake.refuse_tokens = True
    r = await console.get("/orgs/h1")
    assert r.status_code == 303 and "/login" in r.headers["location"] and "reason=expired" in r.headers["location"]
    fake.refuse_tokens = False
    assert (await console.get("/orgs/h1")).status_code == 303  # the session is gone


async def test_next_is_only_a_local_path(console: httpx.AsyncClient) -> None:
    page = await console.get("/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    r = await console.post("/login", data={"token": org_token("h1"), "csrf": csrf, "next": "//evil.example/x"})
    assert r.headers["location"] == "/"


# ---------------------------------------------------------------- isolation and roles


async def test_another_orgs_pages_are_404_without_asking_a_service(console: httpx.AsyncClient, fake: FakeServices) -> None:
    await sign_in(console, org_token("h1"))
    before = len(fake.calls)
    for path in ("/orgs/h2", "/orgs/h2/renewals", "/orgs/h2/software", "/orgs/h2/services", "/orgs/h2/orders",
                 "/orgs/h2/buy/resources", "/orgs/h2/orders/o1"):
        assert (await console.get(path)).status_code == 404, path
    assert len(fake.calls) == before


async def test_operator_pages_refuse_an_org_token(console: httpx.AsyncClient) -> None:
    await sign_in(console, org_token("h1"))
    assert (await console.get("/ops")).status_code == 403


async def test_finance_role_is_an_operator(console: httpx.AsyncClient) -> None:
    await sign_in(console, jwt.encode({"role": "finance", "exp": 4102444800}, SECRET, algorithm="HS256"))
    r = await console.get("/ops")
    assert r.status_code == 200 and 'action="/ops/payment"' in r.text
    assert (await console.get("/orgs/any-org")).status_code == 200


# ---------------------------------------------------------------- pages


async def test_overview_shows_each_metric_as_an_integer(console: httpx.AsyncClient) -> None:
    await sign_in(console, org_token("h1"))
    r = await console.get("/orgs/h1")
    metrics = dict(re.findall(r'data-metric="([a-z_]+\.[a-z]+)">(\d+)<', r.text))
    assert metrics["cloud_inspection.available"] == "1200" and metrics["cloud_inspection.used"] == "1800"
    assert len(metrics) == 10
    assert "<svg" in r.text and "700 accepted, 3 rejected" in r.text
    rows = re.findall(r"<tr( class=\"warn\")?>\s*<td><code>(o\d\.0)</code>", r.text)
    assert rows == [(' class="warn"', "o1.0"), ("", "o2.0")]  # the warning under 30 days only
    assert "12 days left" in r.text and "300 days left" in r.text and r.text.count("Expires in under 30 days") == 1


async def test_services_page_has_a_csrf_protected_accept_form(console: httpx.AsyncClient, fake: FakeServices) -> None:
    await sign_in(console, org_token("h1"))
    csrf = await page_csrf(console, "/orgs/h1/services")
    r = await console.post("/orgs/h1/services/o9.0/accept", data={"csrf": csrf})
    assert r.status_code == 303
    assert fake.calls[-1].url.path == "/v1/orgs/h1/services/o9.0/acceptance"


async def test_buy_pages_explain_the_agreement_before_it_is_recorded(console: httpx.AsyncClient, fake: FakeServices) -> None:
    fake.agreement = False
    await sign_in(console, org_token("h1"))
    for kind in ("resources", "software", "services"):
        r = await console.get(f"/orgs/h1/buy/{kind}")
        assert 'data-agreement="missing"' in r.text and 'name="quantity"' not in r.text
    fake.agreement = True
    r = await console.get("/orgs/h1/buy/resources")
    assert 'data-agreement' not in r.text and 'id="form-CI-QTY"' in r.text


async def test_a_broken_rule_reads_as_a_sentence(console: httpx.AsyncClient, fake: FakeServices) -> None:
    await sign_in(console, org_token("h1"))
    csrf = await page_csrf(console, "/orgs/h1/buy/software")
    fake.place_error = (422, "BASIC_EDITION_REQUIRED")
    r = await console.post("/orgs/h1/buy/software", data={"csrf": csrf, "sku": "software", "months": "3",
                                                           "feature": "cloud_film", "action": "place", "order_id": "web-1"})
    assert r.status_code == 422
    assert i18n.t("en", "error.BASIC_EDITION_REQUIRED") in r.text.replace("&#39;", "'")


async def test_show_price_works_without_javascript(console: httpx.AsyncClient) -> None:
    await sign_in(console, org_token("h1"))
    csrf = await page_csrf(console, "/orgs/h1/buy/resources")
    r = await console.post("/orgs/h1/buy/resources", data={"csrf": csrf, "sku": "CI-QTY", "quantity": "10000",
                                                           "storage_years": "15", "action": "quote"})
    assert r.status_code == 200 and "32,000.00 USD" in r.text


async def test_placing_an_order_shows_it_awaiting_payment(console: httpx.AsyncClient) -> None:
    await sign_in(console, org_token("h1"))
    csrf = await page_csrf(console, "/orgs/h1/buy/services")
    r = await console.post("/orgs/h1/buy/services", data={"csrf": csrf, "sku": "SVC-DELIVERY", "mode": "remote",
                                                          "action": "place", "order_id": "web-abc"})
    assert r.status_code == 303 and r.headers["location"] == "/orgs/h1/orders/web-abc?placed=1"


async def test_quote_endpoint_prices_and_hints(console: httpx.AsyncClient) -> None:
    await sign_in(console, org_token("h1"))
    q = (await console.get("/orgs/h1/buy/quote", params={"sku": "CI-ANNUAL", "quantity": "1500", "storage_years": "2"})).json()
    assert q["price"] == "750.00 USD" and any("multiple of 1,000" in h for h in q["hints"])


async def test_chinese_by_query_and_by_accept_language(console: httpx.AsyncClient) -> None:
    assert "登录" in (await console.get("/login?lang=zh-CN")).text
    assert "登录" in (await console.get("/login")).text  # remembered in a cookie
    console.cookies.clear()
    assert "登录" in (await console.get("/login", headers={"Accept-Language": "zh-CN,zh;q=0.9,en;q=0.5"})).text
    assert "Sign in" in (await console.get("/login", headers={"Accept-Language": "en-GB,en;q=0.9,zh;q=0.2"})).text


async def test_pages_load_nothing_from_elsewhere(console: httpx.AsyncClient) -> None:
    r = await console.get("/login")
    assert "default-src 'self'" in r.headers["content-security-policy"]
    for f in list((CONSOLE / "templates").glob("*.html")) + list((CONSOLE / "static").glob("*")):
        text = f.read_text()
        assert not re.search(r'(src|href)="(https?:)?//', text), f.name


# ---------------------------------------------------------------- i18n and pricing


def test_both_languages_have_the_same_keys() -> None:
    assert set(i18n.CATALOG["en"]) == set(i18n.CATALOG["zh-CN"])
    assert all(v.strip() for lang in i18n.LANGUAGES for v in i18n.CATALOG[lang].values())


def test_every_error_code_has_a_sentence() -> None:
    for code in ErrorCode:
        assert i18n.has(f"error.{code.value}"), code


def test_every_literal_key_used_exists() -> None:
    used = set()
    for f in list((CONSOLE / "templates").glob("*.html")) + list(CONSOLE.glob("*.py")):
        used |= set(re.findall(r'\bt\(\s*["\']([a-z_]+\.[A-Za-z0-9_.-]+)["\']', f.read_text()))
        used |= set(re.findall(r'"((?:login|error|hint|ops|buy)\.[a-z_]+)"', f.read_text()))
    used = {k for k in used if not k.endswith((".", "_", ".html"))}  # prefixes of computed keys, file names
    missing = sorted(k for k in used if not i18n.has(k))
    assert not missing
    dynamic = [f"feature.{f}" for f in CATALOG["items"][5]["options"]["feature"]] + [f"sku.{i['sku']}" for i in CATALOG["items"]]
    dynamic += [f"unit.{i['unit']}" for i in CATALOG["items"]]
    assert all(i18n.has(k) for k in dynamic)


@pytest.mark.parametrize("line", [
    {"sku": "CI-QTY", "quantity": 10000, "storage_years": 15},
    {"sku": "CI-ANNUAL", "quantity": 3000, "storage_years": 7},
    {"sku": "AI-QTY", "quantity": 2000},
    {"sku": "SW-BASIC", "months": 12},
    {"sku": "SW-OPT", "months": 5, "feature": "advanced_viewer"},
    {"sku": "SVC-DELIVERY", "mode": "local"},
    {"sku": "SVC-SCHEDULED", "quantity": 3},
    {"sku": "SVC-MAINTENANCE", "years": 2},
    {"sku": "AI-PERPETUAL", "quantity": 1},
])
def test_console_prices_agree_with_the_order_service(line: dict[str, Any]) -> None:
    book = order_domain.PriceBook.from_dict(BOOK)
    expected = order_domain.price_line(order_domain.Line(**line), 0, book).price
    item = next(i for i in CATALOG["items"] if i["sku"] == line["sku"])
    assert pricing.line_price(item, line) == expected == expected.quantize(Decimal("0.01"))


def test_hints_follow_the_catalog_options() -> None:
    item = next(i for i in CATALOG["items"] if i["sku"] == "CI-QTY")
    line, hints = pricing.parse_line(item, {"quantity": "1,500", "storage_years": "4"})
    assert line["quantity"] == 1500
    assert {h[0] for h in hints} == {"hint.multiple", "hint.one_of"}
    _, hints = pricing.parse_line(item, {"quantity": "lots", "storage_years": "5"})
    assert hints == [("hint.whole_number", {"field": "quantity"})]


async def test_a_service_message_is_escaped(console: httpx.AsyncClient, fake: FakeServices) -> None:
    await sign_in(console, org_token("h1"))
    csrf = await page_csrf(console, "/orgs/h1/buy/services")
    fake.place_error, fake.place_message = (422, "A_CODE_FROM_THE_FUTURE"), "<script>alert(1)</script>"
    r = await console.post("/orgs/h1/buy/services", data={"csrf": csrf, "sku": "SVC-SCHEDULED", "quantity": "2",
                                                          "action": "place", "order_id": "web-x"})
    assert r.status_code == 422
    assert "<script>alert" not in r.text and "&lt;script&gt;alert(1)&lt;/script&gt;" in r.text


async def test_an_unreachable_service_is_a_503_page_not_a_traceback(console: httpx.AsyncClient, fake: FakeServices) -> None:
    await sign_in(console, org_token("h1"))
    fake.down.add(ConsoleSettings().entitlement_port)
    r = await console.get("/orgs/h1")
    assert r.status_code == 503 and "entitlement service is unavailable" in r.text and "Traceback" not in r.text
    assert (await console.get("/readyz")).status_code == 503
    fake.down.clear()
    assert (await console.get("/readyz")).status_code == 200


async def test_a_platform_token_cannot_sign_in(console: httpx.AsyncClient) -> None:
    page = await console.get("/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    token = jwt.encode({"role": "platform", "exp": 4102444800}, SECRET, algorithm="HS256")
    r = await console.post("/login", data={"token": token, "csrf": csrf})
    assert r.status_code == 400 and "role cannot use the console" in r.text and COOKIE not in console.cookies


async def test_hostile_paths_are_404(console: httpx.AsyncClient, fake: FakeServices) -> None:
    await sign_in(console, auth.mint(SECRET, "admin"))
    before = len(fake.calls)
    for path in ("/orgs/%00bad", "/orgs/-x", "/orgs/" + "a" * 65, "/orgs/h1/buy/elsewhere"):
        assert (await console.get(path)).status_code == 404, path
    assert len(fake.calls) <= before + 1  # at most the catalog of an unknown buy page was asked


async def test_cancel_only_the_orgs_own_order(console: httpx.AsyncClient, fake: FakeServices) -> None:
    line = {"line": 0, "sku": "SVC-DELIVERY", "mode": "remote", "price": "2000.00"}
    for oid, org in (("mine", "h1"), ("theirs", "h2")):
        fake.orders[oid] = {"order_id": oid, "org_id": org, "status": "placed", "lines": [line], "total": "2000.00",
                            "price_book_version": "v", "placed_at": "2026-11-26T00:00:00Z"}
    await sign_in(console, org_token("h1"))
    page = await console.get("/orgs/h1/orders/mine")
    assert 'action="/orgs/h1/orders/mine/cancel"' in page.text
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    assert (await console.post("/orgs/h1/orders/mine/cancel", data={})).status_code == 403
    r = await console.post("/orgs/h1/orders/mine/cancel", data={"csrf": csrf})
    assert r.status_code == 303 and fake.cancelled == ["mine"]
    # an order of another org under this org's path is not found, and is not cancelled
    assert (await console.post("/orgs/h1/orders/theirs/cancel", data={"csrf": csrf})).status_code == 404
    assert fake.cancelled == ["mine"]


async def test_renewal_records_list_lots_and_licence_periods(console: httpx.AsyncClient, fake: FakeServices) -> None:
    await sign_in(console, org_token("h1"))
    r = await console.get("/orgs/h1/renewals")
    rows = re.findall(r'<tr class="renewal">(.*?)</tr>', r.text, re.S)
    assert len(rows) == 3  # two lots from the balances, one licence period from the ledger
    assert "Cloud film" in r.text and "2026-08-01" in r.text and ">o5<" in r.text and "3,000" in r.text
    assert "longer than" not in r.text
    fake.endless_ledger, fake.ledger_reads = True, 0
    r = await console.get("/orgs/h1/renewals")
    assert fake.ledger_reads == 50 and "longer than 50,000 entries" in r.text  # bounded, and says so


def _luminance(hex_colour: str) -> float:
    rgb = [int(hex_colour[i:i + 2], 16) / 255 for i in (1, 3, 5)]
    lin = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in rgb]
    return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]


def test_text_colours_have_aa_contrast() -> None:
    css = (CONSOLE / "static" / "console.css").read_text()
    var = dict(re.findall(r"--([a-z-]+):\s*(#[0-9a-f]{6})", css))
    pairs = [("ink", "bg"), ("muted", "bg"), ("link", "bg"), ("ok", "ok-bg"), ("bad", "bad-bg"), ("warn", "warn-bg"),
             ("brand", "bg")]
    for fg, bg in pairs + [("#ffffff", "brand")]:
        a = _luminance(var.get(fg, fg)) if not fg.startswith("#") else _luminance(fg)
        b = _luminance(var[bg])
        ratio = (max(a, b) + 0.05) / (min(a, b) + 0.05)
        assert ratio >= 4.5, (fg, bg, ratio)


async def test_signing_in_again_ends_the_previous_session(console: httpx.AsyncClient) -> None:
    await sign_in(console, org_token("h1"))
    first = console.cookies.get(COOKIE)
    await sign_in(console, org_token("h2"))
    assert console.cookies.get(COOKIE) != first
    console.cookies.set(COOKIE, first)
    assert (await console.get("/orgs/h1")).status_code == 303  # the first session is over


async def test_operator_sees_a_link_to_record_the_missing_agreement(console: httpx.AsyncClient, fake: FakeServices) -> None:
    fake.agreement = False
    await sign_in(console, auth.mint(SECRET, "admin"))
    r = await console.get("/orgs/h9/buy/resources")
    assert 'href="/ops?org_id=h9#agreement"' in r.text
    assert 'id="agreement-org_id" name="org_id" value="h9"' in (await console.get("/ops?org_id=h9")).text


async def test_a_paid_order_not_credited_in_time_shows_as_overdue(console: httpx.AsyncClient, fake: FakeServices) -> None:
    """Issue 16: the order view shows an order paid but not fulfilled within the SLA."""
    line = {"line": 0, "sku": "CI-QTY", "quantity": 1000, "storage_years": 1, "price": "500.00"}
    for oid, overdue in (("late", True), ("fine", False)):
        fake.orders[oid] = {"order_id": oid, "org_id": "h1", "status": "paid", "lines": [line], "total": "500.00",
                            "price_book_version": "v", "placed_at": "2026-11-26T00:00:00Z",
                            "paid_at": "2026-11-26T00:00:00Z", "fulfilment_due_by": "2026-11-26T01:00:00Z",
                            "fulfilment_overdue": overdue}
    await sign_in(console, org_token("h1"))
    late = await console.get("/orgs/h1/orders/late")
    assert 'data-overdue="late"' in late.text and "2026-11-26 01:00" in late.text
    assert "data-overdue" not in (await console.get("/orgs/h1/orders/fine")).text
    zh = await console.get("/orgs/h1/orders/late?lang=zh-CN")
    assert "应于 2026-11-26 01:00" in zh.text


async def test_operators_see_parked_outbox_rows_and_dead_letter_counts(console: httpx.AsyncClient,
                                                                       fake: FakeServices) -> None:
    """SPEC 8: the operator page lists each service's parked rows and its dead letters by topic and reason."""
    fake.parked_ports = {8002}  # the entitlement service's default port
    await sign_in(console, jwt.encode({"role": "finance", "exp": 4102444800}, SECRET, algorithm="HS256"))
    page = (await console.get("/ops")).text
    row = re.search(r'<tr data-parked="entitlement">(.*?)</tr>', page, re.S)
    assert row and "ev-parked-1" in row.group(1) and "MessageSizeTooLargeError" in row.group(1)
    assert ">1<" in row.group(1)  # the count
    assert "aimis.orders.v1" in page and "UNPROCESSABLE" in page
    assert re.search(r'<tr data-parked="order">.*?</tr>', page, re.S)  # a service without rows is listed too


async def test_an_admin_republishes_or_discards_a_parked_row_with_a_reason(console: httpx.AsyncClient,
                                                                          fake: FakeServices) -> None:
    """SPEC 7.2 from the console: each parked row has a reason field and Re-publish / Discard (admin)."""
    fake.parked_ports = {8002}
    await sign_in(console, jwt.encode({"role": "admin", "exp": 4102444800}, SECRET, algorithm="HS256"))
    page = (await console.get("/ops")).text
    assert 'data-parked-row="7"' in page and 'for="parked-entitlement-7-reason"' in page
    csrf = await page_csrf(console, "/ops")
    form = {"csrf": csrf, "service": "entitlement", "seq": "7", "reason": "topic limit raised"}
    for action, says in (("republish", "will be published again"), ("discard", "will not be published")):
        r = await console.post("/ops/parked", data={**form, "action": action})
        assert r.status_code == 200 and says in r.text and 'data-result="parked"' in r.text, r.text
        sent = [c for c in fake.calls if c.url.path == f"/v1/admin/outbox/parked/7/{action}"]
        assert sent and sent[-1].url.port == 8002 and json.loads(sent[-1].content) == {"reason": "topic limit raised"}

    for bad in ({"reason": ""}, {"service": "billing"}, {"seq": "7; DROP"}, {"seq": "-1"}, {"seq": "\u0661"}, {"action": "delete"}):
        r = await console.post("/ops/parked", data={**form, "action": "republish", **bad})
        assert r.status_code == 400 and 'data-result="parked"' in r.text, bad
    r = await console.post("/ops/parked", data={**form, "action": "republish", "csrf": "forged"})
    assert r.status_code == 403

    fake.refuse_parked = (409, "NOT_PARKED")
    r = await console.post("/ops/parked", data={**form, "action": "republish"})
    assert r.status_code == 409 and "already re-published or discarded" in r.text


async def test_finance_sees_parked_rows_without_the_admin_actions(console: httpx.AsyncClient,
                                                                  fake: FakeServices) -> None:
    fake.parked_ports = {8002}
    await sign_in(console, jwt.encode({"role": "finance", "exp": 4102444800}, SECRET, algorithm="HS256"))
    page = (await console.get("/ops")).text
    assert "ev-parked-1" in page and "data-parked-row" not in page
    assert "Only an admin can re-publish or discard" in page
