"""HTTP routes of the order service (SPEC 5.3): translate a request into a command for
services.order.application and its result (or its error code) back into HTTP."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Path, Query, Request, Response

from contracts.events import ORG_ID_PATTERN
from contracts.http import (
    AgreementRequest,
    AgreementResponse,
    CatalogResponse,
    ErrorBody,
    ErrorCode,
    ImportOrderRequest,
    OrderLineIn,
    OrderList,
    OrderResponse,
    PaymentRequest,
    PlaceOrderRequest,
)
from services.order import application as app
from services.order import sla
from services.order.domain import Line, OrderRuleError
from shared.auth import AccountReader, Finance, OrderActor, OrderReader, Principal
from shared.errors import ApiError

router = APIRouter()
T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

OrgPath = Annotated[str, Path(pattern=ORG_ID_PATTERN)]


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {c: {"model": ErrorBody} for c in codes}


def _deps(request: Request) -> app.Deps:
    rt = request.app.state.runtime
    return app.Deps(rt.pool, rt.clock, request.app.state.price_book, rt.source)


async def _call(use_case: Awaitable[T]) -> T:
    """Run a use case; a broken rule becomes the HTTP error of its code."""
    try:
        return await use_case
    except OrderRuleError as e:
        raise ApiError(e.code, e.message, line=e.line) from None


def _acting_org(caller: Principal) -> str | None:
    """The org an org token acts for; None for roles that see every org (admin, finance)."""
    return caller.org_id if caller.role == "org" else None


def _view(order: dict[str, Any]) -> OrderResponse:
    return OrderResponse.model_validate({**sla.annotate(order), "lines": order["lines"]})


def _lines(lines: list[OrderLineIn]) -> tuple[Line, ...]:
    return tuple(Line(**ln.model_dump()) for ln in lines)


def _placed(placed: app.Placed, response: Response) -> OrderResponse:
    if not placed.created:
        response.status_code = 200
    return _view(placed.order)


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
    org_id: OrgPath, body: AgreementRequest, _: Finance, request: Request
) -> AgreementResponse:
    """Record the org's signed offline cooperation agreement. The same body again changes nothing;
    a different one replaces the record and is announced again."""
    cmd = app.RecordAgreement(org_id, body.agreement_ref, body.signed_at)
    return AgreementResponse(**await _call(app.record_agreement(_deps(request), cmd)))


# ---------------------------------------------------------------- placing and importing


def _creates(path: str, tag: str, again: str) -> Callable[[F], F]:
    """An idempotent POST of an order: 201 with the new order, 200 with the same one again."""
    return router.post(
        path, response_model=OrderResponse, status_code=201, tags=[tag],
        responses={200: {"model": OrderResponse, "description": again}, **_errors(400, 401, 403, 409, 422)},
    )


@_creates("/v1/orders", "orders", "the same order again")
async def place_order(
    body: PlaceOrderRequest, caller: OrderActor, request: Request, response: Response
) -> OrderResponse:
    """Place an order (201); the same body under the same order_id returns the order (200)."""
    caller.require_org(body.org_id)
    cmd = app.PlaceOrder(body.order_id or f"ord-{uuid.uuid4().hex}", body.org_id, _lines(body.lines))
    return _placed(await _call(app.place_order(_deps(request), cmd)), response)


@_creates("/v1/admin/orders/import", "admin", "the same import again")
async def import_order(
    body: ImportOrderRequest, _: Finance, request: Request, response: Response
) -> OrderResponse:
    """Record a sales-assisted or migrated purchase: placed and paid in one step at `paid_at`."""
    cmd = app.ImportOrder(body.order_id, body.org_id, _lines(body.lines), body.paid_at, body.payment_ref)
    return _placed(await _call(app.import_order(_deps(request), cmd)), response)


# ---------------------------------------------------------------- lifecycle


@router.post(
    "/v1/orders/{order_id}/payment", response_model=OrderResponse, tags=["orders"],
    responses=_errors(400, 401, 403, 404, 409, 422),
)
async def pay_order(order_id: str, body: PaymentRequest, caller: Finance, request: Request) -> OrderResponse:
    """Take the payment of a placed order; the same payment again answers the same (no new event)."""
    cmd = app.PayOrder(order_id, body.payment_ref, body.amount, _acting_org(caller))
    return _view(await _call(app.pay_order(_deps(request), cmd)))


@router.post(
    "/v1/orders/{order_id}/cancel", response_model=OrderResponse, tags=["orders"],
    responses=_errors(401, 403, 404, 409),
)
async def cancel_order(order_id: str, caller: OrderActor, request: Request) -> OrderResponse:
    """Cancel a placed (unpaid) order; cancelling a cancelled order again changes nothing."""
    cmd = app.CancelOrder(order_id, _acting_org(caller))
    return _view(await _call(app.cancel_order(_deps(request), cmd)))


# ---------------------------------------------------------------- reading


@router.get(
    "/v1/orders/{order_id}", response_model=OrderResponse, tags=["orders"],
    responses=_errors(401, 403, 404),
)
async def get_order(order_id: str, caller: OrderReader, request: Request) -> OrderResponse:
    return _view(await _call(app.get_order(_deps(request), order_id, _acting_org(caller))))


@router.get(
    "/v1/orgs/{org_id}/orders", response_model=OrderList, tags=["orders"],
    responses=_errors(400, 401, 403),
)
async def list_orders(
    org_id: OrgPath,
    caller: AccountReader,
    request: Request,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    after: Annotated[str | None, Query(description="the `next` cursor of the previous page")] = None,
) -> OrderList:
    """The org's orders, oldest first, `limit` per page; pass `next` as `after` for the next page."""
    after_seq = 0
    if after is not None:
        if not after.isdigit() or len(after) > 18:
            raise ApiError(ErrorCode.VALIDATION_ERROR, "after: not a cursor returned by this endpoint")
        after_seq = int(after)
    page, nxt = await _call(app.list_orders(_deps(request), org_id, after_seq, limit))
    return OrderList(orders=[_view(o) for o in page], next=None if nxt is None else str(nxt))
