"""Order's use cases (SPEC 2.1, 2.6): record an agreement; place, import, pay and cancel an order;
read orders.

Each takes its dependencies (`Deps`: the pool, the clock, the price book, the event source) and a
command; it opens the transaction, applies the domain rules, writes the outbox and returns the
order. A broken rule is an `OrderRuleError` whose `ErrorCode` carries its HTTP status; the router
(api.py) only translates HTTP into a command and the result back.
"""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import asyncpg

from contracts.events import (
    AgreementRecordedData,
    CloudEvent,
    EventData,
    OrderCancelledData,
    OrderLineData,
    OrderPaidData,
    OrderPlacedData,
    new_event,
)
from contracts.http import ErrorCode
from services.order import domain, store
from services.order.domain import Line, OrderRuleError, PriceBook
from shared import outbox
from shared.clock import Clock, add_months

EVENT_NS = uuid.UUID("6f1c2a1e-5d0b-4b8e-9a47-0a1de0c0a001")  # deterministic event ids per order
Order = dict[str, Any]  # an order row with its lines, as store.get_order returns it


@dataclass(frozen=True)
class Deps:
    pool: asyncpg.Pool
    clock: Clock
    book: PriceBook
    source: str

    def event(self, subject: str, data: EventData, *, id: str | None = None) -> CloudEvent[Any]:
        """An outgoing event; its type comes from its data model."""
        return new_event(subject, data, self.source, id=id, time=self.clock.now())


# ---------------------------------------------------------------- commands


@dataclass(frozen=True)
class RecordAgreement:
    org_id: str
    agreement_ref: str
    signed_at: datetime


@dataclass(frozen=True)
class PlaceOrder:
    """The public order endpoint: offline-only SKUs are refused; the order waits for payment."""

    order_id: str
    org_id: str
    lines: tuple[Line, ...]

    def request_key(self) -> dict[str, Any]:
        """What makes two requests under one order_id 'the same body' (absent fields ignored)."""
        lines = [{k: v for k, v in asdict(ln).items() if v is not None} for ln in self.lines]
        return {"kind": "order", "org_id": self.org_id, "lines": lines}


@dataclass(frozen=True)
class ImportOrder(PlaceOrder):
    """Sales staff record a purchase: placed and paid in one step at `paid_at`."""

    paid_at: datetime
    payment_ref: str

    def request_key(self) -> dict[str, Any]:
        return {**super().request_key(), "kind": "import",
                "paid_at": self.paid_at.astimezone(timezone.utc).isoformat(), "payment_ref": self.payment_ref}


@dataclass(frozen=True)
class PayOrder:
    order_id: str
    payment_ref: str
    amount: Decimal
    acting_org: str | None  # the caller's org; None: an admin


@dataclass(frozen=True)
class CancelOrder:
    order_id: str
    acting_org: str | None


@dataclass(frozen=True)
class Placed:
    order: Order
    created: bool  # False: the same request again (the order as it is)


# ---------------------------------------------------------------- use cases


async def record_agreement(deps: Deps, cmd: RecordAgreement) -> dict[str, Any]:
    """The same agreement again changes nothing; a different one replaces it and is announced."""
    async with deps.pool.acquire() as conn, conn.transaction():
        row, changed = await store.record_agreement(
            conn, cmd.org_id, cmd.agreement_ref, cmd.signed_at, deps.clock.now()
        )
        if changed:
            data = AgreementRecordedData(**dict(row))
            await outbox.add(conn, [deps.event(cmd.org_id, data)])
    return dict(row)


async def place_order(deps: Deps, cmd: PlaceOrder) -> Placed:
    """Price and store a new order (and announce it); the same request again returns it as it is."""
    key = cmd.request_key()
    imported = isinstance(cmd, ImportOrder)
    now = deps.clock.now()
    async with deps.pool.acquire() as conn:
        existing = await store.get_order(conn, cmd.order_id)
        if existing is not None:
            return _repeat(existing, key)
        at = now
        if isinstance(cmd, ImportOrder):
            if cmd.paid_at > now:
                raise OrderRuleError(ErrorCode.PAID_AT_IN_FUTURE, f"paid_at {cmd.paid_at.isoformat()} is in the future")
            at = cmd.paid_at
        if not await store.has_agreement(conn, cmd.org_id):
            raise OrderRuleError(
                ErrorCode.AGREEMENT_REQUIRED, f"org {cmd.org_id} has no recorded cooperation agreement"
            )
        basic = domain.basic_active_at(await store.paid_basic_lines(conn, cmd.org_id), at, add_months)
        priced = domain.price_order(cmd.lines, deps.book, online=not imported, basic_active=basic)
        async with conn.transaction():
            inserted = await store.insert_order(
                conn, order_id=cmd.order_id, org_id=cmd.org_id, request=key, lines=priced,
                total=domain.total_of(priced), price_book_version=deps.book.version, placed_at=at,
                imported=imported,
                paid_at=cmd.paid_at if isinstance(cmd, ImportOrder) else None,
                payment_ref=cmd.payment_ref if isinstance(cmd, ImportOrder) else None,
            )
            order = await _get(conn, cmd.order_id)
            if inserted:
                events = [_placed_event(deps, order)] + ([_paid_event(deps, order)] if imported else [])
                await outbox.add(conn, events)
    if not inserted:  # a concurrent request with the same order_id won
        return _repeat(order, key)
    return Placed(order, True)


