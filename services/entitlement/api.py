"""HTTP routes of SPEC 5.3 (entitlement): balances, ledger, features, services, AI allowance."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request

from contracts import events as ev
from contracts.events import ORG_ID_PATTERN, Resource
from contracts.http import (
    AllowanceResponse,
    BalancesResponse,
    BasicState,
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


def _lot_status(r: Any, now: Any) -> str:
    if r["status"] == "expired" or now >= r["expires_at"]:
        return "expired"
    return "depleted" if r["remaining"] == 0 else "active"


def _available(lots: list[Any], now: Any) -> int:
    """What may be drawn now: the remaining of active lots valid at this moment."""
    return sum(r["remaining"] for r in lots if r["status"] == "active" and r["credited_at"] <= now < r["expires_at"])


def _unforfeited(lots: list[Any]) -> int:
    """The balance's `available`: the remaining of every lot not yet forfeited. A lot past its expiry
    keeps its remainder here until the expire_lot command forfeits it (at most the late-usage
    grace later), so purchased = available + drawn + forfeited holds at every moment (SPEC 4)."""
    return sum(r["remaining"] for r in lots if r["status"] == "active")


def _resource_balance(resource: str, bal: Any, lots: list[Any], now: Any) -> ResourceBalance:
    views = [
        LotView(lot_id=r["lot_id"], order_id=r["order_id"], sku=r["sku"], quantity=r["quantity"],
                remaining=r["remaining"], storage_years=r["storage_years"], credited_at=r["credited_at"],
                expires_at=r["expires_at"], status=_lot_status(r, now))
        for r in lots
    ]
    available = _unforfeited(lots)
    g = (lambda c: int(bal[c])) if bal is not None else (lambda c: 0)
    return ResourceBalance(
        purchased=g("purchased"), available=available, used=g("drawn_by_usage") + g("arrears_recorded"),
        arrears=g("arrears_recorded") - g("arrears_offset"), forfeited=g("forfeited"), lots=views,
    )


@router.get("/balances", response_model=BalancesResponse)
async def balances(org_id: OrgPath, caller: AccountReader, request: Request) -> BalancesResponse:
    rt = _rt(request)
    now = rt.clock.now()
    async with rt.pool.acquire() as conn, _snapshot(conn):
        bals = await store.balance_rows(conn, org_id)
        lots = await store.lots_of(conn, org_id)
        perpetual = await store.has_perpetual(conn, org_id)
    resources: dict[Resource, ResourceBalance] = {}
    for res in domain.RESOURCES:
        rb = _resource_balance(res, bals.get(res), [r for r in lots if r["resource"] == res], now)
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
    entries = [LedgerEntry(id=r["event_id"], type=r["type"], time=r["time"], resource=r["resource"],
                           data=r["data"]) for r in rows]
    return LedgerPage(entries=entries, next=str(rows[-1]["seq"]) if more else None)


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


def _service_view(r: Any, now: Any) -> ServiceView:
    return ServiceView(
        service_id=r["service_id"], order_id=r["order_id"], sku=r["sku"], mode=r["mode"], quantity=r["quantity"],
        status=domain.service_status(r["sku"], r["status"], r["accept_by"], r["ends_at"], now),
        purchased_at=r["purchased_at"], accept_by=r["accept_by"], ends_at=r["ends_at"],
        accepted_at=r["accepted_at"],
    )


@router.get("/services", response_model=list[ServiceView])
async def services(org_id: OrgPath, caller: AccountReader, request: Request) -> list[ServiceView]:
    rt = _rt(request)
    now = rt.clock.now()
    async with rt.pool.acquire() as conn:
        rows = await store.services_of(conn, org_id)
    return [_service_view(r, now) for r in rows]


@router.post("/services/{service_id}/acceptance", response_model=ServiceView)
async def accept_service(org_id: OrgPath, service_id: str, caller: OrgActor, request: Request) -> ServiceView:
    """Confirm acceptance of a one-time service (idempotent: accepting twice answers the same)."""
    rt = _rt(request)
    now = rt.clock.now()
    async with rt.pool.acquire() as conn, conn.transaction():
        row = await store.service_for_update(conn, service_id)
        if row is None or row["org_id"] != org_id:
            raise ApiError(ErrorCode.NOT_FOUND, f"no service {service_id!r} for org {org_id!r}")
        if row["status"] == "accepted":
            return _service_view(row, now)
        if not domain.acceptable(row["sku"], row["status"], row["accept_by"], now):
            raise ApiError(ErrorCode.SERVICE_NOT_ACCEPTABLE,
                           f"service {service_id!r} is {_service_view(row, now).status}; only a one-time "
                           "service awaiting acceptance before its deadline can be accepted")
        await store.set_service_status(conn, service_id, "accepted", now)
        event = rt.event("aimis.ledger.service_accepted", org_id,
                         ev.ServiceAcceptedData(org_id=org_id, service_id=service_id, accepted_at=now))
        await store.append_ledger(conn, [event])
        await outbox.add(conn, [event])
        row = await store.service_for_update(conn, service_id)
    return _service_view(row, now)


@router.get("/ai-review/allowance", response_model=AllowanceResponse)
async def allowance(org_id: OrgPath, caller: EntitlementReader, request: Request) -> AllowanceResponse:
    """May this org run an (online) AI review now: the AI-QTY balance valid now."""
    rt = _rt(request)
    now = rt.clock.now()
    async with rt.pool.acquire() as conn, _snapshot(conn):
        lots = [r for r in await store.lots_of(conn, org_id) if r["resource"] == domain.AI]
        perpetual = await store.has_perpetual(conn, org_id)
    remaining = _available(lots, now)
    return AllowanceResponse(allowed=remaining > 0, remaining=remaining, offline_licence=perpetual)
