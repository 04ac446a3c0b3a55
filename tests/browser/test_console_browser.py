"""The console in a real headless Chromium against the four real services (SPEC 8, issue 14)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
import pytest

from contracts.events import ExpiryUpcomingData, encode, new_event
from shared import auth
from tests.browser.pages import Browser
from tests.support.stack import SECRET, Stack

pytestmark = pytest.mark.e2e


def new_org(stack: Stack, agreement: bool = True) -> str:
    org = f"web-{uuid.uuid4().hex[:10]}"
    if agreement:
        stack.admin.record_agreement(org, f"AGR-{org}", "2026-01-05T00:00:00Z")
    return org


def buy(b: Browser, org: str, kind: str, form: str, fields: dict[str, str], selects: dict[str, str] | None = None) -> str:
    """Fill one purchasing form, place the order, return its id (the page then shows it)."""
    b.open(f"/orgs/{org}/buy/{kind}")
    for name, value in (selects or {}).items():
        b.choose(f"#form-{form} select[name={name}]", value)
    for name, value in fields.items():
        b.fill(f"#form-{form} input[name={name}]", value)
    return place(b, form)


def place(b: Browser, form: str) -> str:
    """Press "Place order" on one form; return the id of the order the next page shows."""
    b.click(f"#form-{form} button[value=place]")
    b.wait(lambda: "/orders/" in b.path, what="the order page")
    return b.path.split("/orders/")[1].split("?")[0]


def confirm_payment(b: Browser, order_id: str) -> None:
    b.open(f"/ops?order_id={order_id}")
    b.fill("#payment-payment_ref", f"PAY-{order_id}")
    b.click("form[action='/ops/payment'] button[type=submit]")
    b.wait(lambda: b.css("[data-result=payment]"), what="the payment result")
    assert order_id in b.text("[data-result=payment]") and "confirmed" in b.text("[data-result=payment]")


def test_buy_pay_and_see_the_credit_as_the_api_has_it(browser: Browser, stack: Stack) -> None:
    org = new_org(stack)
    browser.sign_in_org(org)
    assert browser.path == f"/orgs/{org}"

    # resources: the live price follows the choices (the page's small script)
    browser.open(f"/orgs/{org}/buy/resources")
    browser.choose("#form-CI-QTY select[name=storage_years]", "15")
    browser.fill("#form-CI-QTY input[name=quantity]", "10000")
    browser.wait(lambda: browser.text("#CI-QTY-price") == "32,000.00 USD", what="the live price")
    browser.shot("price")
    ci_order = place(browser, "CI-QTY")
    assert browser.css("[data-order-status]").get_attribute("data-order-status") == "placed"
    assert "awaiting payment" in browser.text().lower()
    assert browser.css("[data-order-total]").get_attribute("data-order-total") == "32000.00"
    browser.shot("placed")

    # software: Basic Edition 12 months with the cloud film feature
    browser.open(f"/orgs/{org}/buy/software")
    browser.fill("#software-months", "12")
    browser.click("#software-feature-cloud_film")
    browser.wait(lambda: browser.text("#software-price") == "11,400.00 USD", what="the software price")
    sw_order = place(browser, "software")
    assert "awaiting payment" in browser.text().lower()

    browser.open(f"/orgs/{org}/orders")
    assert {ci_order, sw_order} <= {el.get_attribute("data-order") for el in browser.all("[data-order]")}

    # the operator confirms both payments
    browser.sign_out()
    role = browser.sign_in_operator()
    print(f"operator role used: {role}")
    assert ("Finance" if role == "finance" else "Administrator") in browser.text("header .who")
    confirm_payment(browser, ci_order)
    confirm_payment(browser, sw_order)
    browser.shot("payment-confirmed")
    browser.sign_out()

    # the organisation sees the credit, with exactly the entitlement API's numbers
    browser.sign_in_org(org)
    browser.wait_reloading(lambda: browser.metrics().get("cloud_inspection.purchased") == 10000, what="the credit")
    api = stack.org_api(org).balances(org)["resources"]
    expected = {f"{r}.{m}": api[r][m] for r in ("cloud_inspection", "ai_review")
                for m in ("purchased", "available", "used", "arrears", "forfeited")}
    assert browser.metrics() == expected
    assert f"{ci_order}.0" in browser.text()
    browser.shot("overview")

    browser.open(f"/orgs/{org}/software")
    browser.wait_reloading(lambda: "Enabled" in browser.text("tr[data-feature=cloud_film]"), what="the licence")
    assert "Enabled" in browser.text("tr[data-feature=basic]")

    # renewal records: the package and both licence periods, with their order ids
    browser.open(f"/orgs/{org}/renewals")
    rows = [r.text for r in browser.all("tr.renewal")]
    assert any(ci_order in r and "10,000" in r for r in rows)
    assert sum(sw_order in r for r in rows) == 2
    browser.shot("renewals")


def test_accept_a_service(browser: Browser, stack: Stack) -> None:
    org = new_org(stack)
    browser.sign_in_org(org)
    order_id = buy(browser, org, "services", "SVC-DELIVERY", {}, {"mode": "remote"})
    order = stack.admin.order(order_id)
    stack.admin.pay(order_id, order["total"], f"PAY-{order_id}")
    browser.open(f"/orgs/{org}/services")
    browser.wait_reloading(lambda: browser.all(f"tr[data-service='{order_id}.0'] button"), what="the service")
    assert "Awaiting acceptance" in browser.text(f"tr[data-service='{order_id}.0']")
    browser.shot("awaiting")
    browser.click(f"tr[data-service='{order_id}.0'] button")
    browser.wait(lambda: "Accepted" in browser.text(f"tr[data-service='{order_id}.0']"), what="accepted")
    assert not browser.all(f"tr[data-service='{order_id}.0'] button")
    assert stack.org_api(org).services(org)[0]["status"] == "accepted"


def test_agreement_notice_until_the_operator_records_it(browser: Browser, stack: Stack) -> None:
    org = new_org(stack, agreement=False)
    browser.sign_in_org(org)
    for kind in ("resources", "software", "services"):
        browser.open(f"/orgs/{org}/buy/{kind}")
        assert browser.css("[data-agreement=missing]")
        assert not browser.all("form.buy")
    assert "cooperation agreement" in browser.text().lower()
    browser.shot("notice")
    browser.sign_out()

    browser.sign_in_operator()
    browser.open("/ops")
    browser.fill("#agreement-org_id", org)
    browser.fill("#agreement-agreement_ref", f"AGR-{org}")
    browser.click("form[action='/ops/agreement'] button[type=submit]")
    browser.wait(lambda: browser.css("[data-result=agreement]"), what="the agreement result")
    assert org in browser.text("[data-result=agreement]")
    browser.shot("recorded")
    # the operator finds the org and sees its pages
    browser.fill("#find-org", org)
    browser.click("form[action='/ops/find'] button")
    browser.wait(lambda: browser.path == f"/orgs/{org}", what="the org's overview")
    browser.sign_out()

    browser.sign_in_org(org)
    browser.open(f"/orgs/{org}/buy/resources")
    assert not browser.all("[data-agreement]") and browser.all("form.buy")


def test_a_purchase_that_breaks_a_rule_reads_as_a_sentence(browser: Browser, stack: Stack) -> None:
    org = new_org(stack)
    browser.sign_in_org(org)
    browser.open(f"/orgs/{org}/buy/resources")
    browser.fill("#form-AI-QTY input[name=quantity]", "1500")
    browser.wait(lambda: "multiple of 1,000" in browser.text("#form-AI-QTY [data-hints]"), what="the live hint")
    browser.click("#form-AI-QTY button[value=place]")
    browser.wait(lambda: browser.all("#form-AI-QTY [data-error]"), what="the error sentence")
    assert "The quantity must be a multiple of 1,000" in browser.text("#form-AI-QTY [data-error]")
    assert "QUANTITY_NOT_MULTIPLE" not in browser.text()
    browser.shot("quantity")

    # an optional feature without the Basic Edition
    browser.open(f"/orgs/{org}/buy/software")
    browser.click("#software-basic")  # untick the Basic Edition
    browser.click("#software-feature-remote_diagnosis")
    browser.click("#form-software button[value=place]")
    browser.wait(lambda: browser.all("#form-software [data-error]"), what="the error sentence")
    assert "needs an active Basic Edition" in browser.text("#form-software [data-error]")
    assert stack.org_api(org).call("order", "GET", f"/v1/orgs/{org}/orders")["orders"] == []


def test_switch_to_simplified_chinese(browser: Browser, stack: Stack) -> None:
    org = new_org(stack)
    browser.sign_in_org(org)
    assert browser.text("nav").startswith("Overview")
    browser.click("header .tools a[hreflang=zh-CN]")
    browser.wait(lambda: "概览" in browser.text("nav"), what="Chinese")
    assert browser.d.find_element("css selector", "html").get_attribute("lang") == "zh-CN"
    assert "账户概览" in browser.text("h1") and "可用" in browser.text()
    browser.open(f"/orgs/{org}/buy/resources")  # the choice is remembered
    assert "购买资源" in browser.text("h1") and "提交订单" in browser.text()
    browser.shot("zh")
    browser.click("header .tools a[hreflang=en]")
    browser.wait(lambda: "Buy resources" in browser.text("h1"), what="English again")


def test_sign_out_and_be_refused(browser: Browser, stack: Stack) -> None:
    org, other = new_org(stack), new_org(stack)
    browser.sign_in_org(org)
    browser.open(f"/orgs/{other}")  # another organisation's pages do not exist for this token
    assert "does not exist" in browser.text() and not browser.all("[data-metric]")
    browser.shot("other-org")
    browser.open(f"/orgs/{org}")
    session = browser.d.get_cookie("aimis_session")
    assert session and session["httpOnly"] and session["sameSite"] == "Strict"
    assert browser.d.execute_script("return document.cookie").find("aimis_session") == -1
    browser.sign_out()
    assert "You have signed out" in browser.text()
    browser.open(f"/orgs/{org}")
    assert browser.path.startswith("/login")
    browser.d.add_cookie({"name": "aimis_session", "value": session["value"], "path": "/"})  # replay
    browser.open(f"/orgs/{org}")
    assert browser.path.startswith("/login") and not browser.all("[data-metric]")


def test_core_flows_work_without_javascript(browser_without_js: Browser, stack: Stack) -> None:
    b = browser_without_js
    org = new_org(stack)
    b.sign_in_org(org)
    assert b.d.execute_script is not None and b.all("svg.chart")  # the chart is server-side SVG
    b.open(f"/orgs/{org}/buy/resources")
    b.fill("#form-CI-ANNUAL input[name=quantity]", "3000")
    b.fill("#form-CI-ANNUAL input[name=storage_years]", "4")
    b.click("#form-CI-ANNUAL button[value=quote]")  # the server computes the price
    b.wait(lambda: b.text("#CI-ANNUAL-price") == "3,000.00 USD", what="the server-side price")
    b.shot("show-price")
    order_id = place(b, "CI-ANNUAL")
    assert b.css("[data-order-status]").get_attribute("data-order-status") == "placed"
    assert stack.admin.order(order_id)["total"] == "3000.00"
    b.click("header .tools a[hreflang=zh-CN]")
    b.wait(lambda: "待付款" in b.text(), what="Chinese without a script")
    b.sign_out()
    b.open(f"/orgs/{org}")
    assert b.path.startswith("/login")


def test_keyboard_labels_and_focus(browser: Browser, stack: Stack) -> None:
    from selenium.webdriver.common.keys import Keys

    org = new_org(stack)
    browser.open("/login")
    body = browser.css("body")
    body.send_keys(Keys.TAB)
    first = browser.d.switch_to.active_element
    assert first.get_attribute("class") == "skip"  # the skip link comes first and shows when focused
    assert first.value_of_css_property("outline-style") != "none"
    seen = []
    for _ in range(3):  # the language link, the token field, the sign-in button
        browser.d.switch_to.active_element.send_keys(Keys.TAB)
        el = browser.d.switch_to.active_element
        seen.append(el.get_attribute("id") or el.tag_name)
        assert el.value_of_css_property("outline-style") != "none", seen[-1]
    assert seen == ["a", "token", "button"]  # the form is reachable by keyboard
    browser.sign_in_org(org)
    unlabeled_js = """return Array.from(document.querySelectorAll('input:not([type=hidden]), select, textarea'))
        .filter(e => !(e.id && document.querySelector('label[for="' + e.id + '"]'))).map(e => e.name)"""
    for path in (f"/orgs/{org}/buy/resources", f"/orgs/{org}/buy/software", f"/orgs/{org}/buy/services"):
        browser.open(path)
        assert browser.d.execute_script(unlabeled_js) == [], path
    browser.sign_out()
    browser.sign_in_operator()
    browser.open("/ops")
    assert browser.d.execute_script(unlabeled_js) == []
    # nothing on these pages came from anywhere but the console
    urls = browser.d.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert all(u.startswith(browser.base) or u.startswith("data:") for u in urls), urls


def test_operator_imports_an_offline_order(browser: Browser, stack: Stack) -> None:
    org = new_org(stack)
    browser.sign_in_operator()
    browser.open("/ops")
    browser.fill("#import-org_id", org)
    browser.fill("#import-order_id", f"{org}-perpetual")
    browser.choose("#import-sku", "AI-PERPETUAL")
    browser.fill("#import-quantity", "1")
    browser.fill("#import-payment_ref", "WIRE-1")
    browser.click("form[action='/ops/import'] button[type=submit]")
    browser.wait(lambda: browser.css("[data-result=import]"), what="the import result")
    assert f"{org}-perpetual" in browser.text("[data-result=import]") and "50000.00" in browser.text("[data-result=import]")
    browser.shot("imported")
    browser.open(f"/orgs/{org}")
    browser.wait_reloading(lambda: "perpetual offline licence" in browser.text(), what="the offline licence")
    assert stack.admin.order(f"{org}-perpetual")["status"] in ("paid", "fulfilled")


def test_usage_chart_counts_what_metering_counted(browser: Browser, stack: Stack) -> None:
    from datetime import datetime, timezone

    org = new_org(stack)
    now = datetime.now(timezone.utc).isoformat()
    events = [{"specversion": "1.0", "id": f"{org}-u{i}", "source": "/browser-test", "type": "aimis.usage.cloud_inspection",
               "subject": org, "time": now, "data": {"quantity": 5, "inspection_id": f"i{i}"}} for i in range(7)]
    stack.admin.send_usage(events)  # no lots: storage is never refused, it becomes arrears
    browser.sign_in_org(org)
    browser.wait_reloading(lambda: browser.metrics().get("cloud_inspection.arrears") == 35, what="the arrears")
    caption = browser.text("#h-cloud_inspection ~ figure figcaption")
    assert "Accepted (35)" in caption
    assert "Arrears" in browser.text() and browser.metrics()["cloud_inspection.used"] == 35
    browser.shot("chart")


def _sql(stack: Stack, query: str, *args: Any) -> Any:
    async def run() -> Any:
        conn = await asyncpg.connect(stack.dsn)
        try:
            return await conn.fetchval(query, *args)
        finally:
            await conn.close()
    return asyncio.run(run())


def test_admin_republishes_a_parked_row_from_the_operator_page(browser: Browser, stack: Stack) -> None:
    """SPEC 7.2 without a terminal: a row entitlement parked is listed; an admin gives a reason and
    re-publishes it; the relay then sends it and it is listed no more."""
    org = new_org(stack)
    event = new_event(org, ExpiryUpcomingData(org_id=org, kind="lot", ref_id=f"{org}-lot",
                                              expires_at="2027-01-01T00:00:00Z", days_before=7), "/entitlement")
    seq = _sql(stack, "INSERT INTO entitlement.outbox (event_id, topic, key, payload, parked_at, park_reason)"
                      " VALUES ($1, $2, $3, $4, now(), 'MessageSizeTooLargeError (test)') RETURNING seq",
               event.id, ExpiryUpcomingData.TOPIC, org, encode(event))
    browser.sign_in(auth.mint(SECRET, "admin"))
    browser.open("/ops#health")
    row = f"[data-parked='entitlement'] form[data-parked-row='{seq}']"
    browser.wait(lambda: browser.css(row), what="the parked row's form")
    assert event.id in browser.text("[data-parked='entitlement']")
    browser.fill(f"#parked-entitlement-{seq}-reason", "topic limit raised")
    browser.shot("parked-row")
    browser.click(f"{row} button[value=republish]")
    browser.wait(lambda: browser.css("[data-result=parked]"), what="the re-publish result")
    assert "will be published again" in browser.text("[data-result=parked]")
    browser.shot("parked-republished")
    browser.wait(lambda: _sql(stack, "SELECT sent_at IS NOT NULL FROM entitlement.outbox WHERE seq = $1", seq),
                 what="the relay to send the re-published row")
    assert _sql(stack, "SELECT reason FROM entitlement.outbox_resolutions WHERE seq = $1", seq) == "topic limit raised"
    browser.open("/ops")
    assert f"data-parked-row='{seq}'" not in browser.d.page_source and event.id not in browser.text(
        "[data-parked='entitlement']")
