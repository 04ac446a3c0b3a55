"""Operator routes every service serves: its parked outbox rows (SPEC 7.2)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from contracts.http import ErrorBody, ParkedRow, ParkedRows
from shared import outbox
from shared.auth import Finance


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
            count = await conn.fetchval("SELECT count(*) FROM outbox WHERE parked_at IS NOT NULL")
        return ParkedRows(service=rt.name, count=count, rows=[ParkedRow(**row) for row in rows])

    return r
