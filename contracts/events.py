"""CloudEvents 1.0 (structured JSON) envelope and one data model per event type (SPEC 5).

`EVENT_TYPES` maps every `type` to its topic and data model; `parse_event` validates the
envelope, then the data for its type; `new_event` builds an outgoing event.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from decimal import Decimal
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    StringConstraints,
)

from contracts import topics
from contracts.limits import NO_CONTROL, Attributes, EventTime, Id128

ORG_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
OrgId = Annotated[str, StringConstraints(pattern=ORG_ID_PATTERN)]
Money = Annotated[
    Decimal,
    Field(max_digits=14, decimal_places=2),
    PlainSerializer(lambda d: f"{d:.2f}", return_type=str, when_used="json"),
]
Resource = Literal["cloud_inspection", "ai_review"]
Channel = Literal["online", "offline"]

SPECVERSION = "1.0"


class _Data(BaseModel):
    model_config = ConfigDict(extra="forbid")


DataT = TypeVar("DataT")


class CloudEvent(BaseModel, Generic[DataT]):
    """CloudEvents 1.0 structured-mode JSON; `subject` is the org_id (also the Kafka key)."""

    model_config = ConfigDict(extra="allow")  # CloudEvents extension attributes pass through

    specversion: Literal["1.0"]
    id: Id128
    source: Annotated[str, StringConstraints(min_length=1, max_length=256, pattern=NO_CONTROL)]
    type: str
    subject: OrgId
    time: EventTime
    datacontenttype: str | None = "application/json"
    data: DataT


# ---------------------------------------------------------------- usage (5.1)

USAGE_CLOUD_INSPECTION = "aimis.usage.cloud_inspection"
USAGE_AI_REVIEW = "aimis.usage.ai_review"
USAGE_TYPES: dict[str, str] = {
    USAGE_CLOUD_INSPECTION: "cloud_inspection",
    USAGE_AI_REVIEW: "ai_review",
}


class UsageData(BaseModel):
    """What the imaging platform reports for one use. Unknown extra fields are ignored."""

    model_config = ConfigDict(extra="ignore")

    quantity: Annotated[int, Field(ge=1, le=10_000)] = 1
    inspection_id: Id128
    site_id: Annotated[str, StringConstraints(max_length=128, pattern=NO_CONTROL)] | None = None
    channel: Channel = "online"
    attributes: Attributes | None = None


UsageRejectionReason = Literal[
    "MALFORMED", "UNKNOWN_ORG", "UNKNOWN_TYPE", "INVALID_QUANTITY", "TIME_IN_FUTURE"
]


class UsageRejectedData(_Data):
    reason: UsageRejectionReason
    detail: str
    received_at: AwareDatetime
    original: Any = Field(description="the event as received, or its raw text when not JSON")


# ---------------------------------------------------------------- deductions


class DeductionRequestedData(_Data):
    usage_id: str
    org_id: OrgId
    resource: Resource
    quantity: Annotated[int, Field(ge=1, le=10_000)]
    occurred_at: AwareDatetime
    received_at: AwareDatetime
    channel: Channel = "online"
    inspection_id: str
    site_id: str | None = None
    attributes: dict[str, str] | None = None


# ---------------------------------------------------------------- orders


class OrderLineData(_Data):
    line: int = Field(ge=0, description="index of the line in the order")
    sku: str
    quantity: int | None = None
    storage_years: int | None = None
    months: int | None = None
    feature: str | None = None
    mode: str | None = None
    years: int | None = None
    price: Money


class AgreementRecordedData(_Data):
    org_id: OrgId
    agreement_ref: str
    signed_at: AwareDatetime
    recorded_at: AwareDatetime


class OrderPlacedData(_Data):
    order_id: str
    org_id: OrgId
    lines: list[OrderLineData]
    total: Money
    price_book_version: str
    placed_at: AwareDatetime


class OrderPaidData(_Data):
    order_id: str
    org_id: OrgId
    lines: list[OrderLineData]
    total: Money
    price_book_version: str
    placed_at: AwareDatetime
    paid_at: AwareDatetime
    payment_ref: str
    imported: bool = False


class OrderCancelledData(_Data):
    order_id: str
    org_id: OrgId
    cancelled_at: AwareDatetime


# ---------------------------------------------------------------- ledger (5.2)


class LotCreditedData(_Data):
    org_id: OrgId
    lot_id: str
    order_id: str
    line: int
    sku: str
    resource: Resource
    quantity: int
    storage_years: int | None = None
    credited_at: AwareDatetime
    expires_at: AwareDatetime


class Allocation(_Data):
    lot_id: str
    quantity: int
    retention_until: AwareDatetime | None = None


class UsageDeductedData(_Data):
    org_id: OrgId
    usage_id: str
    resource: Resource
    quantity: int
    occurred_at: AwareDatetime
    channel: Channel = "online"
    inspection_id: str | None = None
    site_id: str | None = None
    attributes: dict[str, str] | None = None
    allocations: list[Allocation]
    arrears_quantity: int = 0
    offline_licence: bool = Field(
        default=False, description="counted under an AI-PERPETUAL licence, nothing deducted"
    )


LedgerRejectionReason = Literal["INSUFFICIENT_BALANCE", "NO_OFFLINE_LICENCE"]


class UsageRejectedLedgerData(_Data):
    org_id: OrgId
    usage_id: str
    resource: Resource
    quantity: int
    occurred_at: AwareDatetime
    channel: Channel = "online"
    reason: LedgerRejectionReason


class ArrearsOffsetItem(_Data):
    usage_id: str
    quantity: int
    retention_until: AwareDatetime | None = None


class ArrearsOffsetData(_Data):
    org_id: OrgId
    lot_id: str
    resource: Resource
    quantity: int
    offsets: list[ArrearsOffsetItem]


class LotExpiredData(_Data):
    org_id: OrgId
    lot_id: str
    resource: Resource
    forfeited: int
    expires_at: AwareDatetime
    expired_at: AwareDatetime


class LicenceActivatedData(_Data):
    org_id: OrgId
    licence_id: str
    order_id: str
    line: int
    sku: str
    feature: str = Field(description="'basic', an SW-OPT feature name, or 'ai_perpetual'")
    period_start: AwareDatetime
    period_end: AwareDatetime | None = None
    ends_at: AwareDatetime | None = Field(
        default=None, description="the licence's end after this period (null: perpetual)"
    )


class LicenceExpiredData(_Data):
    org_id: OrgId
    licence_id: str
    feature: str
    ended_at: AwareDatetime


class ServiceGrantedData(_Data):
    org_id: OrgId
    service_id: str
    order_id: str
    line: int
    sku: str
    mode: str | None = None
    quantity: int | None = None
    years: int | None = None
    purchased_at: AwareDatetime
    accept_by: AwareDatetime | None = None
    ends_at: AwareDatetime | None = None


class ServiceAcceptedData(_Data):
    org_id: OrgId
    service_id: str
    accepted_at: AwareDatetime


class ServiceExpiredData(_Data):
    org_id: OrgId
    service_id: str
    expired_at: AwareDatetime


class MaintenanceEndedData(_Data):
    org_id: OrgId
    service_id: str
    ended_at: AwareDatetime


class OrderFulfilledData(_Data):
    org_id: OrgId
    order_id: str
    fulfilled_at: AwareDatetime


# ---------------------------------------------------------------- expiry commands


class ExpireLotData(_Data):
    org_id: OrgId
    lot_id: str
    expires_at: AwareDatetime


class EndLicenceData(_Data):
    org_id: OrgId
    licence_id: str
    ends_at: AwareDatetime


class ExpireServiceData(_Data):
    org_id: OrgId
    service_id: str
    accept_by: AwareDatetime


class EndMaintenanceData(_Data):
    org_id: OrgId
    service_id: str
    ends_at: AwareDatetime


class ExpiryUpcomingData(_Data):
    org_id: OrgId
    kind: Literal["lot", "licence", "service", "maintenance"]
    ref_id: str
    expires_at: AwareDatetime
    days_before: int
    remaining: int | None = None


# ---------------------------------------------------------------- entitlement DLQ

DeadLetterReason = Literal["MALFORMED", "UNKNOWN_TYPE", "SCHEMA_VIOLATION", "UNKNOWN_ORDER_LINE"]


class DeadLetterData(_Data):
    reason: DeadLetterReason
    detail: str
    topic: str
    partition: int
    offset: int
    received_at: AwareDatetime
    original: Any


# ---------------------------------------------------------------- registry

EVENT_TYPES: dict[str, tuple[str, type[BaseModel]]] = {
    USAGE_CLOUD_INSPECTION: (topics.USAGE, UsageData),
    USAGE_AI_REVIEW: (topics.USAGE, UsageData),
    "aimis.usage.rejected": (topics.USAGE_REJECTED, UsageRejectedData),
    "aimis.orders.agreement_recorded": (topics.ORDERS, AgreementRecordedData),
    "aimis.orders.order_placed": (topics.ORDERS, OrderPlacedData),
    "aimis.orders.order_paid": (topics.ORDERS, OrderPaidData),
    "aimis.orders.order_cancelled": (topics.ORDERS, OrderCancelledData),
    "aimis.metering.deduction_requested": (topics.DEDUCTIONS, DeductionRequestedData),
    "aimis.ledger.lot_credited": (topics.LEDGER, LotCreditedData),
    "aimis.ledger.usage_deducted": (topics.LEDGER, UsageDeductedData),
    "aimis.ledger.usage_rejected": (topics.LEDGER, UsageRejectedLedgerData),
    "aimis.ledger.arrears_offset": (topics.LEDGER, ArrearsOffsetData),
    "aimis.ledger.lot_expired": (topics.LEDGER, LotExpiredData),
    "aimis.ledger.licence_activated": (topics.LEDGER, LicenceActivatedData),
    "aimis.ledger.licence_expired": (topics.LEDGER, LicenceExpiredData),
    "aimis.ledger.service_granted": (topics.LEDGER, ServiceGrantedData),
    "aimis.ledger.service_accepted": (topics.LEDGER, ServiceAcceptedData),
    "aimis.ledger.service_expired": (topics.LEDGER, ServiceExpiredData),
    "aimis.ledger.maintenance_ended": (topics.LEDGER, MaintenanceEndedData),
    "aimis.ledger.order_fulfilled": (topics.LEDGER, OrderFulfilledData),
    "aimis.expiry.expire_lot": (topics.EXPIRY_COMMANDS, ExpireLotData),
    "aimis.expiry.end_licence": (topics.EXPIRY_COMMANDS, EndLicenceData),
    "aimis.expiry.expire_service": (topics.EXPIRY_COMMANDS, ExpireServiceData),
    "aimis.expiry.end_maintenance": (topics.EXPIRY_COMMANDS, EndMaintenanceData),
    "aimis.notifications.expiry_upcoming": (topics.NOTIFICATIONS, ExpiryUpcomingData),
    "aimis.entitlement.dead_letter": (topics.ENTITLEMENT_DLQ, DeadLetterData),
}


def topic_of(event_type: str) -> str:
    return EVENT_TYPES[event_type][0]


class EventError(ValueError):
    """Why a message is not a valid event: `reason` is MALFORMED, UNKNOWN_TYPE or SCHEMA_VIOLATION."""

    def __init__(self, reason: str, detail: str, loc: tuple[Any, ...] = ()):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.loc = loc


def parse_event(raw: bytes | str | dict[str, Any], allowed: set[str] | None = None) -> CloudEvent[Any]:
    """Validate an envelope and its data; `event.data` is the typed model of its `type`.

    Raises EventError(MALFORMED) for non-JSON / not a CloudEvent, UNKNOWN_TYPE for a type not
    in `allowed` (default: every known type), SCHEMA_VIOLATION when the data does not fit.
    """
    from pydantic import ValidationError

    try:
        if isinstance(raw, dict):
            env = CloudEvent[dict[str, Any]].model_validate(raw)
        else:
            env = CloudEvent[dict[str, Any]].model_validate_json(raw)
    except ValidationError as e:
        raise EventError("MALFORMED", _summary(e), _first_loc(e)) from None
    known = allowed if allowed is not None else EVENT_TYPES.keys()
    if env.type not in known or env.type not in EVENT_TYPES:
        raise EventError("UNKNOWN_TYPE", f"unknown event type {env.type!r}")
    model = EVENT_TYPES[env.type][1]
    try:
        data = model.model_validate(env.data)
    except ValidationError as e:
        raise EventError("SCHEMA_VIOLATION", _summary(e), ("data", *_first_loc(e))) from None
    # Already validated: re-type the envelope as CloudEvent[Any] so it serializes `data` by its model.
    return CloudEvent[Any].model_construct(_fields_set=env.model_fields_set, **{**dict(env), "data": data})


def _first_loc(e: Any) -> tuple[Any, ...]:
    errs = e.errors()
    return tuple(errs[0]["loc"]) if errs else ()


def _summary(e: Any) -> str:
    parts = []
    for err in e.errors()[:5]:
        loc = ".".join(str(p) for p in err["loc"]) or "(root)"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


def new_event(
    event_type: str,
    subject: str,
    data: BaseModel,
    source: str,
    *,
    id: str | None = None,
    time: datetime | None = None,
) -> CloudEvent[Any]:
    if event_type not in EVENT_TYPES:
        raise KeyError(f"unknown event type {event_type!r}")
    return CloudEvent[Any](
        specversion=SPECVERSION,
        id=id or str(uuid.uuid4()),
        source=source,
        type=event_type,
        subject=subject,
        time=time or datetime.now(timezone.utc),
        data=data,
    )


def encode(event: CloudEvent[Any]) -> bytes:
    """Structured-mode JSON bytes of an event (data serialized by its own model)."""
    return event.model_dump_json(exclude_none=False).encode()
