"""The purchasing pages: forms built from the catalog, prices as choices change, readable rules."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from services.console import pricing
from services.console.upstream import UpstreamError
from services.console.web import Ctx, PageError, org_ctx, org_path

router = APIRouter()
KINDS = ("resources", "software", "services")
FIELD_ORDER = ("feature", "mode", "quantity", "storage_years", "months", "years")
SOFTWARE = ("SW-BASIC", "SW-OPT")


def money(v: Decimal | None) -> str | None:
    return None if v is None else f"{v:,.2f} USD"


def _items_for(kind: str, catalog: dict[str, Any]) -> list[dict[str, Any]]:
    items = [i for i in catalog.get("items") or [] if i.get("online")]
    if kind == "resources":
        return [i for i in items if i.get("resource")]
    if kind == "services":
        return [i for i in items if str(i.get("sku", "")).startswith("SVC-")]
    return [i for i in items if i.get("sku") in SOFTWARE]


async def _agreement_recorded(c: Ctx, org: str) -> bool:
    """Whether the org's cooperation agreement is recorded, asked of the order service without
    creating anything: a line of quantity 0 is refused either AGREEMENT_REQUIRED (no agreement,
    checked first) or for its quantity. See docs/decisions/console.md."""
    body = {"org_id": org, "lines": [{"sku": "CI-QTY", "quantity": 0, "storage_years": 1}]}
    try:
        await c.upstream.call("order", "POST", "/v1/orders", c.token, json=body)
    except UpstreamError as e:
        if e.status == 422 and e.code == "AGREEMENT_REQUIRED":
            return False
        if e.status in (401, 503):
            raise
    return True


def _new_order_id() -> str:
    return f"web-{uuid.uuid4().hex[:24]}"


def _software_lines(
    by_sku: dict[str, dict[str, Any]], form: dict[str, str], features: list[str]
) -> tuple[list[dict[str, Any]], list[tuple[str, dict[str, Any]]]]:
    base, hints = pricing.parse_line(by_sku["SW-BASIC"], form)
    if "months" not in base:
        return [], hints
    lines: list[dict[str, Any]] = []
    if form.get("basic"):
        lines.append({"sku": "SW-BASIC", "months": base["months"]})
    opt = by_sku["SW-OPT"].get("options", {}).get("feature", [])
    for f in features:
        if f in opt:
            lines.append({"sku": "SW-OPT", "months": base["months"], "feature": f})
    if not lines:
        hints.append(("hint.nothing_chosen", {}))
    return lines, hints


def _hint_text(c: Ctx, hints: list[tuple[str, dict[str, Any]]]) -> list[str]:
    out = []
    for key, params in hints:
        if "field" in params:
            params = {**params, "field": c.t(f"field.{params['field']}")}
        if "n" in params:
            params = {**params, "n": f"{params['n']:,}"}
        out.append(c.t(key, **params))
    return out


async def _page(c: Ctx, org: str, kind: str, form: dict[str, str] | None = None,
                features: list[str] | None = None, status: int = 200, **state: Any) -> Response:
    catalog = await c.upstream.get("order", "/v1/catalog", c.token)
    if state.get("agreement") is None and not await _agreement_recorded(c, org):
        state["agreement"] = False
    if state.get("agreement") is False:
        return c.render("buy.html", status, org=org, kind=kind, page=f"buy_{kind}", agreement=False, forms=[])
    items = _items_for(kind, catalog)
    by_sku = {i["sku"]: i for i in items}
    forms: list[dict[str, Any]] = []
    if kind == "software":
        if set(SOFTWARE) <= set(by_sku):
            f = form or {"months": "12", "basic": "on"}
            chosen = features if features is not None else []
            lines, hints = _software_lines(by_sku, f, chosen)
            forms.append({"sku": "software", "values": f, "chosen": chosen, "basic_item": by_sku["SW-BASIC"],
                          "opt_item": by_sku["SW-OPT"], "price": money(pricing.total(by_sku, lines)),
                          "hints": _hint_text(c, hints) if form else [],
                          "order_id": f.get("order_id") or _new_order_id()})
    else:
        for item in items:
            mine = form is not None and form.get("sku") == item["sku"]
            values = dict(form) if mine and form else {k: str(pricing.default_value(v))
                                                       for k, v in (item.get("options") or {}).items()}
            line, hints = pricing.parse_line(item, values)
            options = sorted((item.get("options") or {}).items(),
                             key=lambda kv: FIELD_ORDER.index(kv[0]) if kv[0] in FIELD_ORDER else 99)
            forms.append({"sku": item["sku"], "item": item, "values": values, "options": options,
                          "price": None if any(h[0] == "hint.whole_number" for h in hints)
                          else money(pricing.line_price(item, line)),
                          "hints": _hint_text(c, hints) if mine else [],
                          "order_id": values.get("order_id") if mine and values.get("order_id") else _new_order_id()})
    for entry in forms:
        if entry["sku"] == state.get("for_sku"):
            entry["error"] = state.get("error")
    return c.render("buy.html", status, org=org, kind=kind, page=f"buy_{kind}", agreement=True, forms=forms,
                    currency=catalog.get("currency", "USD"), version=catalog.get("price_book_version"))


@router.get("/orgs/{org}/buy/{kind}")
async def buy_page(request: Request, org: str, kind: str) -> Response:
    c = org_ctx(request, org)
    if kind == "quote":
        return await quote_json(c)
    if kind not in KINDS:
        raise PageError(404, "error.not_found")
    return await _page(c, org, kind)


async def quote_json(c: Ctx) -> Response:
    """The price of the choices in the query (for the page's small script; the form works without it)."""
    q = {k: v for k, v in c.request.query_params.items()}
    catalog = await c.upstream.get("order", "/v1/catalog", c.token)
    by_sku = {i["sku"]: i for i in catalog.get("items") or []}
    if q.get("sku") == "software" and set(SOFTWARE) <= set(by_sku):
        lines, hints = _software_lines(by_sku, q, c.request.query_params.getlist("feature"))
        price = pricing.total(by_sku, lines)
    elif q.get("sku") in by_sku:
        line, hints = pricing.parse_line(by_sku[q["sku"]], q)
        price = pricing.line_price(by_sku[q["sku"]], line)
    else:
        return JSONResponse({"price": None, "hints": []}, status_code=404)
    if any(h[0] == "hint.whole_number" for h in hints):
        price = None
    return JSONResponse({"price": money(price), "hints": _hint_text(c, hints)})


@router.post("/orgs/{org}/buy/{kind}")
async def buy(request: Request, org: str, kind: str) -> Response:
    c = org_ctx(request, org)
    form = await c.form()
    if kind not in KINDS:
        raise PageError(404, "error.not_found")
    features: list[str] | None = None
    if kind == "software":  # uploads are not features
        features = [f for f in (await request.form()).getlist("feature") if isinstance(f, str)]
    if form.get("action") != "place":
        return await _page(c, org, kind, form, features)
    catalog = await c.upstream.get("order", "/v1/catalog", c.token)
    by_sku = {i["sku"]: i for i in _items_for(kind, catalog)}
    if kind == "software":
        lines, hints = _software_lines(by_sku, form, features or [])
        for_sku = "software"
    elif form.get("sku") in by_sku:
        line, hints = pricing.parse_line(by_sku[form["sku"]], form)
        lines, for_sku = [line], form["sku"]
    else:
        raise PageError(400, "error.bad_form")
    if any(h[0] in ("hint.whole_number", "hint.nothing_chosen") for h in hints):
        return await _page(c, org, kind, form, features, 400)
    body = {"order_id": form.get("order_id") or _new_order_id(), "org_id": org, "lines": lines}
    try:
        placed = await c.upstream.call("order", "POST", "/v1/orders", c.token, json=body)
    except UpstreamError as e:
        if e.status in (401, 503) or e.status >= 500:
            raise
        if e.code == "AGREEMENT_REQUIRED":
            return await _page(c, org, kind, status=422, agreement=False)
        return await _page(c, org, kind, form, features, e.status, agreement=True, for_sku=for_sku,
                           error=c.error(e, lines))
    return RedirectResponse(org_path(org, "orders", placed["order_id"]) + "?placed=1", status_code=303)
