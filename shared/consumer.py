"""One consumer shape for every Kafka consumer of every service.

A service declares a `Subscription`: its topic, the event data models it processes (`accepts`)
and those it ignores (`ignores`: valid, counted, skipped; any other type is bad input), the
inbox stream and key, its `policy`, and its rejection path (`rejects`). `Consumer` does the rest,
the same way for everyone:

    raw records --decode once--> Accepted(event) | Bad(reason) | ignored
                (binary content mode, `ce_*` headers: as its structured twin, `binary_event`)
                --screen (optional, before the transaction: may turn Accepted into Bad)-->
    one transaction:
        lock (optional) -> inbox claim of the accepted events' keys: first occurrences only,
        also within the batch -> policy(conn, events, now) returns events -> outbox;
        bad records -> inbox claim of their position -> rejection path returns events -> outbox
    commit; then the transport (shared/kafka.batch_consumer) commits the offsets.

With claim="overlap" (entitlement's deductions, metering's usage) the policy gets the batch's first
occurrences and a `Claim`: it sends the inbox claim, computes while PostgreSQL inserts the keys, and
reads which events are new before it writes anything; its effects are those of the new events only.

A policy returns events and never writes the outbox itself; it may change its own state through
its store (inside the transaction it is given). Bad input never raises: it leaves through the
rejection path, once per record even when its batch is redelivered.

Whatever the topic, a record that escapes a control character in any string or nests deeper than
32 is MALFORMED (`hostile_text`, SPEC 7.1), and every letter carries its record the one way
`original_fields` says (cut to 4 KiB when refused for its content, exact bytes when not UTF-8; it
always serialises, so a letter can never be what blocks a partition).

Nothing blocks (SPEC 7.2). When a batch fails for a reason retrying will not cure
(`unprocessable`: a data or encoding error from PostgreSQL, an overflow, a serialization error),
the batch is bisected and each half processed on its own, down to the failing record; that record
is tried alone at most `ALONE_ATTEMPTS` times and then goes, with reason `UNPROCESSABLE`, to the
rejection path, while every other record of the batch takes effect. Any other failure (database or
broker unreachable) propagates: the transport rewinds the batch, after a capped exponential
back-off, and nothing is dead-lettered.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import math
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, Protocol, cast

import asyncpg
from aiokafka import ConsumerRecord
from prometheus_client import Counter

from contracts.events import (
    ORG_ID_PATTERN,
    STRUCTURED_MEDIA_TYPE,
    CloudEvent,
    DeadLetterData,
    EventData,
    EventError,
    Outgoing,
    RecordHeader,
    binary_attributes,
    dead_letter_type,
    from_binary,
    parse_event,
    parse_event_as,
    types_of,
)
from contracts.limits import MAX_JSON_DEPTH, MAX_USAGE_RECORD_BYTES
from shared import inbox, outbox
from shared.http_limits import json_depth

if TYPE_CHECKING:
    from shared.service import Runtime

log = logging.getLogger(__name__)

RECORDS = Counter(
    "aimis_consumer_records_total", "Consumed records by what became of them",
    ["service", "topic", "outcome"],  # processed | duplicate | ignored | rejected
)
DEAD_LETTERS = Counter(
    "aimis_dead_letters_total", "Records sent to a service's dead-letter topic", ["service", "topic", "reason"]
)

ISOLATED = Counter(
    "aimis_consumer_isolated_total", "Batches that failed for good and were bisected to isolate a record",
    ["service", "topic"],
)

_ORG = re.compile(ORG_ID_PATTERN)
ALONE_ATTEMPTS = 3  # a record that fails for good alone is tried this often, then dead-lettered
BACKOFF_BASE_S, BACKOFF_CAP_S = 0.5, 30.0
# SQLSTATE classes retrying cannot cure: data exception, integrity violation, program limit exceeded
_PERMANENT_SQLSTATE = ("22", "23", "54")


def unprocessable(e: BaseException) -> bool:
    """True when processing failed for a reason that retrying will not cure (SPEC 7.2). Connection
    loss, timeouts, serialization failures and deadlocks (SQLSTATE 40) are transient."""
    if isinstance(e, asyncpg.PostgresError):
        return str(getattr(e, "sqlstate", "") or "")[:2] in _PERMANENT_SQLSTATE
    # asyncpg's client-side DataError (an argument it cannot encode) is a ValueError
    return isinstance(e, (ValueError, ArithmeticError, RecursionError))


# ---------------------------------------------------------------- what a record decodes to


class Accepted(NamedTuple):  # one per record: a named tuple builds at a quarter of a dataclass's cost
    record: ConsumerRecord
    event: CloudEvent[Any]


@dataclass(frozen=True, slots=True)
class Bad:
    """A record this consumer cannot process, and why. `info`: what a service's own decoder could
    still read from it (metering keeps its Rejection there)."""

    record: ConsumerRecord
    reason: str
    detail: str
    info: Any = None

    @property
    def position(self) -> str:
        return f"{self.record.topic}:{self.record.partition}:{self.record.offset}"

    def subject(self) -> str:
        """The org to key a rejection by: the record key when it is a valid org id, else 'unknown'."""
        key = (self.record.key or b"").decode("utf-8", errors="replace")
        return key if _ORG.match(key) else "unknown"


Decoded = Accepted | Bad | None  # None: a valid event of a type this consumer ignores

Policy = Callable[[asyncpg.Connection, list[CloudEvent[Any]], datetime], Awaitable[Sequence[Outgoing]]]
Lock = Callable[[asyncpg.Connection, list[CloudEvent[Any]]], Awaitable[None]]


class Rejects(Protocol):
    """A rejection path: turns fresh bad records into events (a dead letter, a rejected usage)."""

    stream: str  # inbox stream of the rejected records' keys

    def key(self, bad: Bad) -> str: ...

    async def __call__(self, conn: asyncpg.Connection, bad: list[Bad], now: datetime) -> Sequence[Outgoing]: ...

    def committed(self, bad: list[Bad]) -> None:
        """Count and log what was rejected, once the transaction committed."""


@dataclass
class Tally:
    """What one batch came to (counted after its commit)."""

    processed: int = 0
    duplicate: int = 0
    ignored: int = 0
    rejected: int = 0


def event_id(event: CloudEvent[Any]) -> str:
    return event.id


def subject_and_id(event: CloudEvent[Any]) -> str:
    """Inbox key per organisation (SPEC 7.3): two orgs may use the same event id. An org id has no
    ':' so the key is unambiguous."""
    return f"{event.subject}:{event.id}"


@dataclass(frozen=True)
class Subscription:
    """What a service declares about one consumer."""

    topic: str
    accepts: tuple[type[EventData], ...]
    stream: str  # inbox stream of the accepted events' keys
    policy: Policy
    rejects: Rejects
    ignores: tuple[type[EventData], ...] = ()
    key: Callable[[CloudEvent[Any]], str] = event_id
    # "first": claim before the policy, pass first occurrences only. "on_effect": pass each new
    # first occurrence alone and claim it only when the policy emitted something (a command that
    # arrives early must not burn its id). "overlap": pass the batch's first occurrences with a
    # `Claim` the policy sends itself and reads before it writes (it computes meanwhile); its
    # effects are those of the new events only.
    claim: Literal["first", "on_effect", "overlap"] = "first"
    lock: Lock | None = None  # inside the transaction, before the inbox claim
    check: Callable[[CloudEvent[Any]], tuple[str, str] | None] | None = None  # (reason, detail) when bad
    decode: Callable[[ConsumerRecord, datetime], Decoded] | None = None  # replaces the default decoder
    screen: Callable[[list[Decoded]], Awaitable[list[Decoded]]] | None = None  # before the transaction
    after_commit: Callable[[Tally], None] | None = None
    _allowed: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_allowed", types_of(*self.accepts, *self.ignores))

    def decode_record(self, record: ConsumerRecord, now: datetime) -> Decoded:
        if record.headers and binary_mode(record.headers):
            try:  # decoded as its structured-mode twin; the outcome keeps the record as consumed
                twin = replace(record, value=binary_event(record.headers, record.value))
            except EventError as e:
                return Bad(record, e.reason, e.detail)
            decoded = self._checked(twin, now)
            if decoded is None:
                return None
            return decoded._replace(record=record) if isinstance(decoded, Accepted) else replace(decoded, record=record)
        return self._checked(record, now)

    def _checked(self, record: ConsumerRecord, now: datetime) -> Decoded:
        """The record decoded; a record the decoder took that breaks SPEC 7.1 anyway (nesting,
        a control character in a field the models do not type) is MALFORMED."""
        decoded = self._decode(record, now)
        if not isinstance(decoded, Bad) and (problem := hostile_text(record.value)) is not None:
            return Bad(record, "MALFORMED", problem)
        return decoded

    def _decode(self, record: ConsumerRecord, now: datetime) -> Decoded:
        if self.decode is not None:
            return self.decode(record, now)
        if len(self.accepts) == 1 and record.value:  # the hot topics: one model, one pass
            fast = parse_event_as(record.value, self.accepts[0])
            if fast is not None:
                problem = self.check(fast) if self.check is not None else None
                return Bad(record, *problem) if problem else Accepted(record, fast)
        try:
            event = parse_event(record.value or b"", allowed=set(self._allowed))
        except EventError as e:
            return Bad(record, e.reason, e.detail)
        except Exception as e:  # noqa: BLE001 - bad input never stops the consumer (e.g. RecursionError)
            return Bad(record, "MALFORMED", repr(e)[:2000])
        if not isinstance(event.data, self.accepts):
            return None
        problem = self.check(event) if self.check is not None else None
        return Bad(record, *problem) if problem else Accepted(record, event)


# ---------------------------------------------------------------- binary content mode (Kafka binding)

CE_HEADER = "ce_"
Headers = Sequence[tuple[str, bytes | None]]


def binary_mode(headers: Headers) -> bool:
    """A record in binary content mode (CloudEvents Kafka protocol binding 3.2): it has a
    `ce_specversion` header, and its content type is not a structured CloudEvents format."""
    for name, _ in headers:
        if name == "ce_specversion":
            break
    else:
        return False  # the usual case: structured mode
    binary = False
    for name, value in headers:
        if name == "ce_specversion":
            binary = True
        elif name == "content-type" and (value or b"").lower().startswith(STRUCTURED_MEDIA_TYPE.encode()):
            return False
    return binary


def binary_event(headers: Headers, value: bytes | None) -> bytes:
    """The structured-mode JSON of a binary-mode record: each `ce_<name>` header is the attribute
    <name> (UTF-8 text), `content-type` the `datacontenttype`, the value the data (contracts.events.
    from_binary). Raises EventError(MALFORMED) for a header that is not UTF-8 or comes twice, headers
    and value together over MAX_USAGE_RECORD_BYTES, or data that is not JSON."""
    size = len(value or b"") + sum(len(n) + len(v or b"") for n, v in headers)
    if size > MAX_USAGE_RECORD_BYTES:
        raise EventError("MALFORMED",
                         f"binary mode: headers and value are {size} bytes; at most {MAX_USAGE_RECORD_BYTES}")
    attributes, content_type = binary_attributes(headers, CE_HEADER)
    return json.dumps(from_binary(attributes, content_type, value)).encode()


MAX_KEPT_HEADERS, MAX_KEPT_HEADER = 64, 4096


def kept_headers(record: ConsumerRecord) -> list[RecordHeader] | None:
    """The record's headers for its rejection (None when it had none): text when UTF-8, else base64."""
    if not record.headers:
        return None
    out = []
    for name, raw in record.headers[:MAX_KEPT_HEADERS]:
        try:
            out.append(RecordHeader(key=name, value=(raw or b"").decode("utf-8")[:MAX_KEPT_HEADER]))
        except UnicodeDecodeError:
            text = base64.b64encode(raw or b"").decode()
            out.append(RecordHeader(key=name, value=text[:MAX_KEPT_HEADER], base64=True))
    return out


