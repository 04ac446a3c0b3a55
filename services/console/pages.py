"""The organisation pages: overview, renewal records, software, services, orders."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response

from services.console import chart
from services.console.upstream import UpstreamError
from services.console.web import org_ctx, org_path

router = APIRouter()
RESOURCES = ("cloud_inspection", "ai_review")
METRICS = ("purchased", "available", "used", "arrears", "forfeited")
WARN_DAYS = 30
CHART_DAYS = 90
LEDGER_PAGES = 50  # renewal records: at most 50 x 1000 ledger entries are read


def _when(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


def _lot_rows(lots: list[dict[str, Any]], now: datetime) -> list[dict[str, Any]]:
    rows = []
    for lot in lots:
        exp = _when(lot.get("expires_at"))
        days = (exp - now).days if exp else None
        rows.append({**lot, "days_left": days,
                     "warn": lot.get("status") == "active" and days is not None and days < WARN_DAYS})
    return rows


@router.get("/orgs/{org}")
async def overview(request: Request, org: str) -> Response:
    c = org_ctx(request, org)
    now = datetime.now(timezone.utc)
    first = (now - timedelta(days=CHART_DAYS - 1)).date()
    start = datetime(first.year, first.month, first.day, tzinfo=timezone.utc)
    p = quote(org, safe="")
    balances, usage = await asyncio.gather(
        c.upstream.get("entitlement", f"/v1/orgs/{p}/balances", c.token),
        c.upstream.get("metering", f"/v1/orgs/{p}/usage", c.token, granularity="day",
                       **{"from": start.isoformat(), "to": (now + timedelta(days=1)).isoformat()}),
    )
    resources = []
    for res in RESOURCES:
        b = (balances.get("resources") or {}).get(res) or {}
        series = chart.daily(usage.get("buckets") or [], res, first, CHART_DAYS)
        acc, rej = sum(a for _, a, _ in series), sum(r for _, _, r in series)
        resources.append({
            "name": res,
            "metrics": [(m, int(b.get(m) or 0)) for m in METRICS],
            "lots": _lot_rows(b.get("lots") or [], now),
            "offline_licence": b.get("offline_licence"),
            "chart": chart.svg(series, c.t("overview.chart_title", resource=c.t(f"resource.{res}")),
                               c.t("overview.chart_desc", days=CHART_DAYS, accepted=acc, rejected=rej),
                               f"chart-{res}"),
            "usage_days": [(d, a, r) for d, a, r in series if a or r],
            "accepted": acc, "rejected": rej,
        })
    return c.render("overview.html", org=org, resources=resources, page="overview", chart_days=CHART_DAYS)


async def _licence_periods(c: Any, org: str) -> tuple[list[dict[str, Any]], bool]:
    """licence_activated entries from the org's ledger (the API has no type filter: read page by
    page, at most LEDGER_PAGES pages); True when the ledger was longer than that."""
    entries: list[dict[str, Any]] = []
    after = None
    for _ in range(LEDGER_PAGES):
        page = await c.upstream.get("entitlement", f"/v1/orgs/{quote(org, safe='')}/ledger", c.token,
                                    limit=1000, after=after)
        entries += [e for e in page.get("entries") or [] if e.get("type") == "aimis.ledger.licence_activated"]
        after = page.get("next")
        if not after:
            return entries, False
    return entries, True


@router.get("/orgs/{org}/renewals")
async def renewals(request: Request, org: str) -> Response:
    """Every credited lot (from the balances) and licence period (from the ledger): the overview's
    "renewal records", newest first."""
    c = org_ctx(request, org)
    p = quote(org, safe="")
    balances, (licences, truncated) = await asyncio.gather(
        c.upstream.get("entitlement", f"/v1/orgs/{p}/balances", c.token), _licence_periods(c, org))
    records = []
    for res, b in (balances.get("resources") or {}).items():
        for lot in b.get("lots") or []:
            records.append({"kind": "lot", "what": res, "sku": lot.get("sku"), "order_id": lot.get("order_id"),
                            "quantity": lot.get("quantity"), "start": lot.get("credited_at"),
                            "end": lot.get("expires_at")})
    for e in licences:
        d = e.get("data") or {}
        records.append({"kind": "licence", "what": d.get("feature"), "sku": d.get("sku"),
                        "order_id": d.get("order_id"), "quantity": None,
                        "start": d.get("period_start"), "end": d.get("period_end")})
    records.sort(key=lambda r: str(r["start"] or ""), reverse=True)
    return c.render("renewals.html", org=org, records=records, page="renewals", truncated=truncated,
                    max_entries=LEDGER_PAGES * 1000)


@router.get("/orgs/{org}/software")
async def software(request: Request, org: str) -> Response:
    c = org_ctx(request, org)
    f = await c.upstream.get("entitlement", f"/v1/orgs/{quote(org, safe='')}/features", c.token)
    return c.render("software.html", org=org, basic=f.get("basic") or {}, features=f.get("features") or {},
                    page="software")


@router.get("/orgs/{org}/services")
async def services(request: Request, org: str) -> Response:
    c = org_ctx(request, org)
    rows = await c.upstream.get("entitlement", f"/v1/orgs/{quote(org, safe='')}/services", c.token)
    done = request.query_params.get("accepted")
    return c.render("services.html", org=org, services=rows, page="services", accepted=done)


@router.post("/orgs/{org}/services/{service_id}/accept")
async def accept(request: Request, org: str, service_id: str) -> Response:
    c = org_ctx(request, org)
    await c.form()
    path = f"/v1/orgs/{quote(org, safe='')}/services/{quote(service_id, safe='')}/acceptance"
    try:
        await c.upstream.call("entitlement", "POST", path, c.token)
    except UpstreamError as e:
        if e.status != 409:
            raise
        rows = await c.upstream.get("entitlement", f"/v1/orgs/{quote(org, safe='')}/services", c.token)
        return c.render("services.html", 409, org=org, services=rows, page="services",
                        error=c.error(e))
    return RedirectResponse(org_path(org, "services") + "?accepted=" + quote(service_id, safe=""), status_code=303)


@router.get("/orgs/{org}/orders")
async def orders(request: Request, org: str) -> Response:
    c = org_ctx(request, org)
    after = request.query_params.get("after")
    page = await c.upstream.get("order", f"/v1/orgs/{quote(org, safe='')}/orders", c.token, limit=100,
                                after=after if after and after.isdigit() else None)
    rows = list(reversed(page.get("orders") or []))  # newest first on this page
    return c.render("orders.html", org=org, orders=rows, next=page.get("next"), page="orders")


async def _order_of(c: Any, org: str, order_id: str) -> dict[str, Any]:
    o = await c.upstream.get("order", f"/v1/orders/{quote(order_id, safe='')}", c.token)
    if o.get("org_id") != org:  # an operator following a link with the wrong org: not this org's order
        raise UpstreamError(404, "NOT_FOUND", "not this org's order", service="order")
    return o


@router.get("/orgs/{org}/orders/{order_id}")
async def order(request: Request, org: str, order_id: str) -> Response:
    c = org_ctx(request, org)
    o = await _order_of(c, org, order_id)
    return c.render("order.html", org=org, order=o, page="orders", placed=request.query_params.get("placed"),
                    cancelled=request.query_params.get("cancelled"))


@router.post("/orgs/{org}/orders/{order_id}/cancel")
async def cancel(request: Request, org: str, order_id: str) -> Response:
    """Cancel a placed (unpaid) order."""
    c = org_ctx(request, org)
    await c.form()
    await _order_of(c, org, order_id)
    try:
        await c.upstream.call("order", "POST", f"/v1/orders/{quote(order_id, safe='')}/cancel", c.token)
    except UpstreamError as e:
        if e.status != 409:
            raise
        o = await _order_of(c, org, order_id)
        return c.render("order.html", 409, org=org, order=o, page="orders", error=c.error(e))
    return RedirectResponse(org_path(org, "orders", order_id) + "?cancelled=1", status_code=303)
