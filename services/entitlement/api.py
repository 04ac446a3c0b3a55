"""HTTP routes of SPEC 5.3 (entitlement): balances, ledger, features, services, AI allowance."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request

from contracts import events as ev
from contracts.events import ORG_ID_PATTERN, Resource
from contracts.http import (
    AllowanceResponse,
    BalancesResponse,
    BasicState,
    ErrorBody,
    ErrorCode,
    FeatureResponse,
    FeatureState,
    FeaturesResponse,
    LedgerEntry,
    LedgerPage,
    LotView,
    ResourceBalance,
    ServiceView,
)
from services.entitlement import domain, store
from services.entitlement.domain import Counters, Lot
from shared import outbox
from shared.auth import AccountReader, EntitlementReader, OrgActor
from shared.errors import ApiError
from shared.service import Runtime

router = APIRouter(prefix="/v1/orgs/{org_id}", tags=["entitlement"])
OrgPath = Annotated[str, Path(pattern=ORG_ID_PATTERN)]


def _rt(request: Request) -> Runtime:
    return request.app.state.runtime


def _snapshot(conn: Any) -> Any:
    """One consistent read: a read-only REPEATABLE READ transaction."""
    return conn.transaction(isolation="repeatable_read", readonly=True)


def _resource_balance(counters: Counters | None, lots: list[Lot], now: datetime) -> ResourceBalance:
    views = [
        LotView(lot_id=lot.lot_id, order_id=lot.order_id, sku=lot.sku, quantity=lot.quantity,
                remaining=lot.remaining, storage_years=lot.storage_years, credited_at=lot.credited_at,
                expires_at=lot.expires_at, status=domain.lot_status(lot, now))
        for lot in lots
    ]
    b = domain.balance(counters, lots)
    return ResourceBalance(purchased=b.purchased, available=b.available, used=b.used, arrears=b.arrears,
                           forfeited=b.forfeited, lots=views)


@router.get("/balances", response_model=BalancesResponse)
async def balances(org_id: OrgPath, caller: AccountReader, request: Request) -> BalancesResponse:
    rt = _rt(request)
    now = rt.clock.now()
    async with rt.pool.acquire() as conn, _snapshot(conn):
        counters = await store.balance_counters(conn, org_id)
        lots = await store.lots_of(conn, org_id)
        perpetual = await store.has_perpetual(conn, org_id)
    resources: dict[Resource, ResourceBalance] = {}
    for res in domain.RESOURCES:
        rb = _resource_balance(counters.get(res), [lot for lot in lots if lot.resource == res], now)
        if res == domain.AI:
            rb.offline_licence = perpetual
        resources[res] = rb  # type: ignore[index]
    return BalancesResponse(org_id=org_id, resources=resources)


@router.get("/ledger", response_model=LedgerPage)
async def ledger(
    org_id: OrgPath, caller: AccountReader, request: Request,
    resource: Resource | None = None,
    after: Annotated[str | None, Query(pattern=r"^\d{1,18}$")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> LedgerPage:
    rt = _rt(request)
    async with rt.pool.acquire() as conn:
        rows = await store.ledger_page(conn, org_id, resource, int(after or 0), limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    entries = [LedgerEntry(id=r.event_id, type=r.type, time=r.time, resource=r.resource, data=r.data)
               for r in rows]
    return LedgerPage(entries=entries, next=str(rows[-1].seq) if more else None)


async def _licences(request: Request, org_id: str) -> tuple[dict[str, domain.Licence], Any]:
    rt = _rt(request)
    async with rt.pool.acquire() as conn:
        return await store.licences_of(conn, org_id), rt.clock.now()


@router.get("/features", response_model=FeaturesResponse)
async def features(org_id: OrgPath, caller: EntitlementReader, request: Request) -> FeaturesResponse:
    lics, now = await _licences(request, org_id)
    basic = domain.basic_state(lics, now)
    states = {f: domain.feature_state(lics, f, now) for f in domain.OPTIONAL_FEATURES}
    return FeaturesResponse(
        basic=BasicState(active=basic.enabled, until=basic.until),
        features={f: FeatureState(enabled=s.enabled, until=s.until) for f, s in states.items()},
    )


@router.get("/features/{feature}", response_model=FeatureResponse)
async def feature(org_id: OrgPath, feature: str, caller: EntitlementReader, request: Request) -> FeatureResponse:
    if feature != domain.BASIC and feature not in domain.OPTIONAL_FEATURES:
        raise ApiError(ErrorCode.NOT_FOUND, f"unknown feature {feature!r}")
    lics, now = await _licences(request, org_id)
    s = domain.feature_state(lics, feature, now)
    return FeatureResponse(feature=feature, enabled=s.enabled, until=s.until)


def _service_view(s: domain.Service, now: datetime) -> ServiceView:
    return ServiceView(
        service_id=s.service_id, order_id=s.order_id, sku=s.sku, mode=s.mode, quantity=s.quantity,
        status=domain.service_status(s.sku, s.status, s.accept_by, s.ends_at, now),
        purchased_at=s.purchased_at, accept_by=s.accept_by, ends_at=s.ends_at, accepted_at=s.accepted_at,
    )


@router.get("/services", response_model=list[ServiceView])
async def services(org_id: OrgPath, caller: AccountReader, request: Request) -> list[ServiceView]:
    rt = _rt(request)
    now = rt.clock.now()
    async with rt.pool.acquire() as conn:
        rows = await store.services_of(conn, org_id)
    return [_service_view(r, now) for r in rows]


@router.post("/services/{service_id}/acceptance", response_model=ServiceView,
             responses={409: {"model": ErrorBody}})
async def accept_service(org_id: OrgPath, service_id: str, caller: OrgActor, request: Request) -> ServiceView:
    """Confirm acceptance of a one-time service (idempotent: accepting twice answers the same)."""
    rt = _rt(request)
    now = rt.clock.now()
    async with rt.pool.acquire() as conn, conn.transaction():
        svc = await store.service_for_update(conn, service_id)
        if svc is None or svc.org_id != org_id:
            raise ApiError(ErrorCode.NOT_FOUND, f"no service {service_id!r} for org {org_id!r}")
        if svc.status == "accepted":
            return _service_view(svc, now)
        if not domain.acceptable(svc.sku, svc.status, svc.accept_by, now):
            raise ApiError(ErrorCode.SERVICE_NOT_ACCEPTABLE,
                           f"service {service_id!r} is {_service_view(svc, now).status}; only a one-time "
                           "service awaiting acceptance before its deadline can be accepted")
        await store.set_service_status(conn, service_id, "accepted", now)
        event = rt.event(org_id, ev.ServiceAcceptedData(org_id=org_id, service_id=service_id, accepted_at=now))
        await outbox.add(conn, [event])  # the ledger entry (migrations/005_ledger_in_outbox.sql)
        svc = await store.service_for_update(conn, service_id)
    assert svc is not None  # locked above, in this transaction
    return _service_view(svc, now)


@router.get("/ai-review/allowance", response_model=AllowanceResponse)
async def allowance(org_id: OrgPath, caller: EntitlementReader, request: Request) -> AllowanceResponse:
    """May this org run an (online) AI review now: the AI-QTY balance valid now."""
    rt = _rt(request)
    now = rt.clock.now()
    async with rt.pool.acquire() as conn, _snapshot(conn):
        lots = [lot for lot in await store.lots_of(conn, org_id) if lot.resource == domain.AI]
        perpetual = await store.has_perpetual(conn, org_id)
    remaining = domain.available_now(lots, now)
    return AllowanceResponse(allowed=remaining > 0, remaining=remaining, offline_licence=perpetual)
