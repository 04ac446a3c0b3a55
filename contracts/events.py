"""CloudEvents 1.0 (structured JSON) envelope and one data model per event type (SPEC 5).

`EVENT_TYPES` maps every `type` to its topic and data model; `parse_event` validates the
envelope, then the data for its type; `new_event` builds an outgoing event.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Iterable
from datetime import datetime, timezone
from decimal import Decimal
from typing import Annotated, Any, ClassVar, Generic, Literal, NamedTuple, TypeVar
from urllib.parse import unquote

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    StringConstraints,
    ValidationError,
)
from pydantic_core import to_json

from contracts import topics
from contracts.limits import MAX_ID, MIN_TIME, NO_CONTROL, Attributes, DataTime, EventTime, Id128

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


class EventData(BaseModel):
    """A data model that knows its event type(s) and topic.

    Most models are the data of exactly one type (`TYPE`, on `TOPIC`). A model several types
    share (usage's two kinds, the dead letters of each service) leaves `TYPE` empty and lists
    `TYPES` (type -> topic); building such an event names its type explicitly.
    """

    TYPE: ClassVar[str] = ""
    TOPIC: ClassVar[str] = ""
    TYPES: ClassVar[dict[str, str]] = {}

    @classmethod
    def event_types(cls) -> dict[str, str]:
        """type -> topic of every event type whose data is this model."""
        return {cls.TYPE: cls.TOPIC} if cls.TYPE else dict(cls.TYPES)


class _Data(EventData):
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


def usage_type(resource: str) -> str:
    """The usage event type of a resource (`aimis.usage.<resource>`)."""
    return next(t for t, r in USAGE_TYPES.items() if r == resource)


class UsageData(EventData):
    """What the imaging platform reports for one use. Unknown extra fields are ignored."""

    # Both usage types share this model: the type (the resource) is named when building one.

    model_config = ConfigDict(extra="ignore")
    TYPES: ClassVar[dict[str, str]] = {USAGE_CLOUD_INSPECTION: topics.USAGE, USAGE_AI_REVIEW: topics.USAGE}

    quantity: Annotated[int, Field(ge=1, le=10_000)] = 1
    inspection_id: Id128
    site_id: Annotated[str, StringConstraints(max_length=128, pattern=NO_CONTROL)] | None = None
    channel: Channel = "online"
    attributes: Attributes | None = None


class RecordHeader(BaseModel):
    """One header of a consumed Kafka record, kept on its rejection (binary-mode CloudEvents carry
    their attributes in headers). `value` is the UTF-8 text, or the base64 of bytes that are not
    UTF-8 (`base64: true`); cut to 4,096 characters."""

    model_config = ConfigDict(extra="forbid")

    key: str
    value: str
    base64: bool = False


UsageRejectionReason = Literal[
    "MALFORMED", "UNKNOWN_ORG", "UNKNOWN_TYPE", "INVALID_QUANTITY", "TIME_IN_FUTURE", "UNPROCESSABLE"
]


class _Refused(_Data):
    """What a rejection or a dead letter carries of the record it refused (shared/consumer.py
    `original_fields`)."""

    original: Any = Field(description="the event as received, or its raw text when not JSON")
    original_truncated: bool = Field(default=False, description="original is the first 4 KiB of the record (SPEC 7.1)")
    original_sha256: str | None = Field(default=None, description="SHA-256 (hex) of the whole record, when truncated")
    original_base64: str | None = Field(
        default=None, description="the record's exact bytes, when they are not UTF-8 (original is then lossy)")
    headers: list[RecordHeader] | None = Field(
        default=None, description="the headers of the refused record, as received (binary mode: its attributes)"
    )


class UsageRejectedData(_Refused):
    TYPE: ClassVar[str] = "aimis.usage.rejected"
    TOPIC: ClassVar[str] = topics.USAGE_REJECTED

    reason: UsageRejectionReason
    detail: str
    received_at: DataTime


# ---------------------------------------------------------------- deductions


class DeductionRequestedData(_Data):
    TYPE: ClassVar[str] = "aimis.metering.deduction_requested"
    TOPIC: ClassVar[str] = topics.DEDUCTIONS

    usage_id: Id128
    org_id: OrgId
    resource: Resource
    quantity: Annotated[int, Field(ge=1, le=10_000)]
    occurred_at: DataTime
    received_at: DataTime
    channel: Channel = "online"
    inspection_id: Id128
    site_id: Annotated[str, StringConstraints(max_length=128, pattern=NO_CONTROL)] | None = None
    attributes: Attributes | None = None


# ---------------------------------------------------------------- orders


S = TypeVar("S")


class LineFields(BaseModel, Generic[S]):
    """What an order line names (SPEC 5.3): the SKU and the fields SKUs take, for the HTTP bodies
    and the order events alike. `S`, the type of sku, feature and mode: `Id128` in requests (SPEC
    7.1), `str` in events."""

    sku: S
    quantity: int | None = None
    storage_years: int | None = None
    months: int | None = None
    feature: S | None = None
    mode: S | None = None
    years: int | None = None


class _LineNumber(BaseModel):
    line: int = Field(ge=0, description="index of the line in the order")


class OrderLineData(LineFields[str], _LineNumber, _Data):
    # pydantic orders fields from the last base to the first: line, then the line fields, then price
    price: Money


class AgreementRecordedData(_Data):
    TYPE: ClassVar[str] = "aimis.orders.agreement_recorded"
    TOPIC: ClassVar[str] = topics.ORDERS

    org_id: OrgId
    agreement_ref: str
    signed_at: DataTime
    recorded_at: DataTime


class _PlacedOrder(_Data):
    """An order as placed: what its placed and paid events both carry."""

    order_id: str
    org_id: OrgId
    lines: list[OrderLineData]
    total: Money
    price_book_version: str
    placed_at: DataTime


class OrderPlacedData(_PlacedOrder):
    TYPE: ClassVar[str] = "aimis.orders.order_placed"
    TOPIC: ClassVar[str] = topics.ORDERS


class OrderPaidData(_PlacedOrder):
    TYPE: ClassVar[str] = "aimis.orders.order_paid"
    TOPIC: ClassVar[str] = topics.ORDERS

    paid_at: DataTime
    payment_ref: str
    imported: bool = False


class OrderCancelledData(_Data):
    TYPE: ClassVar[str] = "aimis.orders.order_cancelled"
    TOPIC: ClassVar[str] = topics.ORDERS

    order_id: str
    org_id: OrgId
    cancelled_at: DataTime


# ---------------------------------------------------------------- ledger (5.2)


class LotCreditedData(_Data):
    TYPE: ClassVar[str] = "aimis.ledger.lot_credited"
    TOPIC: ClassVar[str] = topics.LEDGER

    org_id: OrgId
    lot_id: str
    order_id: str
    line: int
    sku: str
    resource: Resource
    quantity: int
    storage_years: int | None = None
    credited_at: DataTime
    expires_at: DataTime


class Allocation(_Data):
    lot_id: str
    quantity: int
    retention_until: DataTime | None = None


class _LedgerUse(_Data):
    """The use a ledger entry answers (deducted or rejected)."""

    org_id: OrgId
    usage_id: str
    resource: Resource
    quantity: int
    occurred_at: DataTime
    channel: Channel = "online"


class UsageDeductedData(_LedgerUse):
    TYPE: ClassVar[str] = "aimis.ledger.usage_deducted"
    TOPIC: ClassVar[str] = topics.LEDGER

    inspection_id: str | None = None
    site_id: str | None = None
    attributes: dict[str, str] | None = None
    allocations: list[Allocation]
    arrears_quantity: int = 0
    offline_licence: bool = Field(
        default=False, description="counted under an AI-PERPETUAL licence, nothing deducted"
    )


LedgerRejectionReason = Literal["INSUFFICIENT_BALANCE", "NO_OFFLINE_LICENCE"]


class UsageRejectedLedgerData(_LedgerUse):
    TYPE: ClassVar[str] = "aimis.ledger.usage_rejected"
    TOPIC: ClassVar[str] = topics.LEDGER

    reason: LedgerRejectionReason


class ArrearsOffsetItem(_Data):
    usage_id: str
    quantity: int
    retention_until: DataTime | None = None


class ArrearsOffsetData(_Data):
    TYPE: ClassVar[str] = "aimis.ledger.arrears_offset"
    TOPIC: ClassVar[str] = topics.LEDGER

    org_id: OrgId
    lot_id: str
    resource: Resource
    quantity: int
    offsets: list[ArrearsOffsetItem]


class LotExpiredData(_Data):
    TYPE: ClassVar[str] = "aimis.ledger.lot_expired"
    TOPIC: ClassVar[str] = topics.LEDGER

    org_id: OrgId
    lot_id: str
    resource: Resource
    forfeited: int
    expires_at: DataTime
    expired_at: DataTime


class LicenceActivatedData(_Data):
    TYPE: ClassVar[str] = "aimis.ledger.licence_activated"
    TOPIC: ClassVar[str] = topics.LEDGER

    org_id: OrgId
    licence_id: str
    order_id: str
    line: int
    sku: str
    feature: str = Field(description="'basic', an SW-OPT feature name, or 'ai_perpetual'")
    period_start: DataTime
    period_end: DataTime | None = None
    ends_at: DataTime | None = Field(
        default=None, description="the licence's end after this period (null: perpetual)"
    )


class LicenceExpiredData(_Data):
    TYPE: ClassVar[str] = "aimis.ledger.licence_expired"
    TOPIC: ClassVar[str] = topics.LEDGER

    org_id: OrgId
    licence_id: str
    feature: str
    ended_at: DataTime


class ServiceGrantedData(_Data):
    TYPE: ClassVar[str] = "aimis.ledger.service_granted"
    TOPIC: ClassVar[str] = topics.LEDGER

    org_id: OrgId
    service_id: str
    order_id: str
    line: int
    sku: str
    mode: str | None = None
    quantity: int | None = None
    years: int | None = None
    purchased_at: DataTime
    accept_by: DataTime | None = None
    ends_at: DataTime | None = None


class ServiceAcceptedData(_Data):
    TYPE: ClassVar[str] = "aimis.ledger.service_accepted"
    TOPIC: ClassVar[str] = topics.LEDGER

    org_id: OrgId
    service_id: str
    accepted_at: DataTime


class ServiceExpiredData(_Data):
    TYPE: ClassVar[str] = "aimis.ledger.service_expired"
    TOPIC: ClassVar[str] = topics.LEDGER

    org_id: OrgId
    service_id: str
    expired_at: DataTime


class MaintenanceEndedData(_Data):
    TYPE: ClassVar[str] = "aimis.ledger.maintenance_ended"
    TOPIC: ClassVar[str] = topics.LEDGER

    org_id: OrgId
    service_id: str
    ended_at: DataTime


class OrderFulfilledData(_Data):
    TYPE: ClassVar[str] = "aimis.ledger.order_fulfilled"
    TOPIC: ClassVar[str] = topics.LEDGER

    org_id: OrgId
    order_id: str
    fulfilled_at: DataTime


# ---------------------------------------------------------------- expiry commands


class ExpireLotData(_Data):
    TYPE: ClassVar[str] = "aimis.expiry.expire_lot"
    TOPIC: ClassVar[str] = topics.EXPIRY_COMMANDS

    org_id: OrgId
    lot_id: str
    expires_at: DataTime


class EndLicenceData(_Data):
    TYPE: ClassVar[str] = "aimis.expiry.end_licence"
    TOPIC: ClassVar[str] = topics.EXPIRY_COMMANDS

    org_id: OrgId
    licence_id: str
    ends_at: DataTime


class ExpireServiceData(_Data):
    TYPE: ClassVar[str] = "aimis.expiry.expire_service"
    TOPIC: ClassVar[str] = topics.EXPIRY_COMMANDS

    org_id: OrgId
    service_id: str
    accept_by: DataTime


class EndMaintenanceData(_Data):
    TYPE: ClassVar[str] = "aimis.expiry.end_maintenance"
    TOPIC: ClassVar[str] = topics.EXPIRY_COMMANDS

    org_id: OrgId
    service_id: str
    ends_at: DataTime


class ExpiryUpcomingData(_Data):
    TYPE: ClassVar[str] = "aimis.notifications.expiry_upcoming"
    TOPIC: ClassVar[str] = topics.NOTIFICATIONS

    org_id: OrgId
    kind: Literal["lot", "licence", "service", "maintenance"]
    ref_id: str
    expires_at: DataTime
    days_before: int
    remaining: int | None = None


# ---------------------------------------------------------------- dead letters (one topic per service)

DeadLetterReason = Literal["MALFORMED", "UNKNOWN_TYPE", "SCHEMA_VIOLATION", "UNKNOWN_ORDER_LINE", "UNPROCESSABLE"]
DEAD_LETTER_TYPES: dict[str, str] = {
    "aimis.order.dead_letter": topics.ORDER_DLQ,
    "aimis.metering.dead_letter": topics.METERING_DLQ,
    "aimis.entitlement.dead_letter": topics.ENTITLEMENT_DLQ,
    "aimis.expiry.dead_letter": topics.EXPIRY_DLQ,
}


def dead_letter_type(service: str) -> str:
    """The dead-letter event type of a service (`aimis.<service>.dead_letter`)."""
    t = f"aimis.{service}.dead_letter"
    if t not in DEAD_LETTER_TYPES:
        raise KeyError(f"no dead-letter topic for service {service!r}")
    return t


class DeadLetterData(_Refused):
    # One model for every service's dead-letter type (the type names the service).
    TYPES: ClassVar[dict[str, str]] = DEAD_LETTER_TYPES

    reason: DeadLetterReason
    detail: str
    topic: str
    partition: int
    offset: int
    received_at: DataTime


# ---------------------------------------------------------------- registry

DATA_MODELS: tuple[type[EventData], ...] = (
    UsageData, UsageRejectedData,
    AgreementRecordedData, OrderPlacedData, OrderPaidData, OrderCancelledData,
    DeductionRequestedData,
    LotCreditedData, UsageDeductedData, UsageRejectedLedgerData, ArrearsOffsetData, LotExpiredData,
    LicenceActivatedData, LicenceExpiredData, ServiceGrantedData, ServiceAcceptedData, ServiceExpiredData,
    MaintenanceEndedData, OrderFulfilledData,
    ExpireLotData, EndLicenceData, ExpireServiceData, EndMaintenanceData,
    ExpiryUpcomingData,
    DeadLetterData,
)

# type -> (topic, data model), derived from the models
EVENT_TYPES: dict[str, tuple[str, type[EventData]]] = {
    t: (topic, m) for m in DATA_MODELS for t, topic in m.event_types().items()
}


def models_on(topic: str) -> tuple[type[EventData], ...]:
    """The data models of the event types on `topic`."""
    return tuple(m for m in DATA_MODELS if topic in m.event_types().values())


def types_of(*models: type[EventData]) -> frozenset[str]:
    """Every event type whose data is one of `models`."""
    return frozenset(t for m in models for t in m.event_types())


def topic_of(event_type: str) -> str:
    return EVENT_TYPES[event_type][0]


class EventError(ValueError):
    """Why a message is not a valid event: `reason` is MALFORMED, UNKNOWN_TYPE or SCHEMA_VIOLATION."""

    def __init__(self, reason: str, detail: str, loc: tuple[Any, ...] = ()):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.loc = loc


# Parametrised once: `CloudEvent[X]` looks the class up in pydantic's cache on every use.
_ANY_EVENT: type[CloudEvent[Any]] = CloudEvent[Any]
_DICT_EVENT: type[CloudEvent[dict[str, Any]]] = CloudEvent[dict[str, Any]]


def parse_event(raw: bytes | str | dict[str, Any], allowed: set[str] | None = None) -> CloudEvent[Any]:
    """Validate an envelope and its data; `event.data` is the typed model of its `type`.

    Raises EventError(MALFORMED) for non-JSON / not a CloudEvent, UNKNOWN_TYPE for a type not
    in `allowed` (default: every known type), SCHEMA_VIOLATION when the data does not fit.
    """
    from pydantic import ValidationError

    try:
        if isinstance(raw, dict):
            env = _DICT_EVENT.model_validate(raw)
        else:
            env = _DICT_EVENT.model_validate_json(raw)
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
    return _ANY_EVENT.model_construct(_fields_set=env.model_fields_set, **{**dict(env), "data": data})


def parse_event_as(raw: bytes | str, model: type[EventData]) -> CloudEvent[Any] | None:
    """Fast path of `parse_event` for a record expected to be of `model`'s type(s): envelope and
    data validated in one pydantic-core pass over the JSON (no intermediate dict, no second
    validation). None when it does not validate as such an event: the caller then classifies the
    record with `parse_event`, which says why. It accepts a subset of what `parse_event` accepts
    (the same models, validated from JSON rather than from a dict)."""
    typed = _TYPED.get(model)
    if typed is None:
        typed = _TYPED[model] = (CloudEvent[model], frozenset(model.event_types()))  # type: ignore[valid-type]
    envelope, types = typed
    try:
        event = envelope.model_validate_json(raw)
    except ValidationError:
        return None
    return event if event.type in types else None


_TYPED: dict[type[EventData], tuple[type[CloudEvent[Any]], frozenset[str]]] = {}


def _first_loc(e: Any) -> tuple[Any, ...]:
    errs = e.errors()
    return tuple(errs[0]["loc"]) if errs else ()


def _summary(e: Any) -> str:
    parts = []
    for err in e.errors()[:5]:
        loc = ".".join(str(p) for p in err["loc"]) or "(root)"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


# ---------------------------------------------------------------- binary content mode

STRUCTURED_MEDIA_TYPE = "application/cloudevents"  # a content type with this prefix: structured mode
_JSON_MEDIA_TYPE = re.compile(r"^(application|text)/([a-z0-9.+-]+\+)?json$")
_ATTRIBUTE_NAME = re.compile(r"[a-z0-9]{1,20}")  # CloudEvents 1.0: lower-case letters and digits
_NOT_ATTRIBUTES = frozenset({"data", "data_base64", "datacontenttype"})  # never from a ce_ header


def is_json_media_type(content_type: str) -> bool:
    """`application/json`, `text/json`, or any `+json` type; parameters (`; charset=utf-8`) aside."""
    return bool(_JSON_MEDIA_TYPE.match(content_type.split(";", 1)[0].strip().lower()))


def binary_attributes(headers: Iterable[tuple[str, bytes | None]], prefix: str, *,
                      percent_encoded: bool = False) -> tuple[dict[str, str], str | None]:
    """The CloudEvents attributes of a binary-mode message's headers (lower-case names): each
    `<prefix><name>` header is the attribute <name> as UTF-8 text (percent-decoded over HTTP), and
    `content-type` the data's content type; other headers (tracing, ...) are not attributes. The
    one reading of both bindings (prefix `ce_` on Kafka, `ce-` over HTTP). Raises EventError
    (MALFORMED) for a header that is not UTF-8 or comes twice."""
    attributes: dict[str, str] = {}
    content_type: str | None = None
    for name, raw in headers:
        if name != "content-type" and not name.startswith(prefix):
            continue
        try:
            text = (raw or b"").decode("utf-8")
            if percent_encoded:
                text = unquote(text, errors="strict")
        except UnicodeDecodeError:
            raise EventError("MALFORMED", f"binary mode: header {name!r} is not UTF-8") from None
        if name == "content-type":
            if content_type is not None:
                raise EventError("MALFORMED", f"binary mode: header {name!r} appears twice")
            content_type = text
        elif (attribute := name[len(prefix):]) in attributes:
            raise EventError("MALFORMED", f"binary mode: header {name!r} appears twice")
        else:
            attributes[attribute] = text
    return attributes, content_type


def from_binary(attributes: dict[str, str], content_type: str | None, data: bytes | None) -> dict[str, Any]:
    """The structured-mode document of a binary-mode message (CloudEvents Kafka and HTTP protocol
    bindings): `attributes` read from its `ce_`/`ce-` headers (names without the prefix, values as
    text), `datacontenttype` from its content type, `data` its value or body parsed as JSON. The
    document is then validated like any structured event (`parse_event`). No content type means
    JSON (the one data format of this system's events); another content type, or data that is not
    UTF-8 JSON, raises EventError(MALFORMED)."""
    unnamed = sorted(a for a in attributes if not _ATTRIBUTE_NAME.fullmatch(a))
    if unnamed:
        raise EventError("MALFORMED", f"binary mode: {unnamed[0][:80]!r} is not a CloudEvents attribute name")
    misplaced = sorted(_NOT_ATTRIBUTES & attributes.keys())
    if misplaced:
        raise EventError("MALFORMED", f"binary mode: {misplaced[0]!r} cannot be a ce_ header")
    if content_type is not None and not is_json_media_type(content_type):
        raise EventError("MALFORMED", f"binary mode: data content type {content_type[:100]!r} is not JSON")
    try:
        doc = json.loads((data or b"").decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise EventError("MALFORMED", f"binary mode: the data is not UTF-8 JSON: {str(e)[:200]}") from None
    out: dict[str, Any] = dict(attributes)
    if content_type is not None:
        out["datacontenttype"] = content_type
    out["data"] = doc
    return out


def new_event(
    subject: str,
    data: EventData,
    source: str,
    *,
    type: str | None = None,
    id: str | None = None,
    time: datetime | None = None,
) -> CloudEvent[Any]:
    """An outgoing event; its type is the data model's `TYPE` (name it only for a shared model)."""
    types = data.event_types()
    event_type = type or data.TYPE
    if not event_type:
        raise ValueError(f"{data.__class__.__name__} is shared by {sorted(types)}: name the type")
    if event_type not in types:
        raise KeyError(f"{event_type!r} is not an event type of {data.__class__.__name__}")
    event_id, at = id or new_id(), time or datetime.now(timezone.utc)
    # `data` is a validated model; the envelope's own rules, checked here without a validation
    # pass (the hot path builds one event per use): the same rules as the CloudEvent model's.
    if not (_ORG_ID.fullmatch(subject) and 1 <= len(event_id) <= MAX_ID and _NO_CONTROL.fullmatch(event_id)
            and 1 <= len(source) <= 256 and _NO_CONTROL.fullmatch(source)
            and at.tzinfo is not None and at.utcoffset() is not None and at >= MIN_TIME):
        return _ANY_EVENT(specversion=SPECVERSION, id=event_id, source=source, type=event_type, subject=subject,
                          time=at, data=data)  # raises the validation error
    return trusted(_ANY_EVENT, specversion=SPECVERSION, id=event_id, source=source, type=event_type,
                   subject=subject, time=at, datacontenttype="application/json", data=data)


def new_id() -> str:
    """A random (version 4) UUID as text, like `str(uuid.uuid4())` at a fifth of its cost (one
    per outgoing event on the hot paths): the random bytes of 256 ids are read from the OS at once
    (a `getrandom` system call per id cost entitlement 4-12% of its time under load, issue 13),
    each thread its own (FastAPI's worker threads draw ids too), and a forked child its own."""
    r = _random
    at = r.at
    if at >= len(r.hex):
        r.hex, at = os.urandom(16 * 256).hex(), 0
    r.at = at + 32
    h = r.hex[at:at + 32]
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:]}"


