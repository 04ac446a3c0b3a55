"""Metering rules, pure Python: classify one usage message as an accepted use or a rejection.

`validate(raw, now)` applies every rule that needs no state (MALFORMED, UNKNOWN_TYPE,
INVALID_QUANTITY, TIME_IN_FUTURE); `check_org(result, known)` adds UNKNOWN_ORG against the set of
organisations whose agreement was recorded. Kafka consumption and HTTP ingestion share both.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal, NamedTuple

from pydantic import Field, StrictInt, ValidationError

from contracts.events import (
    ORG_ID_PATTERN,
    USAGE_TYPES,
    CloudEvent,
    DeductionRequestedData,
    Encoded,
    EventError,
    UsageData,
    encoded,
    parse_event,
)
from contracts.limits import MAX_USAGE_RECORD_BYTES, MIN_TIME

FUTURE_TOLERANCE = timedelta(minutes=5)
MAX_HTTP_EVENTS = 1000
MIN_QUANTITY, MAX_QUANTITY = 1, 10_000
ALLOWED_TYPES = frozenset(USAGE_TYPES)

Reason = Literal["MALFORMED", "UNKNOWN_ORG", "UNKNOWN_TYPE", "INVALID_QUANTITY", "TIME_IN_FUTURE", "UNPROCESSABLE"]
Granularity = Literal["hour", "day", "month"]

_ORG = re.compile(ORG_ID_PATTERN)


class _StrictUsageData(UsageData):
    """UsageData whose quantity must be a JSON integer (the lax model also takes "3" and true)."""

    quantity: Annotated[StrictInt, Field(ge=MIN_QUANTITY, le=MAX_QUANTITY)] = 1


_AnyEvent = CloudEvent[Any]
_FastUsageEvent = CloudEvent[_StrictUsageData]


class Usage(NamedTuple):
    """A valid use: the parsed CloudEvent and its typed data. A named tuple: built for each use
    more than once on the hot path, at a quarter of a frozen dataclass's cost (issue 13)."""

    event: CloudEvent[Any]
    data: UsageData
    resource: str

    @property
    def id(self) -> str:
        return self.event.id

    @property
    def org_id(self) -> str:
        return self.event.subject

    @property
    def occurred_at(self) -> datetime:
        return self.event.time

    @property
    def quantity(self) -> int:
        return self.data.quantity

    def normalized(self) -> CloudEvent[Any]:
        """The event as it is forwarded: data with its defaults filled, extensions kept."""
        return _AnyEvent.model_construct(**{**dict(self.event), "data": self.data})

    def deduction_event(self, source: str, now: datetime) -> Encoded:
        """`deduction_requested`: CloudEvent id = data.usage_id = this usage id, subject = the org.
        Serialised from the already validated usage (`encoded`: no model built, one per use)."""
        d = self.data
        return encoded(DeductionRequestedData, self.org_id, {
            "usage_id": self.id, "org_id": self.org_id, "resource": self.resource, "quantity": d.quantity,
            "occurred_at": self.occurred_at, "received_at": now, "channel": d.channel,
            "inspection_id": d.inspection_id, "site_id": d.site_id, "attributes": d.attributes,
        }, source, id=self.id, time=now)


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a message was refused, and what could be read from it (for routing and reports)."""

    reason: Reason
    detail: str
    event_id: str | None = None
    org_id: str | None = None  # a well-formed subject, when there is one
    resource: str | None = None  # when the type is a usage type
    occurred_at: datetime | None = None
    quantity: int | None = None  # the reported quantity, when it is a valid one

    def bucket_time(self, received_at: datetime) -> datetime:
        """The hour a rejection is counted in: when it occurred, else (future/unknown) when received."""
        if self.occurred_at is None or self.reason == "TIME_IN_FUTURE":
            return received_at
        return self.occurred_at

    @property
    def counted_quantity(self) -> int:
        """What a rejection adds to `rejected`: the reported quantity when valid, else one use."""
        return self.quantity if self.quantity is not None else 1


Result = Usage | Rejection


def decode(raw: bytes | str | dict[str, Any] | Any) -> Any:
    """JSON-decode a Kafka value (bytes/str); anything already decoded is returned as is."""
    if isinstance(raw, (bytes, bytearray)):
        # json.loads would skip a UTF-8 BOM; HTTP refuses one, so Kafka does too (one rule, SPEC 7.1)
        return json.loads(raw.decode("utf-8"))
    if isinstance(raw, str):
        return json.loads(raw)
    return raw


def validate(raw: bytes | str | dict[str, Any] | Any, now: datetime) -> Result:
    """Every stateless rule, in order: size, JSON, CloudEvent envelope, usage type, data, time."""
    if isinstance(raw, (bytes, bytearray, str)):
        if len(raw) > MAX_USAGE_RECORD_BYTES:
            return Rejection("MALFORMED", f"a usage record of {len(raw)} bytes is over {MAX_USAGE_RECORD_BYTES}")
        # Fast path (one pass in pydantic-core) for the common, valid case. It accepts a subset of
        # what the full path below accepts; anything it refuses is classified by the full path.
        try:
            fast = _FastUsageEvent.model_validate_json(raw)
        except ValidationError:
            pass
        else:
            if fast.type in USAGE_TYPES and fast.time <= _latest(now, fast.time.tzinfo):
                return Usage(fast, fast.data, USAGE_TYPES[fast.type])
    return _classify(raw, now)


_LATEST: tuple[Any, Any, datetime] | None = None  # (now, tzinfo, the latest time allowed at now in it)


def _latest(now: datetime, tz: Any) -> datetime:
    """`now + FUTURE_TOLERANCE` in the time zone object `tz`, kept for the last (now, tz) asked: a
    batch validates all its uses at one `now`, and pydantic parses every UTC time with one tzinfo
    object. Two aware datetimes with the same tzinfo object compare as they are; with different
    ones (pydantic's against `timezone.utc`), through both offsets, ten times slower (issue 13).
    One tuple, read and replaced whole: HTTP ingestion's threads may ask at the same time."""
    global _LATEST
    c = _LATEST
    if c is None or c[0] is not now or c[1] is not tz:
        c = _LATEST = (now, tz, (now + FUTURE_TOLERANCE).astimezone(tz))
    return c[2]


def _classify(raw: bytes | str | dict[str, Any] | Any, now: datetime) -> Result:
    try:
        doc = decode(raw)
    except (ValueError, UnicodeDecodeError) as e:
        return Rejection("MALFORMED", f"not JSON: {e}")
    except RecursionError:
        return Rejection("MALFORMED", "not JSON that can be read: nested too deeply")
    if not isinstance(doc, dict):
        return Rejection("MALFORMED", f"not a CloudEvent: a JSON {type(doc).__name__}, not an object")
    hints = _hints(doc)
    try:
        event = parse_event(doc, allowed=set(ALLOWED_TYPES))
    except EventError as e:
        reason: Reason = "MALFORMED"
        if e.reason == "UNKNOWN_TYPE":
            reason = "UNKNOWN_TYPE"
        elif e.reason == "SCHEMA_VIOLATION" and tuple(e.loc[:2]) == ("data", "quantity"):
            reason = "INVALID_QUANTITY"
        return Rejection(reason, e.detail, **hints)
    quantity_error = _strict_quantity_error(doc["data"])
    if quantity_error:
        return Rejection("INVALID_QUANTITY", quantity_error, **hints)
    if event.time > now + FUTURE_TOLERANCE:
        return Rejection(
            "TIME_IN_FUTURE",
            f"time {event.time.isoformat()} is more than {FUTURE_TOLERANCE} ahead of {now.isoformat()}",
            **hints,
        )
    return Usage(event, event.data, USAGE_TYPES[event.type])


def check_org(result: Result, known_orgs: set[str] | frozenset[str]) -> Result:
    """UNKNOWN_ORG for a valid use of an organisation with no recorded agreement."""
    if isinstance(result, Usage) and result.org_id not in known_orgs:
        return Rejection(
            "UNKNOWN_ORG",
            f"no agreement recorded for organisation {result.org_id!r}",
            event_id=result.id, org_id=result.org_id, resource=result.resource,
            occurred_at=result.occurred_at, quantity=result.quantity,
        )
    return result


def orgs_of(results: list[Result]) -> set[str]:
    return {r.org_id for r in results if r.org_id is not None}


def rejection_subject(rejection: Rejection, record_key: bytes | str | None) -> str:
    """Subject/key of a rejection record: the org when readable, else the record key, else 'unknown'."""
    if rejection.org_id:
        return rejection.org_id
    key = record_key.decode("utf-8", errors="replace") if isinstance(record_key, bytes) else record_key
    if key and _ORG.match(key):
        return key
    return "unknown"


def rejection_id(topic: str, partition: int, offset: int) -> str:
    """Deterministic per consumed record: a redelivered record yields the same rejection id."""
    return f"rejected:{topic}:{partition}:{offset}"


def _in_range(at: datetime) -> bool:
    """A time the hourly report can count in: from 2000 on and one that exists in UTC."""
    try:
        return at.astimezone(MIN_TIME.tzinfo) >= MIN_TIME
    except OverflowError:
        return False


def _strict_quantity_error(data: Any) -> str | None:
    """A quantity must be a JSON integer: booleans and strings that the lax model coerces are refused."""
    if not isinstance(data, dict) or "quantity" not in data:
        return None
    q = data["quantity"]
    if isinstance(q, bool) or not isinstance(q, (int, float)):
        return f"quantity: must be an integer {MIN_QUANTITY}..{MAX_QUANTITY}, got {json.dumps(q)[:40]}"
    return None


def _hints(doc: dict[str, Any]) -> dict[str, Any]:
    """What can be read from a document even when it fails validation."""
    out: dict[str, Any] = {}
    ev_id = doc.get("id")
    if isinstance(ev_id, str) and 1 <= len(ev_id) <= 128:
        out["event_id"] = ev_id
    subject = doc.get("subject")
    if isinstance(subject, str) and _ORG.match(subject):
        out["org_id"] = subject
    ev_type = doc.get("type")
    if isinstance(ev_type, str) and ev_type in USAGE_TYPES:
        out["resource"] = USAGE_TYPES[ev_type]
    t = doc.get("time")
    if isinstance(t, str):
        try:
            at = datetime.fromisoformat(t)
        except ValueError:
            at = None
        if at is not None and at.tzinfo is not None and _in_range(at):
            out["occurred_at"] = at
    data = doc.get("data")
    if isinstance(data, dict):
        q = data.get("quantity", 1)
        if isinstance(q, int) and not isinstance(q, bool) and MIN_QUANTITY <= q <= MAX_QUANTITY:
            out["quantity"] = q
    return out
