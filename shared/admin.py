"""Operator routes every service serves: its parked outbox rows (SPEC 7.2), listed, and once the
cause is fixed re-published or discarded with a reason (admin only; each decision is recorded)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request

from contracts.http import ErrorBody, ErrorCode, ParkedResolution, ParkedResolve, ParkedRow, ParkedRows
from shared import outbox
from shared.auth import Admin, Finance, Principal
from shared.errors import ApiError

Seq = Annotated[int, Path(ge=1, le=2**63 - 1)]


def router() -> APIRouter:
    r = APIRouter(tags=["admin"])

    @r.get("/v1/admin/outbox/parked", response_model=ParkedRows,
           responses={c: {"model": ErrorBody} for c in (401, 403)})
    async def parked_rows(request: Request, _: Finance) -> ParkedRows:
        """Outbox rows the broker refused for good (too large, invalid), oldest first. They are not
        published and block nothing; admin and finance may read them."""
        rt = request.app.state.runtime
        async with rt.pool.acquire() as conn:
            rows = await outbox.parked(conn)
            count = await outbox.parked_count(conn)
        return ParkedRows(service=rt.name, count=count, rows=[ParkedRow(**row) for row in rows])

    async def resolve(request: Request, seq: int, action: outbox.Resolution, who: Principal,
                      body: ParkedResolve) -> ParkedResolution:
        rt = request.app.state.runtime
        actor = who.role + (f":{who.org_id}" if who.org_id else "")
        exists = None
        async with rt.pool.acquire() as conn:
            done = await outbox.resolve(conn, seq, action, actor, body.reason, rt.name)
            if done is None:
                exists = await conn.fetchval("SELECT true FROM outbox WHERE seq = $1", seq)
        if done is None:
            if exists:
                raise ApiError(ErrorCode.NOT_PARKED, f"outbox row {seq} is not parked (already re-published, "
                                                     "sent or discarded)")
            raise ApiError(ErrorCode.NOT_FOUND, f"no outbox row {seq}")
        return ParkedResolution(**done)

    errors: dict[int | str, dict[str, Any]] = {c: {"model": ErrorBody} for c in (400, 401, 403, 404, 409)}

    @r.post("/v1/admin/outbox/parked/{seq}/republish", response_model=ParkedResolution, responses=errors)
    async def republish(request: Request, seq: Seq, body: ParkedResolve, who: Admin) -> ParkedResolution:
        """Put a parked row back in the queue once its cause is fixed: the relay publishes it again,
        before every younger row. Once only: a second call answers 409 `NOT_PARKED` (and the
        consumers' inboxes would absorb a second copy of the same event anyway)."""
        return await resolve(request, seq, "republish", who, body)

    @r.post("/v1/admin/outbox/parked/{seq}/discard", response_model=ParkedResolution, responses=errors)
    async def discard(request: Request, seq: Seq, body: ParkedResolve, who: Admin) -> ParkedResolution:
        """Give up on a parked row, with a reason: it is kept (with its payload) but never published
        and no longer listed."""
        return await resolve(request, seq, "discard", who, body)

    return r