class Consumer:
    """The batch handler of one subscription (the transport calls it with raw records)."""

    def __init__(self, rt: Runtime, sub: Subscription):
        self.rt, self.sub = rt, sub
        self.failures = 0  # consecutive transient failures (for the back-off)

    async def __call__(self, records: list[ConsumerRecord]) -> None:
        now = self.rt.clock.now()
        try:
            decoded = [self.sub.decode_record(r, now) for r in records]
            if self.sub.screen is not None:
                decoded = await self.sub.screen(decoded)
            tally = Tally(ignored=sum(1 for d in decoded if d is None))
            fresh_bad = await self.isolating(decoded, now, tally)
        except Exception:
            self.failures += 1
            await asyncio.sleep(self.backoff_s())
            raise  # the transport rewinds the batch
        self.failures = 0
        self._count(tally, fresh_bad)

    def backoff_s(self) -> float:
        return min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2.0 ** (self.failures - 1))

    async def isolating(self, decoded: Sequence[Decoded], now: datetime, tally: Tally) -> list[Bad]:
        """`process`, isolating a record that fails for good: bisect, then try it alone, then
        reject it as UNPROCESSABLE. Transient failures propagate."""
        try:
            return await self.process(decoded, now, tally)
        except Exception as e:
            if not unprocessable(e):
                raise
            items = [d for d in decoded if d is not None]
            if len(items) > 1:
                ISOLATED.labels(self.rt.name, self.sub.topic).inc()
                mid = len(items) // 2
                return await self.isolating(items[:mid], now, tally) + await self.isolating(items[mid:], now, tally)
            if not items:
                raise
            return await self._alone(items[0], e, now, tally)

    async def _alone(self, item: Accepted | Bad, error: Exception, now: datetime, tally: Tally) -> list[Bad]:
        for _ in range(ALONE_ATTEMPTS - 1):  # the failure that led here was the first attempt alone
            try:
                return await self.process([item], now, tally)
            except Exception as e:
                if not unprocessable(e):
                    raise
                error = e
        log.error("record %s:%s:%s fails for good (%r); rejected as UNPROCESSABLE", item.record.topic,
                  item.record.partition, item.record.offset, error, extra={"topic": item.record.topic})
        return await self.process([Bad(item.record, "UNPROCESSABLE", repr(error)[:2000])], now, tally)

    async def process(self, decoded: Sequence[Decoded], now: datetime, tally: Tally) -> list[Bad]:
        """One transaction: claim, policy, rejection path, outbox. Returns the bad records
        rejected now (not already by an earlier delivery)."""
        sub = self.sub
        events = [d.event for d in decoded if isinstance(d, Accepted)]
        bad = [d for d in decoded if isinstance(d, Bad)]
        if not events and not bad:
            return []
        async with self.rt.pool.acquire() as conn, conn.transaction():
            if sub.lock is not None and events:
                await sub.lock(conn, events)
            out: list[Outgoing] = []
            if sub.claim == "first":
                todo = await first_occurrences(conn, sub.stream, events, sub.key)
                if todo:
                    out += await sub.policy(conn, todo, now)
            elif sub.claim == "overlap":
                claim = Claim(conn, sub.stream, *_unique_keyed(events, sub.key))
                try:
                    if claim.events:
                        out += await cast(ClaimingPolicy, sub.policy)(conn, claim.events, now, claim)
                finally:
                    await claim.settle()
                todo = claim.taken()
            else:
                todo = []
                for e in _unique(events, sub.key):
                    emitted = await sub.policy(conn, [e], now)
                    if not emitted:
                        continue
                    if not await inbox.claim_one(conn, sub.stream, sub.key(e)):
                        raise RuntimeError(f"{e.type} {e.id} took effect twice")  # state checks prevent it
                    todo.append(e)
                    out += emitted
            fresh = await inbox.claim(conn, sub.rejects.stream, [sub.rejects.key(b) for b in bad])
            fresh_bad = [b for b in bad if _take(fresh, sub.rejects.key(b))]
            if fresh_bad:
                out += await sub.rejects(conn, fresh_bad, now)
            appended = await outbox.add(conn, out, offering=self.rt.offering)
        self.rt.offer(appended)  # committed: the relay may publish the rows as they are
        tally.processed += len(todo)
        tally.duplicate += len(events) - len(todo)
        tally.rejected += len(fresh_bad)
        return fresh_bad

    def _count(self, tally: Tally, fresh_bad: list[Bad]) -> None:
        labels = (self.rt.name, self.sub.topic)
        for outcome in ("processed", "duplicate", "ignored", "rejected"):
            if n := getattr(tally, outcome):
                RECORDS.labels(*labels, outcome).inc(n)
        if fresh_bad:
            self.sub.rejects.committed(fresh_bad)
        if self.sub.after_commit is not None:
            self.sub.after_commit(tally)


