"""All SQL of the order service (schema `ordering`), parameterised and set-based."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg

from services.order.domain import PricedLine

LINE_COLUMNS = ("line", "sku", "quantity", "storage_years", "months", "feature", "mode", "years", "price")
ORDER_COLUMNS = """seq, order_id, org_id, status, request, imported, total, price_book_version, placed_at,
                   paid_at, payment_ref, cancelled_at, fulfilled_at"""


# ---------------------------------------------------------------- agreements


async def record_agreement(
    conn: asyncpg.Connection, org_id: str, agreement_ref: str, signed_at: datetime, now: datetime
) -> tuple[asyncpg.Record, bool]:
    """Insert or replace the org's agreement; return (record, changed). Same values: unchanged."""
    row = await conn.fetchrow(
        """INSERT INTO agreements (org_id, agreement_ref, signed_at, recorded_at)
           VALUES ($1, $2, $3, $4)
           ON CONFLICT (org_id) DO UPDATE
              SET agreement_ref = EXCLUDED.agreement_ref, signed_at = EXCLUDED.signed_at,
                  recorded_at = EXCLUDED.recorded_at
            WHERE (agreements.agreement_ref, agreements.signed_at)
                  IS DISTINCT FROM (EXCLUDED.agreement_ref, EXCLUDED.signed_at)
           RETURNING org_id, agreement_ref, signed_at, recorded_at""",
        org_id, agreement_ref, signed_at, now,
    )
    if row is not None:
        return row, True
    existing = await conn.fetchrow(
        "SELECT org_id, agreement_ref, signed_at, recorded_at FROM agreements WHERE org_id = $1", org_id
    )
    assert existing is not None
    return existing, False


async def has_agreement(conn: asyncpg.Connection, org_id: str) -> bool:
    return bool(await conn.fetchval("SELECT true FROM agreements WHERE org_id = $1", org_id))


# ---------------------------------------------------------------- orders


async def insert_order(
    conn: asyncpg.Connection,
    *,
    order_id: str,
    org_id: str,
    request: dict[str, Any],
    lines: Sequence[PricedLine],
    total: Decimal,
    price_book_version: str,
    placed_at: datetime,
    paid_at: datetime | None = None,
    payment_ref: str | None = None,
    imported: bool = False,
) -> bool:
    """Insert the order and its lines; False when `order_id` exists already (nothing written)."""
    inserted = await conn.fetchval(
        """INSERT INTO orders (order_id, org_id, status, request, imported, total, price_book_version,
                               placed_at, paid_at, payment_ref, payment_seq)
           VALUES ($1, $2, CASE WHEN $8::timestamptz IS NULL THEN 'placed' ELSE 'paid' END, $3, $4, $5, $6,
                   $7, $8, $9, CASE WHEN $8::timestamptz IS NULL THEN NULL ELSE nextval('payment_seq') END)
           ON CONFLICT (order_id) DO NOTHING
           RETURNING true""",
        order_id, org_id, request, imported, total, price_book_version, placed_at, paid_at, payment_ref,
    )
    if not inserted:
        return False
    cols = {c: [getattr(ln, c) for ln in lines] for c in LINE_COLUMNS}
    await conn.execute(
        """INSERT INTO order_lines (order_id, line, sku, quantity, storage_years, months, feature, mode,
                                    years, price)
           SELECT $1, * FROM unnest($2::int[], $3::text[], $4::int[], $5::int[], $6::int[], $7::text[],
                                    $8::text[], $9::int[], $10::numeric[])""",
        order_id, *cols.values(),
    )
    return True


async def get_order(
    conn: asyncpg.Connection, order_id: str, *, for_update: bool = False
) -> dict[str, Any] | None:
    lock = " FOR UPDATE" if for_update else ""
    row = await conn.fetchrow(f"SELECT {ORDER_COLUMNS} FROM orders WHERE order_id = $1{lock}", order_id)
    if row is None:
        return None
    return (await _with_lines(conn, [row]))[0]


async def list_orders(
    conn: asyncpg.Connection, org_id: str, after_seq: int, limit: int
) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        f"SELECT {ORDER_COLUMNS} FROM orders WHERE org_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        org_id, after_seq, limit,
    )
    return await _with_lines(conn, rows)