class _RandomHex(threading.local):
    """A thread's random bytes for ids (hex), and how far they are used."""

    hex = ""
    at = 0


_random = _RandomHex()


def _fresh_random() -> None:
    global _random
    _random = _RandomHex()


os.register_at_fork(after_in_child=_fresh_random)


_VARIANT = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}  # RFC 4122 variant bits
_ORG_ID, _NO_CONTROL = re.compile(ORG_ID_PATTERN), re.compile(NO_CONTROL)
_M = TypeVar("_M", bound=BaseModel)


def trusted(cls: type[_M], **values: Any) -> _M:
    """An instance of `cls` from values that are already valid, with no validation (what
    `model_construct` does, at a fifth of its cost): every field must be given (`extra="allow"`
    models get no extras). For the hot paths, which build events from validated input."""
    obj = cls.__new__(cls)
    _setattr(obj, "__dict__", values)
    _setattr(obj, "__pydantic_fields_set__", set(values))
    extra = _ALLOWS_EXTRA.get(cls)
    if extra is None:
        extra = _ALLOWS_EXTRA[cls] = cls.model_config.get("extra") == "allow"
    _setattr(obj, "__pydantic_extra__", {} if extra else None)
    _setattr(obj, "__pydantic_private__", None)
    return obj


_setattr = object.__setattr__
_ALLOWS_EXTRA: dict[type[BaseModel], bool] = {}


