"""HTTP routes of the order service (SPEC 5.3): translate requests into domain calls and SQL."""

from __future__ import annotations

import uuid
from datetime import timezone
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response

from contracts.events import (
    ORG_ID_PATTERN,
    AgreementRecordedData,
    OrderCancelledData,
    OrderLineData,
    OrderPaidData,
    OrderPlacedData,
)
from contracts.http import (
    AgreementRequest,
    AgreementResponse,
    CatalogResponse,
    ErrorBody,
    ImportOrderRequest,
    OrderLineIn,
    OrderList,
    OrderResponse,
    PaymentRequest,
    PlaceOrderRequest,
)
from shared import outbox
from shared.auth import Admin, Caller
from shared.clock import add_months
from shared.errors import ApiError
from shared.service import Runtime

from services.order import domain, store

router = APIRouter()
EVENT_NS = uuid.UUID("6f1c2a1e-5d0b-4b8e-9a47-0a1de0c0a001")  # deterministic event ids per order
CONFLICTS = {"ORDER_ID_CONFLICT", "ORDER_NOT_PAYABLE", "ORDER_NOT_CANCELLABLE", "PAYMENT_CONFLICT"}

OrgPath = Annotated[str, Path(pattern=ORG_ID_PATTERN)]


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {c: {"model": ErrorBody} for c in codes}


def _rt(request: Request) -> Runtime:
    return request.app.state.runtime


def _api_error(e: domain.OrderRuleError) -> ApiError:
    status = 400 if e.code == "VALIDATION_ERROR" else 409 if e.code in CONFLICTS else 422
    return ApiError(status, e.code, e.message, line=e.line)


def _event_id(order_id: str, kind: str) -> str:
    return str(uuid.uuid5(EVENT_NS, f"{order_id}/{kind}"))


# ---------------------------------------------------------------- views and events


def _view(order: dict[str, Any]) -> OrderResponse:
    return OrderResponse.model_validate({**order, "lines": order["lines"]})


def _line_data(order: dict[str, Any]) -> list[OrderLineData]:
    return [OrderLineData.model_validate(ln) for ln in order["lines"]]


def _placed_event(rt: Runtime, o: dict[str, Any]):  # type: ignore[no-untyped-def]
    data = OrderPlacedData(
        order_id=o["order_id"], org_id=o["org_id"], lines=_line_data(o), total=o["total"],
        price_book_version=o["price_book_version"], placed_at=o["placed_at"],
    )
    return rt.event(o["org_id"], data, id=_event_id(o["order_id"], "placed"))


def _paid_event(rt: Runtime, o: dict[str, Any]):  # type: ignore[no-untyped-def]
    data = OrderPaidData(
        order_id=o["order_id"], org_id=o["org_id"], lines=_line_data(o), total=o["total"],
        price_book_version=o["price_book_version"], placed_at=o["placed_at"], paid_at=o["paid_at"],
        payment_ref=o["payment_ref"], imported=o["imported"],
    )
    return rt.event(o["org_id"], data, id=_event_id(o["order_id"], "paid"))


# ---------------------------------------------------------------- catalog and agreement


@router.get("/v1/catalog", response_model=CatalogResponse, tags=["catalog"])
async def catalog(request: Request) -> CatalogResponse:
    """SKUs, unit prices and the price book version (no token needed)."""
    return request.app.state.catalog


@router.put(
    "/v1/admin/orgs/{org_id}/agreement", response_model=AgreementResponse, tags=["admin"],
    responses=_errors(400, 401, 403),
)
async def record_agreement(
    org_id: OrgPath, body: AgreementRequest, _: Admin, request: Request
) -> AgreementResponse:
    """Record the org's signed offline cooperation agreement. The same body again changes nothing;
    a different one replaces the record and is announced again."""
    rt = _rt(request)
    async with rt.pool.acquire() as conn, conn.transaction():
        row, changed = await store.record_agreement(
            conn, org_id, body.agreement_ref, body.signed_at, rt.clock.now()
        )
        if changed:
            data = AgreementRecordedData(**dict(row))
            await outbox.add(conn, [rt.event(org_id, data)])
    return AgreementResponse(**dict(row))


