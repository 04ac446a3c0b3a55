"""HTTP routes of the expiry service: the organisation's schedule of open deadlines."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request

from contracts.events import ORG_ID_PATTERN
from contracts.http import ScheduleItem, ScheduleResponse
from services.expiry import store
from shared.auth import AccountReader

router = APIRouter(tags=["expiry"])


@router.get("/v1/orgs/{org_id}/schedule", response_model=ScheduleResponse)
async def get_schedule(
    org_id: Annotated[str, Path(pattern=ORG_ID_PATTERN)], caller: AccountReader, request: Request
) -> ScheduleResponse:
    """The organisation's open deadlines (lots, licences, services, maintenance), by due time."""
    items = await store.schedule(request.app.state.runtime.pool, org_id)
    return ScheduleResponse(
        org_id=org_id,
        items=[
            ScheduleItem(
                kind=i.kind, ref_id=i.ref_id, expires_at=i.expires_at, due_at=i.due_at,
                remaining=i.remaining, status=i.status,
            )
            for i in items
        ],
    )