async def import_order(deps: Deps, cmd: ImportOrder) -> Placed:
    return await place_order(deps, cmd)


async def pay_order(deps: Deps, cmd: PayOrder) -> Order:
    """Take the payment of a placed order; the same payment again answers the same (no new event)."""
    async with deps.pool.acquire() as conn, conn.transaction():
        order = await _locked(conn, cmd.order_id, cmd.acting_org)
        decision = domain.payment_decision(
            order["status"], order["total"], cmd.amount, order["payment_ref"], cmd.payment_ref
        )
        if decision == "pay":
            await store.mark_paid(conn, cmd.order_id, deps.clock.now(), cmd.payment_ref)
            order = await _get(conn, cmd.order_id)
            await outbox.add(conn, [_paid_event(deps, order)])
    return order


async def cancel_order(deps: Deps, cmd: CancelOrder) -> Order:
    """Cancel a placed (unpaid) order; cancelling a cancelled order again changes nothing."""
    async with deps.pool.acquire() as conn, conn.transaction():
        order = await _locked(conn, cmd.order_id, cmd.acting_org)
        if domain.cancel_decision(order["status"]) == "cancel":
            now = deps.clock.now()
            await store.mark_cancelled(conn, cmd.order_id, now)
            data = OrderCancelledData(order_id=cmd.order_id, org_id=order["org_id"], cancelled_at=now)
            await outbox.add(conn, [deps.event(order["org_id"], data,
                                               id=_event_id(cmd.order_id, "cancelled"))])
            order = await _get(conn, cmd.order_id)
    return order


async def get_order(deps: Deps, order_id: str, acting_org: str | None) -> Order:
    async with deps.pool.acquire() as conn:
        order = await store.get_order(conn, order_id)
    return _visible(order, order_id, acting_org)


async def list_orders(deps: Deps, org_id: str, after_seq: int, limit: int) -> tuple[list[Order], int | None]:
    """One page of the org's orders, oldest first, and the cursor of the next page (or None)."""
    async with deps.pool.acquire() as conn:
        rows = await store.list_orders(conn, org_id, after_seq, limit + 1)
    page = rows[:limit]
    return page, (page[-1]["seq"] if len(rows) > limit else None)


# ---------------------------------------------------------------- helpers


def _repeat(existing: Order, key: dict[str, Any]) -> Placed:
    if existing["request"] != key:
        raise OrderRuleError(
            ErrorCode.ORDER_ID_CONFLICT, f"order {existing['order_id']} exists with a different body"
        )
    return Placed(existing, False)


def _visible(order: Order | None, order_id: str, acting_org: str | None) -> Order:
    """404 for an unknown order and for another org's (so ids cannot be probed; SPEC 7.4)."""
    if order is None:
        raise OrderRuleError(ErrorCode.NOT_FOUND, f"no order {order_id}")
    if acting_org is not None and acting_org != order["org_id"]:  # another org's: exactly as if missing
        raise OrderRuleError(ErrorCode.NOT_FOUND, f"no order {order_id}")
    return order


async def _locked(conn: asyncpg.Connection, order_id: str, acting_org: str | None) -> Order:
    return _visible(await store.get_order(conn, order_id, for_update=True), order_id, acting_org)


async def _get(conn: asyncpg.Connection, order_id: str) -> Order:
    order = await store.get_order(conn, order_id)
    if order is None:  # read inside the transaction that wrote it: cannot happen
        raise RuntimeError(f"order {order_id} vanished inside its own transaction")
    return order


def _event_id(order_id: str, kind: str) -> str:
    return str(uuid.uuid5(EVENT_NS, f"{order_id}/{kind}"))


def _line_data(order: Order) -> list[OrderLineData]:
    return [OrderLineData.model_validate(ln) for ln in order["lines"]]


def _placed_event(deps: Deps, o: Order) -> CloudEvent[Any]:
    data = OrderPlacedData(
        order_id=o["order_id"], org_id=o["org_id"], lines=_line_data(o), total=o["total"],
        price_book_version=o["price_book_version"], placed_at=o["placed_at"],
    )
    return deps.event(o["org_id"], data, id=_event_id(o["order_id"], "placed"))


def _paid_event(deps: Deps, o: Order) -> CloudEvent[Any]:
    data = OrderPaidData(
        order_id=o["order_id"], org_id=o["org_id"], lines=_line_data(o), total=o["total"],
        price_book_version=o["price_book_version"], placed_at=o["placed_at"], paid_at=o["paid_at"],
        payment_ref=o["payment_ref"], imported=o["imported"],
    )
    return deps.event(o["org_id"], data, id=_event_id(o["order_id"], "paid"))