class Claim:
    """The inbox claim of a batch's first occurrences, for a policy with claim="overlap": it sends
    the claim (`send`), computes while PostgreSQL inserts the keys, then reads which events are new
    (`new`) before it writes anything, and returns the effects of those only."""

    def __init__(self, conn: asyncpg.Connection, stream: str, events: list[CloudEvent[Any]], keys: list[str]):
        self.conn, self.stream, self.events, self._keys = conn, stream, events, keys
        self._task: asyncio.Future[set[str]] | None = None
        self._new: list[CloudEvent[Any]] | None = None

    async def send(self) -> None:
        self._task = await inbox.sent(self.conn, self.stream, self._keys)  # written before the caller computes

    async def new(self) -> list[CloudEvent[Any]]:
        if self._task is None:
            raise RuntimeError("Claim.send() first")
        keys = await self._task
        self._new = [e for e, k in zip(self.events, self._keys, strict=True) if k in keys]
        return self._new

    async def settle(self) -> None:
        """Wait for a claim still running (the policy failed before reading it): a connection runs
        one statement at a time, and the transaction must end after it."""
        if self._task is not None and not self._task.done():
            await asyncio.gather(self._task, return_exceptions=True)

    def taken(self) -> list[CloudEvent[Any]]:
        """The events claimed now. A policy that returned without reading its claim is a bug: raised
        (the batch does not commit) rather than processing events unclaimed."""
        if not self.events:
            return []
        if self._new is None:
            raise RuntimeError("a claim='overlap' policy returned without reading its claim")
        return self._new