# ---------------------------------------------------------------- placing and importing


def _request_key(kind: str, body: PlaceOrderRequest | ImportOrderRequest) -> dict[str, Any]:
    """What makes two requests under one order_id 'the same body' (absent = null fields ignored)."""
    key: dict[str, Any] = {
        "kind": kind,
        "org_id": body.org_id,
        "lines": [ln.model_dump(exclude_none=True) for ln in body.lines],
    }
    if isinstance(body, ImportOrderRequest):
        key["paid_at"] = body.paid_at.astimezone(timezone.utc).isoformat()
        key["payment_ref"] = body.payment_ref
    return key


def _repeat(existing: dict[str, Any], key: dict[str, Any], response: Response) -> OrderResponse:
    if existing["request"] != key:
        raise ApiError(
            409, "ORDER_ID_CONFLICT", f"order {existing['order_id']} exists with a different body"
        )
    response.status_code = 200
    return _view(existing)


def _lines(lines: list[OrderLineIn]) -> list[domain.Line]:
    return [domain.Line(**ln.model_dump()) for ln in lines]


async def _create(
    request: Request, response: Response, *, kind: str, body: PlaceOrderRequest | ImportOrderRequest,
    order_id: str,
) -> OrderResponse:
    rt, book = _rt(request), request.app.state.price_book
    key = _request_key(kind, body)
    imported = isinstance(body, ImportOrderRequest)
    now = rt.clock.now()
    async with rt.pool.acquire() as conn:
        existing = await store.get_order(conn, order_id)
        if existing is not None:
            return _repeat(existing, key, response)
        if imported and body.paid_at > now:  # type: ignore[union-attr]
            raise ApiError(422, "PAID_AT_IN_FUTURE", f"paid_at {body.paid_at.isoformat()} is in the future")  # type: ignore[union-attr]
        if not await store.has_agreement(conn, body.org_id):
            raise ApiError(
                422, "AGREEMENT_REQUIRED", f"org {body.org_id} has no recorded cooperation agreement"
            )
        at = body.paid_at if imported else now  # type: ignore[union-attr]
        basic = domain.basic_active_at(await store.paid_basic_lines(conn, body.org_id), at, add_months)
        try:
            priced = domain.price_order(_lines(body.lines), book, online=not imported, basic_active=basic)
        except domain.OrderRuleError as e:
            raise _api_error(e) from None
        async with conn.transaction():
            inserted = await store.insert_order(
                conn, order_id=order_id, org_id=body.org_id, request=key, lines=priced,
                total=domain.total_of(priced), price_book_version=book.version,
                placed_at=at, imported=imported,
                paid_at=body.paid_at if imported else None,  # type: ignore[union-attr]
                payment_ref=body.payment_ref if imported else None,  # type: ignore[union-attr]
            )
            order = await store.get_order(conn, order_id)
            assert order is not None
            if inserted:
                events = [_placed_event(rt, order)] + ([_paid_event(rt, order)] if imported else [])
                await outbox.add(conn, events)
        if not inserted:  # a concurrent request with the same order_id won
            return _repeat(order, key, response)
    return _view(order)


@router.post(
    "/v1/orders", response_model=OrderResponse, status_code=201, tags=["orders"],
    responses={200: {"model": OrderResponse, "description": "the same order again"}, **_errors(400, 401, 403, 409, 422)},
)
async def place_order(
    body: PlaceOrderRequest, caller: Caller, request: Request, response: Response
) -> OrderResponse:
    """Place an order (201); the same body under the same order_id returns the order (200)."""
    caller.require_org(body.org_id)
    order_id = body.order_id or f"ord-{uuid.uuid4().hex}"
    return await _create(request, response, kind="order", body=body, order_id=order_id)


@router.post(
    "/v1/admin/orders/import", response_model=OrderResponse, status_code=201, tags=["admin"],
    responses={200: {"model": OrderResponse, "description": "the same import again"}, **_errors(400, 401, 403, 409, 422)},
)
async def import_order(
    body: ImportOrderRequest, _: Admin, request: Request, response: Response
) -> OrderResponse:
    """Record a sales-assisted or migrated purchase: placed and paid in one step at `paid_at`."""
    return await _create(request, response, kind="import", body=body, order_id=body.order_id)


