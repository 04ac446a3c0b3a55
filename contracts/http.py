"""HTTP request/response bodies and error codes (SPEC 5.3)."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

from contracts.events import LineFields, Money, OrgId, Resource
from contracts.limits import NO_CONTROL, EventTime, Id128, Ref128


class ErrorCode(StrEnum):
    """An error code a client branches on, with the HTTP status it answers with (SPEC 5.3:
    400 malformed, 401 no or bad token, 403 wrong org or role, 404 unknown, 409 conflict,
    422 a billing rule)."""

    status: int

    def __new__(cls, code: str, status: int) -> ErrorCode:
        member = str.__new__(cls, code)
        member._value_ = code
        member.status = status
        return member

    # generic
    VALIDATION_ERROR = "VALIDATION_ERROR", 400  # malformed body or parameters
    UNAUTHORIZED = "UNAUTHORIZED", 401  # no or bad token
    FORBIDDEN = "FORBIDDEN", 403  # wrong org or role
    NOT_FOUND = "NOT_FOUND", 404
    METHOD_NOT_ALLOWED = "METHOD_NOT_ALLOWED", 405
    PAYLOAD_TOO_LARGE = "PAYLOAD_TOO_LARGE", 413  # body over 1 MiB (SPEC 7.1)
    INTERNAL_ERROR = "INTERNAL_ERROR", 500  # unexpected; the body carries a request_id
    UNAVAILABLE = "UNAVAILABLE", 503  # Kafka or PostgreSQL unreachable; with Retry-After (SPEC 7.5)
    # orders
    AGREEMENT_REQUIRED = "AGREEMENT_REQUIRED", 422
    QUANTITY_BELOW_MINIMUM = "QUANTITY_BELOW_MINIMUM", 422
    QUANTITY_NOT_MULTIPLE = "QUANTITY_NOT_MULTIPLE", 422
    QUANTITY_TOO_LARGE = "QUANTITY_TOO_LARGE", 422
    INVALID_STORAGE_YEARS = "INVALID_STORAGE_YEARS", 422
    INVALID_DURATION = "INVALID_DURATION", 422
    INVALID_MODE = "INVALID_MODE", 422
    UNKNOWN_SKU = "UNKNOWN_SKU", 422
    UNKNOWN_FEATURE = "UNKNOWN_FEATURE", 422
    BASIC_EDITION_REQUIRED = "BASIC_EDITION_REQUIRED", 422
    OFFLINE_ONLY_PRODUCT = "OFFLINE_ONLY_PRODUCT", 422
    ORDER_ID_CONFLICT = "ORDER_ID_CONFLICT", 409
    AMOUNT_MISMATCH = "AMOUNT_MISMATCH", 422
    ORDER_NOT_PAYABLE = "ORDER_NOT_PAYABLE", 409
    ORDER_NOT_CANCELLABLE = "ORDER_NOT_CANCELLABLE", 409
    NOT_PARKED = "NOT_PARKED", 409  # an outbox row that is not parked (any more): already re-published or discarded
    PAYMENT_CONFLICT = "PAYMENT_CONFLICT", 409  # a different payment for a paid order
    PAID_AT_IN_FUTURE = "PAID_AT_IN_FUTURE", 422
    # entitlement
    INSUFFICIENT_BALANCE = "INSUFFICIENT_BALANCE", 422
    NO_OFFLINE_LICENCE = "NO_OFFLINE_LICENCE", 422
    SERVICE_NOT_ACCEPTABLE = "SERVICE_NOT_ACCEPTABLE", 409  # expired / not a one-time service
    # metering ingestion (per item, inside a 400)
    MALFORMED = "MALFORMED", 400
    UNKNOWN_ORG = "UNKNOWN_ORG", 400
    UNKNOWN_TYPE = "UNKNOWN_TYPE", 400
    INVALID_QUANTITY = "INVALID_QUANTITY", 400
    TIME_IN_FUTURE = "TIME_IN_FUTURE", 400
    TOO_MANY_EVENTS = "TOO_MANY_EVENTS", 400


class ItemError(BaseModel):
    index: int
    id: str | None = None
    code: str
    message: str


class ErrorDetail(BaseModel):
    code: str
    message: str
    line: int | None = None
    items: list[ItemError] | None = None
    request_id: str | None = Field(default=None, description="500 and 503: quote it to the operator")


class ErrorBody(BaseModel):
    error: ErrorDetail


# ---------------------------------------------------------------- order service

OrderId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")]


class CatalogItem(BaseModel):
    sku: str
    name: str
    description: str
    resource: str | None = None
    online: bool = Field(description="false: not sold online, admin import only")
    unit: str
    unit_price: Money | None = None
    unit_prices: dict[str, Money] | None = Field(
        default=None, description="by option, e.g. storage years or service mode"
    )
    options: dict[str, Any] | None = None


class CatalogResponse(BaseModel):
    price_book_version: str
    currency: Literal["USD"] = "USD"
    items: list[CatalogItem]


class AgreementRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    agreement_ref: Ref128
    signed_at: EventTime


class AgreementResponse(BaseModel):
    org_id: OrgId
    agreement_ref: str
    signed_at: AwareDatetime
    recorded_at: AwareDatetime


class OrderLineIn(LineFields[Id128]):
    model_config = ConfigDict(extra="forbid")


class OrderLineOut(OrderLineIn):
    line: int
    price: Money


class PlaceOrderRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    order_id: OrderId | None = None
    org_id: OrgId
    lines: Annotated[list[OrderLineIn], Field(min_length=1, max_length=100)]


class ImportOrderRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    order_id: OrderId
    org_id: OrgId
    lines: Annotated[list[OrderLineIn], Field(min_length=1, max_length=100)]
    paid_at: EventTime
    payment_ref: Ref128


class PaymentRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    payment_ref: Ref128
    amount: Money


class PaymentWebhookEvent(BaseModel):
    """POST /v1/payments/webhook from the payment provider (SPEC 7.4), signed in `AIMIS-Signature`."""

    model_config = ConfigDict(extra="forbid")
    event_id: Id128
    order_id: OrderId
    amount: Money
    currency: Literal["USD"]
    paid_at: EventTime
    payment_ref: Ref128


OrderStatus = Literal["placed", "paid", "fulfilled", "cancelled"]


class OrderResponse(BaseModel):
    order_id: str
    org_id: OrgId
    status: OrderStatus
    lines: list[OrderLineOut]
    total: Money
    price_book_version: str
    placed_at: AwareDatetime
    paid_at: AwareDatetime | None = None
    payment_ref: str | None = None
    cancelled_at: AwareDatetime | None = None
    fulfilled_at: AwareDatetime | None = None
    fulfilment_due_by: AwareDatetime | None = Field(
        None, description="paid orders: paid_at + AIMIS_FULFILMENT_SLA_S, when every line should be credited"
    )
    fulfilment_overdue: bool = Field(
        False, description="paid, and still not fulfilled at fulfilment_due_by (the credit promise is broken)"
    )


class OrderList(BaseModel):
    orders: list[OrderResponse]
    next: str | None = None


# ---------------------------------------------------------------- entitlement service

LotStatus = Literal["active", "depleted", "expired"]


class LotView(BaseModel):
    lot_id: str
    order_id: str
    sku: str
    quantity: int
    remaining: int
    storage_years: int | None = None
    credited_at: AwareDatetime
    expires_at: AwareDatetime
    status: LotStatus


class ResourceBalance(BaseModel):
    purchased: int
    available: int
    used: int
    arrears: int
    forfeited: int
    lots: list[LotView]
    offline_licence: bool | None = Field(
        default=None, description="ai_review only: an AI-PERPETUAL licence is held"
    )


class BalancesResponse(BaseModel):
    org_id: OrgId
    resources: dict[Resource, ResourceBalance]


class LedgerEntry(BaseModel):
    id: str
    type: str
    time: AwareDatetime
    resource: Resource | None = None
    data: dict[str, Any]


class LedgerPage(BaseModel):
    entries: list[LedgerEntry]
    next: str | None = None


class BasicState(BaseModel):
    active: bool
    until: AwareDatetime | None = None


class FeatureState(BaseModel):
    enabled: bool
    until: AwareDatetime | None = None


class FeaturesResponse(BaseModel):
    basic: BasicState
    features: dict[str, FeatureState]


class FeatureResponse(BaseModel):
    feature: str
    enabled: bool
    until: AwareDatetime | None = None


ServiceStatus = Literal["awaiting_acceptance", "accepted", "expired", "active", "ended"]


class ServiceView(BaseModel):
    service_id: str
    order_id: str
    sku: str
    mode: str | None = None
    quantity: int | None = None
    status: ServiceStatus
    purchased_at: AwareDatetime
    accept_by: AwareDatetime | None = None
    ends_at: AwareDatetime | None = None
    accepted_at: AwareDatetime | None = None


class AllowanceResponse(BaseModel):
    allowed: bool
    remaining: int
    offline_licence: bool


# ---------------------------------------------------------------- metering service


class UsageBucket(BaseModel):
    start: AwareDatetime
    resource: Resource
    accepted: int
    rejected: int


class UsageReport(BaseModel):
    buckets: list[UsageBucket]


class IngestResponse(BaseModel):
    accepted: list[str]


# ---------------------------------------------------------------- expiry service


class ScheduleItem(BaseModel):
    kind: Literal["lot", "licence", "service", "maintenance"]
    ref_id: str
    expires_at: AwareDatetime
    due_at: AwareDatetime
    remaining: int | None = None
    status: Literal["scheduled", "depleted", "commanded"]


class ScheduleResponse(BaseModel):
    org_id: OrgId
    items: list[ScheduleItem]


class ParkedRow(BaseModel):
    """An outbox row the broker refused for good (SPEC 7.2): kept, not published, not retried."""

    seq: int
    event_id: str
    topic: str
    key: str
    size: int = Field(description="bytes of the encoded event")
    created_at: AwareDatetime
    parked_at: AwareDatetime
    park_reason: str


class ParkedResolve(BaseModel):
    """Why an admin re-publishes or discards a parked row (kept with the decision)."""

    model_config = ConfigDict(extra="forbid")

    reason: Annotated[str, StringConstraints(min_length=1, max_length=500, pattern=NO_CONTROL)]


class ParkedResolution(BaseModel):
    """A decision on a parked outbox row (SPEC 7.2), as recorded."""

    seq: int
    event_id: str
    topic: str
    action: Literal["republish", "discard"]
    actor: str = Field(description="the role (and org) of the token that decided")
    reason: str
    at: AwareDatetime


class ParkedRows(BaseModel):
    service: str
    count: int = Field(description="parked rows in this service's outbox")
    rows: list[ParkedRow] = Field(description="the oldest parked rows (at most 1000)")