class ClaimingPolicy(Protocol):
    def __call__(self, conn: asyncpg.Connection, events: list[CloudEvent[Any]], now: datetime,
                 claim: Claim, /) -> Awaitable[Sequence[Outgoing]]: ...


async def first_occurrences(
    conn: asyncpg.Connection, stream: str, events: list[CloudEvent[Any]], key: Callable[[CloudEvent[Any]], str]
) -> list[CloudEvent[Any]]:
    """Claim the events' keys on `stream`; return the first occurrence of each key not seen before,
    in stream order (a repeat inside the batch is a duplicate too)."""
    if not events:
        return []
    keys = [key(e) for e in events]
    new = await inbox.claim(conn, stream, keys)
    return [e for e, k in zip(events, keys, strict=True) if _take(new, k)]


def _take(keys: set[str], k: str) -> bool:
    if k in keys:
        keys.discard(k)
        return True
    return False


def _unique_keyed(events: list[CloudEvent[Any]], key: Callable[[CloudEvent[Any]], str],
                  ) -> tuple[list[CloudEvent[Any]], list[str]]:
    """The first occurrence of each key, in stream order, and their keys (each computed once)."""
    first: dict[str, CloudEvent[Any]] = {}
    for e in events:
        first.setdefault(key(e), e)
    return list(first.values()), list(first)