async def _with_lines(conn: asyncpg.Connection, rows: Sequence[asyncpg.Record]) -> list[dict[str, Any]]:
    orders = [dict(r) for r in rows]
    if not orders:
        return []
    lines = await conn.fetch(
        f"""SELECT order_id, {', '.join(LINE_COLUMNS)} FROM order_lines
            WHERE order_id = ANY($1::text[]) ORDER BY order_id, line""",
        [o["order_id"] for o in orders],
    )
    by_order: dict[str, list[dict[str, Any]]] = {}
    for ln in lines:
        d = dict(ln)
        by_order.setdefault(d.pop("order_id"), []).append(d)
    for o in orders:
        o["lines"] = by_order.get(o["order_id"], [])
    return orders


async def paid_basic_lines(conn: asyncpg.Connection, org_id: str) -> list[tuple[datetime, int]]:
    """(paid_at, months) of every paid SW-BASIC line of the org, in the order payments were taken."""
    rows = await conn.fetch(
        """SELECT o.paid_at, l.months FROM orders o JOIN order_lines l USING (order_id)
           WHERE o.org_id = $1 AND o.status IN ('paid', 'fulfilled') AND l.sku = 'SW-BASIC'
           ORDER BY o.payment_seq, l.line""",
        org_id,
    )
    return [(r["paid_at"], r["months"]) for r in rows]


async def mark_paid(conn: asyncpg.Connection, order_id: str, paid_at: datetime, payment_ref: str) -> None:
    await conn.execute(
        """UPDATE orders SET status = 'paid', paid_at = $2, payment_ref = $3, payment_seq = nextval('payment_seq')
           WHERE order_id = $1 AND status = 'placed'""",
        order_id, paid_at, payment_ref,
    )


async def mark_cancelled(conn: asyncpg.Connection, order_id: str, at: datetime) -> None:
    await conn.execute(
        "UPDATE orders SET status = 'cancelled', cancelled_at = $2 WHERE order_id = $1 AND status = 'placed'",
        order_id, at,
    )


async def mark_fulfilled(
    conn: asyncpg.Connection, order_ids: Sequence[str], org_ids: Sequence[str], at: Sequence[datetime]
) -> list[str]:
    """Set paid orders fulfilled (matching org only); return the order ids changed."""
    rows = await conn.fetch(
        """UPDATE orders o SET status = 'fulfilled', fulfilled_at = f.at
           FROM unnest($1::text[], $2::text[], $3::timestamptz[]) AS f(order_id, org_id, at)
           WHERE o.order_id = f.order_id AND o.org_id = f.org_id AND o.status = 'paid'
           RETURNING o.order_id""",
        list(order_ids), list(org_ids), list(at),
    )
    return [r["order_id"] for r in rows]


# ---------------------------------------------------------------- fulfilment SLA


async def unfulfilled_summary(conn: asyncpg.Connection, paid_before: datetime) -> tuple[int, datetime | None]:
    """(paid orders not fulfilled whose paid_at is before `paid_before`, the oldest unfulfilled paid_at)."""
    row = await conn.fetchrow(
        """SELECT count(*) FILTER (WHERE paid_at < $1) AS overdue, min(paid_at) AS oldest
           FROM orders WHERE status = 'paid'""",
        paid_before,
    )
    assert row is not None
    return int(row["overdue"]), row["oldest"]


async def webhook_event_order(conn: asyncpg.Connection, event_id: str) -> str | None:
    """The order a payment webhook event already paid, if it was processed."""
    order_id: str | None = await conn.fetchval(
        "SELECT order_id FROM payment_webhook_events WHERE event_id = $1", event_id)
    return order_id


async def record_webhook_event(conn: asyncpg.Connection, event_id: str, order_id: str, amount: Any,
                               payment_ref: str, paid_at: Any, received_at: Any) -> None:
    await conn.execute(
        "INSERT INTO payment_webhook_events (event_id, order_id, amount, payment_ref, paid_at, received_at)"
        " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (event_id) DO NOTHING",
        event_id, order_id, amount, payment_ref, paid_at, received_at,
    )
