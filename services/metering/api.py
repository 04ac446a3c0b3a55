"""HTTP: synchronous usage ingestion (POST /v1/usage) and usage reports."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import AwareDatetime

from contracts.events import Resource
from contracts.http import ErrorCode, IngestResponse, UsageBucket, UsageReport
from services.metering import domain, store
from services.metering.domain import Rejection, Usage
from shared.auth import AccountReader, UsageSender
from shared.errors import ApiError
from shared.kafka import publish_events
from shared.service import Runtime

router = APIRouter(tags=["usage"])
PUBLISH_TIMEOUT_S = 3.0
HTTP_CATCH_UP_WAIT_S = 5.0  # at start-up, an unknown org waits this long for the agreements to be read

_INGEST_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {
            "description": "one usage CloudEvent, or a list of up to 1,000",
            "oneOf": [
                {"type": "object"},
                {"type": "array", "items": {"type": "object"}, "maxItems": domain.MAX_HTTP_EVENTS},
            ],
        }}},
    }
}


def _rt(request: Request) -> Runtime:
    return request.app.state.runtime


@router.post(
    "/v1/usage", status_code=202, response_model=IngestResponse, openapi_extra=_INGEST_BODY,
    summary="Validate usage events synchronously and publish them to aimis.usage.v1 (all or nothing)",
)
async def ingest_usage(request: Request, _: UsageSender) -> IngestResponse:
    rt = _rt(request)
    try:
        payload: Any = json.loads(await request.body())
    except (ValueError, UnicodeDecodeError) as e:
        raise ApiError(ErrorCode.VALIDATION_ERROR, f"body is not JSON: {e}") from None
    items = payload if isinstance(payload, list) else [payload]
    if len(items) > domain.MAX_HTTP_EVENTS:
        raise ApiError(
            ErrorCode.TOO_MANY_EVENTS,
            f"{len(items)} events in one request; at most {domain.MAX_HTTP_EVENTS}",
        )
    if not items:
        raise ApiError(ErrorCode.VALIDATION_ERROR, "no events in the request")

    now = rt.clock.now()
    results = [domain.validate(item, now) for item in items]
    known = await request.app.state.orders_catch_up.settled_known_orgs(
        rt.pool, domain.orgs_of(results), HTTP_CATCH_UP_WAIT_S
    )
    results = [domain.check_org(x, known) for x in results]

    errors = [
        {"index": i, "id": x.event_id, "code": x.reason, "message": x.detail}
        for i, x in enumerate(results) if isinstance(x, Rejection)
    ]
    if errors:
        raise ApiError(
            ErrorCode.VALIDATION_ERROR,
            f"{len(errors)} of {len(results)} events are invalid; none was accepted",
            items=errors,
        )
    usages = [x for x in results if isinstance(x, Usage)]
    # SPEC 7.5: Kafka unreachable is a 503 within seconds (TimeoutError), not a 40 s wait; a client
    # retrying after a timeout cannot double-bill: the usage ids are the idempotency keys.
    await asyncio.wait_for(publish_events(rt.broker, [u.normalized() for u in usages]), PUBLISH_TIMEOUT_S)
    return IngestResponse(accepted=[u.id for u in usages])


@router.get(
    "/v1/orgs/{org_id}/usage", response_model=UsageReport,
    summary="Accepted and rejected quantities per UTC hour, day or month",
)
async def usage_report(
    request: Request,
    org_id: str,
    caller: AccountReader,
    resource: Resource | None = None,
    start: Annotated[AwareDatetime | None, Query(alias="from")] = None,
    to: AwareDatetime | None = None,
    granularity: Literal["hour", "day", "month"] = "hour",
) -> UsageReport:
    if start is not None and to is not None and start >= to:
        raise ApiError(ErrorCode.VALIDATION_ERROR, "'from' must be before 'to'")
    rows = await store.usage_report(
        _rt(request).pool, org_id, resource=resource, start=start, end=to, granularity=granularity
    )
    return UsageReport(buckets=[UsageBucket(**r) for r in rows])