# ---------------------------------------------------------------- lifecycle


async def _locked(conn: Any, order_id: str, caller: Any) -> dict[str, Any]:
    order = await store.get_order(conn, order_id, for_update=True)
    if order is None:
        raise ApiError(404, "NOT_FOUND", f"no order {order_id}")
    caller.require_org(order["org_id"])
    return order


@router.post(
    "/v1/orders/{order_id}/payment", response_model=OrderResponse, tags=["orders"],
    responses=_errors(400, 401, 403, 404, 409, 422),
)
async def pay_order(order_id: str, body: PaymentRequest, caller: Caller, request: Request) -> OrderResponse:
    """Take the payment of a placed order; the same payment again answers the same (no new event)."""
    rt = _rt(request)
    async with rt.pool.acquire() as conn, conn.transaction():
        order = await _locked(conn, order_id, caller)
        try:
            decision = domain.payment_decision(
                order["status"], order["total"], body.amount, order["payment_ref"], body.payment_ref
            )
        except domain.OrderRuleError as e:
            raise _api_error(e) from None
        if decision == "pay":
            await store.mark_paid(conn, order_id, rt.clock.now(), body.payment_ref)
            order = await store.get_order(conn, order_id)
            assert order is not None
            await outbox.add(conn, [_paid_event(rt, order)])
    return _view(order)


@router.post(
    "/v1/orders/{order_id}/cancel", response_model=OrderResponse, tags=["orders"],
    responses=_errors(401, 403, 404, 409),
)
async def cancel_order(order_id: str, caller: Caller, request: Request) -> OrderResponse:
    """Cancel a placed (unpaid) order; cancelling a cancelled order again changes nothing."""
    rt = _rt(request)
    async with rt.pool.acquire() as conn, conn.transaction():
        order = await _locked(conn, order_id, caller)
        try:
            decision = domain.cancel_decision(order["status"])
        except domain.OrderRuleError as e:
            raise _api_error(e) from None
        if decision == "cancel":
            now = rt.clock.now()
            await store.mark_cancelled(conn, order_id, now)
            data = OrderCancelledData(order_id=order_id, org_id=order["org_id"], cancelled_at=now)
            event = rt.event(order["org_id"], data, id=_event_id(order_id, "cancelled"))
            await outbox.add(conn, [event])
            order = await store.get_order(conn, order_id)
            assert order is not None
    return _view(order)


# ---------------------------------------------------------------- reading


@router.get(
    "/v1/orders/{order_id}", response_model=OrderResponse, tags=["orders"],
    responses=_errors(401, 403, 404),
)
async def get_order(order_id: str, caller: Caller, request: Request) -> OrderResponse:
    async with _rt(request).pool.acquire() as conn:
        order = await store.get_order(conn, order_id)
    if order is None:
        raise ApiError(404, "NOT_FOUND", f"no order {order_id}")
    caller.require_org(order["org_id"])
    return _view(order)


@router.get(
    "/v1/orgs/{org_id}/orders", response_model=OrderList, tags=["orders"],
    responses=_errors(400, 401, 403),
)
async def list_orders(
    org_id: OrgPath,
    caller: Caller,
    request: Request,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    after: Annotated[str | None, Query(description="the `next` cursor of the previous page")] = None,
) -> OrderList:
    """The org's orders, oldest first, `limit` per page; pass `next` as `after` for the next page."""
    caller.require_org(org_id)
    after_seq = 0
    if after is not None:
        if not after.isdigit() or len(after) > 18:
            raise ApiError(400, "VALIDATION_ERROR", "after: not a cursor returned by this endpoint")
        after_seq = int(after)
    async with _rt(request).pool.acquire() as conn:
        rows = await store.list_orders(conn, org_id, after_seq, limit + 1)
    page = rows[:limit]
    nxt = str(page[-1]["seq"]) if len(rows) > limit else None
    return OrderList(orders=[_view(o) for o in page], next=nxt)
