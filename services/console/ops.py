"""Operator pages (roles admin and finance): find an org, record its agreement, import an offline
order, confirm a payment, see parked outbox rows and dead-letter counts; an admin re-publishes or
discards a parked row (with a reason) once its cause is fixed."""

from __future__ import annotations

import asyncio
import re
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from prometheus_client.parser import text_string_to_metric_families
from starlette.responses import RedirectResponse, Response

from services.console import pricing
from services.console.settings import SERVICES
from services.console.upstream import UpstreamError
from services.console.web import ORG_RE, Ctx, operator_ctx, org_path

router = APIRouter()
LINE_FIELDS = ("quantity", "storage_years", "months", "feature", "mode", "years")


async def _parked(c: Ctx, service: str) -> dict[str, Any]:
    """GET /v1/admin/outbox/parked (SPEC 7.2) of one service; `available` False while a service
    does not serve it yet (shown as such, never as an empty list)."""
    try:
        body = await c.upstream.get(service, "/v1/admin/outbox/parked", c.token)
    except UpstreamError as e:
        if e.status == 401:
            raise
        return {"service": service, "available": False, "reason": f"{e.status} {e.code}"}
    rows = body.get("rows", body.get("items", body)) if isinstance(body, dict) else body
    rows = rows if isinstance(rows, list) else []
    count = body.get("count", len(rows)) if isinstance(body, dict) else len(rows)
    return {"service": service, "available": True, "rows": rows[:20], "count": count}


async def _dead_letters(c: Ctx, service: str) -> dict[str, Any]:
    """aimis_dead_letters_total{topic,reason} from the service's /metrics."""
    try:
        r = await c.upstream.raw(service, "GET", "/metrics", None)
        text = r.text if r.status_code == 200 else ""
    except UpstreamError:
        return {"service": service, "available": False, "reason": "UNAVAILABLE"}
    found, samples = False, []
    try:
        for fam in text_string_to_metric_families(text):
            if fam.name == "aimis_dead_letters":
                found = True
                samples += [(s.labels.get("topic", ""), s.labels.get("reason", ""), int(s.value))
                            for s in fam.samples if s.name.endswith("_total")]
    except ValueError:
        pass
    if not found:
        return {"service": service, "available": False, "reason": "no aimis_dead_letters_total"}
    return {"service": service, "available": True, "samples": samples}


async def _page(c: Ctx, status: int = 200, **state: Any) -> Response:
    catalog = await c.upstream.get("order", "/v1/catalog", c.token)
    parked, dead = await asyncio.gather(
        asyncio.gather(*(_parked(c, s) for s in SERVICES)),
        asyncio.gather(*(_dead_letters(c, s) for s in SERVICES)),
    )
    state.setdefault("values", {})
    return c.render("ops.html", status, page="ops", skus=[i["sku"] for i in catalog.get("items") or []],
                    parked=parked, dead=dead, today=datetime.now(timezone.utc).date().isoformat(), **state)


@router.get("/ops")
async def ops(request: Request) -> Response:
    c = operator_ctx(request)
    return await _page(c, values=dict(request.query_params))


@router.get("/ops/find")
async def find(request: Request) -> Response:
    c = operator_ctx(request)
    org = (request.query_params.get("org") or "").strip()
    if not ORG_RE.match(org):
        return await _page(c, 400, result=("find", False, c.t("ops.bad_org")), values={"org": org})
    return RedirectResponse(org_path(org), status_code=303)


def _instant(raw: str) -> str | None:
    """A date (midnight UTC) or a date-time from a form, as RFC 3339 with zone."""
    raw = raw.strip()
    try:
        d = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        return None
    if d.tzinfo is None:
        d = d.replace(tzinfo=timezone.utc)
    return d.isoformat()


async def _act(c: Ctx, form: dict[str, str], name: str, call: Any, ok_key: str, **ok: Any) -> Response:
    try:
        result = await call
    except UpstreamError as e:
        if e.status == 401 or e.status >= 500:
            raise
        return await _page(c, e.status if e.status < 500 else 400, result=(name, False, c.error(e)), values=form)
    return await _page(c, result=(name, True, c.t(ok_key, **ok, **(result if isinstance(result, dict) else {}))),
                       values={})


