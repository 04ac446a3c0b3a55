"""HTTP: synchronous usage ingestion (POST /v1/usage) and usage reports."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import AwareDatetime

from contracts.events import EventError, Resource, binary_attributes, from_binary
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

STRUCTURED, BATCH = "application/cloudevents+json", "application/cloudevents-batch+json"
_ONE = {"type": "object", "description": "one usage CloudEvent (structured mode)"}
_LIST = {"type": "array", "items": {"type": "object"}, "maxItems": domain.MAX_HTTP_EVENTS}
_INGEST_BODY = {
    "requestBody": {
        "required": True,
        "description": "CloudEvents HTTP binding: structured mode (`application/cloudevents+json`), batched "
                       f"mode (`{BATCH}`), or binary mode (the attributes in `ce-*` headers, the "
                       "usage data alone as the JSON body); `application/json`: one event or a list",
        "content": {
            "application/json": {"schema": {
                "description": "one usage CloudEvent, or a list of up to 1,000; with a `ce-specversion` header: "
                               "binary mode, the body is the event's data",
                "oneOf": [_ONE, _LIST],
            }},
            STRUCTURED: {"schema": _ONE},
            BATCH: {"schema": {**_LIST, "description": "up to 1,000 usage CloudEvents"}},
        },
    },
    "parameters": [
        {"name": f"ce-{a}", "in": "header", "required": False, "schema": {"type": "string"},
         "description": f"binary mode: the event's `{a}` (percent-encoded, CloudEvents HTTP binding 3.1.3.2)"}
        for a in ("specversion", "id", "source", "type", "subject", "time")
    ],
}


def _rt(request: Request) -> Runtime:
    return request.app.state.runtime


@router.post(
    "/v1/usage", status_code=202, response_model=IngestResponse, openapi_extra=_INGEST_BODY,
    summary="Validate usage events synchronously and publish them to aimis.usage.v1 (all or nothing)",
)
async def ingest_usage(request: Request, _: UsageSender) -> IngestResponse:
    rt = _rt(request)
    items = await _events(request)
    if len(items) > domain.MAX_HTTP_EVENTS:
        raise ApiError(
            ErrorCode.TOO_MANY_EVENTS,
            f"{len(items)} events in one request; at most {domain.MAX_HTTP_EVENTS}",
        )
    if not items:
        if _media_type(request) == BATCH:  # the CloudEvents batch format allows an empty batch
            return IngestResponse(accepted=[])
        raise ApiError(ErrorCode.VALIDATION_ERROR, "no events in the request")

    now = rt.clock.now()
    results = [domain.validate(item, now) for item in items]
    known = await request.app.state.orders_catch_up.settled_known_orgs(
        rt.pool, domain.orgs_of(results), HTTP_CATCH_UP_WAIT_S, remembered=False
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


async def _events(request: Request) -> list[Any]:
    """The request's events in its content mode (CloudEvents HTTP binding): binary mode becomes
    the structured document it stands for; each item is then validated as on Kafka."""
    body = await request.body()
    media_type = _media_type(request)
    if media_type not in (STRUCTURED, BATCH) and "ce-specversion" in request.headers:
        try:
            return [from_binary(*_ce_attributes(request), body)]
        except EventError as e:
            raise ApiError(ErrorCode.VALIDATION_ERROR, "the event is invalid; none was accepted", items=[
                {"index": 0, "id": request.headers.get("ce-id"), "code": e.reason, "message": e.detail}]) from None
    try:
        payload: Any = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise ApiError(ErrorCode.VALIDATION_ERROR, f"body is not JSON: {e}") from None
    if media_type == STRUCTURED and not isinstance(payload, dict):
        raise ApiError(ErrorCode.VALIDATION_ERROR, f"{STRUCTURED}: the body must be one event (a JSON object)")
    if media_type == BATCH and not isinstance(payload, list):
        raise ApiError(ErrorCode.VALIDATION_ERROR, f"{BATCH}: the body must be a JSON array of events")
    return payload if isinstance(payload, list) else [payload]


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def _ce_attributes(request: Request) -> tuple[dict[str, str], str | None]:
    """Binary mode: each `ce-<name>` header is the attribute <name>, percent-decoded (UTF-8); a
    header that cannot be read is refused before any event is (400 without items)."""
    try:
        return binary_attributes(((n.decode("latin-1").lower(), v) for n, v in request.headers.raw), "ce-",
                                 percent_encoded=True)
    except EventError as e:
        raise ApiError(ErrorCode.VALIDATION_ERROR, e.detail) from None


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