class Encoded(NamedTuple):
    """An outgoing event serialised straight from plain values, no model built: what the hot
    paths emit, one per use (`encoded`). It has what the outbox and entitlement's ledger read of an
    event (id, type, subject, time, the plain `data`) and its structured-mode bytes. A named tuple:
    a quarter of a frozen dataclass's construction (0.4 against 1.5 µs, one per use)."""

    id: str
    type: str
    subject: str
    time: datetime
    data: dict[str, Any]
    payload: bytes


Outgoing = CloudEvent[Any] | Encoded  # what a consumer's policy returns and the outbox takes


def encoded(model: type[EventData], subject: str, data: dict[str, Any], source: str, *,
            id: str | None = None, time: datetime | None = None) -> Encoded:
    """The event of `model`'s type with `data`, serialised by pydantic's serialiser from plain
    values: the same bytes as `encode(new_event(subject, model(**data), source, ...))` at a third
    of its cost (tests/unit/test_encoded.py proves the equality for the models the hot paths use).
    The caller gives every field of `model`, in its order, from already validated values: no
    validation here (as with `trusted`); a key list that is not the model's fields raises TypeError,
    so a field added to the model cannot silently go missing from the events."""
    fields = _FIELDS.get(model)
    if fields is None:
        if not model.TYPE:
            raise TypeError(f"{model.__name__} is shared by several types: build it with new_event")
        fields = _FIELDS[model] = tuple(model.model_fields)
    if tuple(data) != fields:
        raise TypeError(f"{model.__name__} has fields {fields}; given {tuple(data)}")
    event_id, at = id or new_id(), time or datetime.now(timezone.utc)
    payload = to_json({"specversion": SPECVERSION, "id": event_id, "source": source, "type": model.TYPE,
                       "subject": subject, "time": at, "datacontenttype": "application/json", "data": data})
    return Encoded(event_id, model.TYPE, subject, at, data, payload)


_FIELDS: dict[type[EventData], tuple[str, ...]] = {}


def encode(event: Outgoing) -> bytes:
    """Structured-mode JSON bytes of an event (data serialized by its own model)."""
    if isinstance(event, Encoded):
        return event.payload
    return event.model_dump_json(exclude_none=False).encode()