@router.post("/ops/agreement")
async def agreement(request: Request) -> Response:
    c = operator_ctx(request)
    form = await c.form()
    org, signed = form.get("org_id", "").strip(), _instant(form.get("signed_at", ""))
    if not ORG_RE.match(org) or not signed or not form.get("agreement_ref", "").strip():
        return await _page(c, 400, result=("agreement", False, c.t("ops.fill_all")), values=form)
    body = {"agreement_ref": form["agreement_ref"].strip(), "signed_at": signed}
    path = f"/v1/admin/orgs/{quote(org, safe='')}/agreement"
    return await _act(c, form, "agreement", c.upstream.call("order", "PUT", path, c.token, json=body),
                      "ops.agreement_done", org=org)


@router.post("/ops/import")
async def import_order(request: Request) -> Response:
    c = operator_ctx(request)
    form = await c.form()
    line: dict[str, Any] = {"sku": form.get("sku", "")}
    for k in LINE_FIELDS:
        v = form.get(k, "").strip()
        if v:
            line[k] = int(v) if k in pricing.NUMERIC and v.isdigit() and len(v) < 12 else v
    paid = _instant(form.get("paid_at", ""))
    org, oid, ref = (form.get(k, "").strip() for k in ("org_id", "order_id", "payment_ref"))
    if not (ORG_RE.match(org) and oid and ref and paid):
        return await _page(c, 400, result=("import", False, c.t("ops.fill_all")), values=form)
    if any(isinstance(line.get(k), str) for k in pricing.NUMERIC):
        return await _page(c, 400, result=("import", False, c.t("hint.whole_number", field="")), values=form)
    body = {"order_id": oid, "org_id": org, "lines": [line], "paid_at": paid, "payment_ref": ref}
    return await _act(c, form, "import",
                      c.upstream.call("order", "POST", "/v1/admin/orders/import", c.token, json=body),
                      "ops.import_done")


@router.post("/ops/payment")
async def payment(request: Request) -> Response:
    c = operator_ctx(request)
    form = await c.form()
    oid, ref, amount = (form.get(k, "").strip() for k in ("order_id", "payment_ref", "amount"))
    if not oid or not ref:
        return await _page(c, 400, result=("payment", False, c.t("ops.fill_all")), values=form)
    if not amount:  # the order's total
        try:
            amount = (await c.upstream.get("order", f"/v1/orders/{quote(oid, safe='')}", c.token))["total"]
        except UpstreamError as e:
            if e.status == 401 or e.status >= 500:
                raise
            return await _page(c, e.status, result=("payment", False, c.error(e)), values=form)
    body = {"payment_ref": ref, "amount": amount}
    return await _act(c, form, "payment",
                      c.upstream.call("order", "POST", f"/v1/orders/{quote(oid, safe='')}/payment", c.token, json=body),
                      "ops.payment_done")


PARKED_ACTIONS = ("republish", "discard")


@router.post("/ops/parked")
async def resolve_parked(request: Request) -> Response:
    """Re-publish or discard one parked outbox row of one service (SPEC 7.2; the service allows
    admins only and records who and why)."""
    c = operator_ctx(request)
    form = await c.form()
    service, seq, action, reason = (form.get(k, "").strip() for k in ("service", "seq", "action", "reason"))
    if service not in SERVICES or not re.fullmatch(r"[0-9]{1,18}", seq) or action not in PARKED_ACTIONS:
        return await _page(c, 400, result=("parked", False, c.t("ops.fill_all")))
    if not reason:
        return await _page(c, 400, result=("parked", False, c.t("ops.parked_reason_needed")))
    path = f"/v1/admin/outbox/parked/{seq}/{action}"
    return await _act(c, {}, "parked", c.upstream.call(service, "POST", path, c.token, json={"reason": reason}),
                      f"ops.parked_{action}_done", service=service)