def _unique(events: list[CloudEvent[Any]], key: Callable[[CloudEvent[Any]], str]) -> list[CloudEvent[Any]]:
    return _unique_keyed(events, key)[0]


class DeadLetters:
    """The rejection path to a service's dead-letter topic `aimis.<service>.dlq.v1`: one
    `DeadLetterData` per bad record, keyed by the record's org when it has one; once per record
    (inbox stream `dead_letter`, key topic:partition:offset)."""

    stream = "dead_letter"

    def __init__(self, rt: Runtime, service: str | None = None):
        self.rt = rt
        self.service = service or rt.name
        self.type = dead_letter_type(self.service)

    def key(self, bad: Bad) -> str:
        return bad.position

    async def __call__(self, conn: asyncpg.Connection, bad: list[Bad], now: datetime) -> list[CloudEvent[Any]]:
        return [self.letter(b, now) for b in bad]

    def letter(self, b: Bad, now: datetime) -> CloudEvent[Any]:
        r = b.record
        data = DeadLetterData(
            reason=b.reason, detail=b.detail[:2000], topic=r.topic, partition=r.partition,
            offset=r.offset, received_at=now, headers=kept_headers(r), **original_fields(r, b.reason),
        )
        return self.rt.event(b.subject(), data, type=self.type)

    def committed(self, bad: list[Bad]) -> None:
        for b in bad:
            r = b.record
            DEAD_LETTERS.labels(self.service, r.topic, b.reason).inc()
            log.warning("dead letter from %s[%s]@%s: %s %s", r.topic, r.partition, r.offset, b.reason,
                        b.detail[:500], extra={"topic": r.topic, "reason": b.reason})


