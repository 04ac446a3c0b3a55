"""`make demo`: a scenario on the running stack, printing the account after each step."""

from __future__ import annotations

import os
import sys
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

from rich.console import Console
from rich.rule import Rule

from cli.client import Api, CliError
from cli.main import render_balance, usage_event
from contracts.events import UsageRejectedLedgerData

out = Console(width=130)


def wait_for(what: str, fetch: Callable[[], Any], ok: Callable[[Any], bool], timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = fetch()
        if ok(value):
            return value
        if time.monotonic() > deadline:
            raise SystemExit(f"demo: timed out waiting for {what}")
        time.sleep(0.25)  # polling the public API of a running stack


def send_usage(api: Api, org: str, resource: str, total: int, per_event: int = 1, channel: str = "online") -> list[str]:
    events = []
    left = total
    while left > 0:
        q = min(per_event, left)
        events.append(usage_event(org, resource, quantity=q, channel=channel))
        left -= q
    ids: list[str] = []
    for i in range(0, len(events), 1000):
        ids += api.send_usage(events[i:i + 1000])["accepted"]
    return ids


def main() -> None:
    api = Api.admin()
    org = f"demo-hospital-{uuid.uuid4().hex[:6]}"
    now = datetime.now(timezone.utc)

    def step(title: str) -> None:
        out.print()
        out.print(Rule(f"[bold]{title}"))

    def account(wait: Callable[[dict[str, Any]], bool] | None = None) -> dict[str, Any]:
        b = wait_for("the account", lambda: api.balances(org), wait or (lambda _: True))
        render_balance(b, out)
        return b

    def ci(b: dict[str, Any]) -> dict[str, Any]:
        return b["resources"]["cloud_inspection"]

    def ai(b: dict[str, Any]) -> dict[str, Any]:
        return b["resources"]["ai_review"]

    step(f"1. {org}: record the signed offline cooperation agreement")
    try:
        api.place_order(org, [{"sku": "CI-QTY", "quantity": 1000, "storage_years": 5}])
    except CliError as e:
        out.print(f"before the agreement, an order is refused: [red]{e}[/]")
    api.record_agreement(org, f"AGR-{org}", now.isoformat())
    out.print("agreement recorded")

    step("2. Two stacked inspection packages: one imported (paid 200 days ago), one bought now")
    older = api.import_order(f"{org}-imp", org, [{"sku": "CI-QTY", "quantity": 1000, "storage_years": 5}],
                             (now - timedelta(days=200)).isoformat(), "SALES-CONTRACT-1")
    out.print(f"imported {older['order_id']}: 1,000 inspections stored 5 years, total {older['total']} USD")
    newer = api.place_order(org, [{"sku": "CI-QTY", "quantity": 2000, "storage_years": 10}], f"{org}-o2")
    api.pay(newer["order_id"], newer["total"], "PAY-2")
    out.print(f"placed and paid {newer['order_id']}: 2,000 inspections stored 10 years, total {newer['total']} USD")
    account(lambda b: ci(b)["purchased"] == 3000)

    step("3. 2,500 inspections stored: the package that expires first (the imported one) is drawn first")
    send_usage(api, org, "cloud_inspection", 2500)
    account(lambda b: ci(b)["used"] == 2500)

    step("4. 1,000 more inspections: 500 beyond the balance are accepted as arrears")
    send_usage(api, org, "cloud_inspection", 1000, per_event=100)
    account(lambda b: ci(b)["used"] == 3500 and ci(b)["arrears"] == 500)

    step("5. Renewal: a new package offsets the arrears first")
    renewal = api.place_order(org, [{"sku": "CI-QTY", "quantity": 1000, "storage_years": 3}], f"{org}-o3")
    api.pay(renewal["order_id"], renewal["total"], "PAY-3")
    account(lambda b: ci(b)["purchased"] == 4000 and ci(b)["arrears"] == 0)

    step("6. AI reviews: 1,000 bought, 1,000 used, the next one refused")
    pkg = api.place_order(org, [{"sku": "AI-QTY", "quantity": 1000}], f"{org}-o4")
    api.pay(pkg["order_id"], pkg["total"], "PAY-4")
    wait_for("AI allowance", lambda: api.allowance(org), lambda a: a["remaining"] == 1000)
    send_usage(api, org, "ai_review", 1000, per_event=250)
    wait_for("AI reviews drawn", lambda: api.allowance(org), lambda a: a["remaining"] == 0)
    out.print(f"allowance now: {api.allowance(org)}")
    refused = send_usage(api, org, "ai_review", 1)[0]

    def rejected() -> list[dict[str, Any]]:
        return [e for e in api.ledger_all(org, resource="ai_review")
                if e["type"] == UsageRejectedLedgerData.TYPE and e["data"]["usage_id"] == refused]

    r = wait_for("the refusal on the ledger", rejected, bool)
    out.print(f"review {refused[:8]}… refused: [red]{r[0]['data']['reason']}[/]")
    account()

    step("7. Software: Basic Edition 12 months plus the optional cloud film feature")
    sw = api.place_order(org, [{"sku": "SW-BASIC", "months": 12},
                               {"sku": "SW-OPT", "months": 12, "feature": "cloud_film"}],
                         f"{org}-o5")
    api.pay(sw["order_id"], sw["total"], "PAY-5")
    f = wait_for("features", lambda: api.features(org), lambda f: f["basic"]["active"])
    out.print(f"basic edition active until {f['basic']['until']}")
    for name, state in f["features"].items():
        mark = "[green]enabled[/]" if state["enabled"] else "[dim]off[/]"
        out.print(f"  {name:<22} {mark} {state['until'] or ''}")

    step("8. A remote delivery service, accepted by the organisation")
    svc = api.place_order(org, [{"sku": "SVC-DELIVERY", "mode": "remote"}], f"{org}-o6")
    api.pay(svc["order_id"], svc["total"], "PAY-6")
    services = wait_for("the service", lambda: api.services(org), lambda s: len(s) == 1)
    out.print(f"granted {services[0]['service_id']}: {services[0]['status']}, accept by {services[0]['accept_by']}")
    api.accept_service(org, services[0]["service_id"])
    services = wait_for("acceptance", lambda: api.services(org), lambda s: s[0]["status"] == "accepted")
    out.print(f"after acceptance: {services[0]['status']}")
    out.print()
    out.print(f"[bold green]demo complete[/] for {org}; see `aimis balance {org}` and "
              f"`aimis ledger tail --org {org} --from-beginning`")
    console = os.environ.get("AIMIS_CONSOLE_URL") or f"http://127.0.0.1:{os.environ.get('AIMIS_CONSOLE_PORT', '8000')}"
    out.print(f"console: {console}/orgs/{org}  (sign in with `.venv/bin/aimis token mint --org {org}`)", soft_wrap=True)


if __name__ == "__main__":
    try:
        main()
    except CliError as e:
        print(f"demo failed: {e}", file=sys.stderr)
        sys.exit(1)