ORIGINAL_CUT = 4096  # SPEC 7.1: a rejected record's original is cut to 4 KiB


def original_fields(record: ConsumerRecord, reason: str) -> dict[str, Any]:
    """How a rejection or dead letter carries the record it is about (SPEC 7.1, 7.2):

    - `original`: the record's JSON when it is JSON that re-encodes as UTF-8, else its text;
    - a record over 4 KiB rejected for its content (any reason but UNPROCESSABLE) is cut to its
      first 4 KiB as text, with `original_truncated` and the whole record's `original_sha256`, so
      that no rejection can outgrow what Kafka accepts;
    - `original_base64`: the exact bytes when the text is not them (the record is not UTF-8), so
      `aimis dlq replay` re-publishes what was consumed, byte for byte.

    Whatever the record, the result serialises: bad input always reaches its rejection path."""
    value = record.value or b""
    if len(value) > ORIGINAL_CUT and reason != "UNPROCESSABLE":
        return {"original": value[:ORIGINAL_CUT].decode("utf-8", errors="replace"), "original_truncated": True,
                "original_sha256": hashlib.sha256(value).hexdigest()}
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        return {"original": value.decode("utf-8", errors="replace"),
                "original_base64": base64.b64encode(value).decode("ascii")}
    if too_deep(value):
        return {"original": text}
    try:
        doc = json.loads(text)
        json.dumps(doc, ensure_ascii=False).encode("utf-8")  # lone surrogates, NaN: keep the text instead
        if _has_non_finite(doc):
            return {"original": text}
        return {"original": doc}
    except (ValueError, RecursionError, UnicodeEncodeError):
        return {"original": text}


def _has_non_finite(doc: Any) -> bool:
    """NaN and Infinity are read by json but written as null by pydantic: keep such a record as text."""
    if isinstance(doc, float):
        return not math.isfinite(doc)
    if isinstance(doc, dict):
        return any(_has_non_finite(v) for v in doc.values())
    if isinstance(doc, list):
        return any(_has_non_finite(v) for v in doc)
    return False


# A JSON string escape of a control character (U+0000-U+001F, U+007F: \u00XX, or \b \f \n \r \t),
# not itself escaped (an even number of backslashes before it), as the HTTP guard refuses them.
# Raw control characters inside strings are not JSON at all.
_CONTROL_ESCAPE = re.compile(rb"\\(?:u00[01][0-9a-fA-F]|u007[fF]|[bfnrt])")


def hostile_text(value: bytes | None) -> str | None:
    """Why a record breaks SPEC 7.1 whatever its type, before any parser sees it: nesting deeper
    than 32, or a control character in any string (PostgreSQL cannot store NUL; the limits refuse
    every control character in ids, references and attributes, and a consumer must not depend on
    which fields it happens to store). None when neither."""
    if too_deep(value):
        return f"JSON nested deeper than {MAX_JSON_DEPTH} levels"
    if value and b"\\" in value and _escapes_control(value):  # no backslash, no escape: the usual case
        return "a string with a control character (U+0000-U+001F, U+007F)"
    return None


def _escapes_control(value: bytes) -> bool:
    """A control-character escape whose backslash is not itself escaped (an even run before it)."""
    for m in _CONTROL_ESCAPE.finditer(value):
        i = m.start()
        run = 0
        while i > 0 and value[i - 1] == 0x5C:  # backslash
            run += 1
            i -= 1
        if run % 2 == 0:
            return True
    return False


def too_deep(value: bytes | None) -> bool:
    """More JSON nesting than SPEC 7.1 allows (32), counted without parsing; the bracket count first
    (C speed), the exact count only for a record with that many brackets at all."""
    if not value or value.count(b"[") + value.count(b"{") <= MAX_JSON_DEPTH:
        return False
    return json_depth(value.decode("utf-8", errors="replace")) > MAX_JSON_DEPTH
