"""Entitlement rules, pure Python (no I/O): lots, expiring-first allocation, arrears and their
offset, lot expiry, licence periods and feature state, services (SPEC 2.2-2.5, 4).

A `Book` is one organisation's state for one resource. The store loads the part of it a message
needs (the drawable lots, or the outstanding arrears), the functions here change it in memory and
count what moved; the store then writes the changed rows and adds the counters to the balance row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Final, Literal, NamedTuple, Protocol

from contracts import catalog
from contracts.skus import AI as AI
from contracts.skus import BASIC_EDITION, REGISTRY, Choice, Kind, Registry
from contracts.skus import CLOUD as CLOUD
from contracts.skus import RESOURCES as RESOURCES
from shared.clock import add_months, add_years

# What crediting does with each SKU, derived from the SKU registry (contracts/skus.py).
LOT_SKUS = REGISTRY.lot_resources()  # lot sku -> resource
LICENCE_SKUS = REGISTRY.of_kind(Kind.LICENCE)
ONE_TIME_SERVICES = REGISTRY.of_kind(Kind.SERVICE)
MAINTENANCE_SKUS = REGISTRY.of_kind(Kind.MAINTENANCE)
PERPETUAL_SKUS = REGISTRY.of_kind(Kind.PERPETUAL)
(MAINTENANCE,) = MAINTENANCE_SKUS  # the one of each today; code that compares names uses these
(AI_PERPETUAL,) = PERPETUAL_SKUS
PERPETUAL_FEATURE = str(REGISTRY[AI_PERPETUAL].licence)
BASIC = str(REGISTRY[BASIC_EDITION].licence)
OPTIONAL_FEATURES = catalog.OPTIONAL_FEATURES

INSUFFICIENT_BALANCE: Final = "INSUFFICIENT_BALANCE"
NO_OFFLINE_LICENCE: Final = "NO_OFFLINE_LICENCE"


def retention_until(occurred_at: datetime, storage_years: int | None) -> datetime | None:
    """How long a deducted inspection is stored: occurred_at + the lot's storage years."""
    return add_years(occurred_at, storage_years) if storage_years else None


# ---------------------------------------------------------------- lots and usage


@dataclass
class Lot:
    lot_id: str
    quantity: int
    remaining: int
    storage_years: int | None
    credited_at: datetime
    expires_at: datetime
    expired: bool = False
    forfeited: int = 0
    # where it came from (set when read from the store; not needed by the allocation rules)
    org_id: str = ""
    resource: str = ""
    order_id: str = ""
    sku: str = ""

    def order_key(self) -> tuple[datetime, datetime, str, int, str]:
        """Expiring first, then credited first, then the smaller lot_id `{order_id}.{line}` with
        its line compared as a number (line 2 before line 10). Computed once per lot (none of
        these fields changes once the lot exists): every use of a batch sorts the same lots."""
        key = self.__dict__.get("_order_key")
        if key is None or key[0] is not self.expires_at or key[1] is not self.credited_at:
            order, _, line = self.lot_id.rpartition(".")
            if order and line.isdigit():
                key = (self.expires_at, self.credited_at, order, int(line), "")
            else:
                key = (self.expires_at, self.credited_at, self.lot_id, -1, "")
            self.__dict__["_order_key"] = key
        return key

    def drawable(self, occurred_at: datetime, now: datetime, grace: timedelta) -> bool:
        """Valid at the use's time, and not yet forfeited (nor past the grace after expiry)."""
        return (
            not self.expired
            and self.remaining > 0
            and self.credited_at <= occurred_at < self.expires_at
            and now < self.expires_at + grace
        )

    def offsets_late(self, occurred_at: datetime, now: datetime, grace: timedelta) -> bool:
        """Credited after a use occurred, not yet forfeited (nor past the grace after expiry): in
        occurrence order its credit would have offset that use's arrears."""
        return (
            not self.expired
            and self.remaining > 0
            and occurred_at < self.credited_at
            and now < self.expires_at + grace
        )


# Use, Draw, Deducted and Rejected are named tuples: built once or more per use on the hot path, at a
# quarter of a frozen dataclass's cost (issue 13); immutable all the same.
class Use(NamedTuple):
    usage_id: str
    resource: str
    quantity: int
    occurred_at: datetime
    channel: str = "online"


class UseLike(Protocol):
    """What the rules read of a use: a `Use`, or a validated deduction request as it is (the hot
    path hands those over without copying each into a `Use`)."""

    @property
    def usage_id(self) -> str: ...
    @property
    def resource(self) -> str: ...
    @property
    def quantity(self) -> int: ...
    @property
    def occurred_at(self) -> datetime: ...
    @property
    def channel(self) -> str: ...


@dataclass
class Arrear:
    usage_id: str
    occurred_at: datetime
    outstanding: int


class Draw(NamedTuple):
    lot_id: str
    quantity: int
    retention_until: datetime | None


class Deducted(NamedTuple):
    """`allocations` are draws from lots valid at the use's time; `arrears_quantity` what none
    covered; `offsets` what of those arrears lots credited after the use occurred offset at once
    (docs/decisions/arrival-order.md)."""

    usage_id: str
    allocations: tuple[Draw, ...]
    arrears_quantity: int = 0
    offline_licence: bool = False
    offsets: tuple[Draw, ...] = ()


class Rejected(NamedTuple):
    usage_id: str
    reason: Literal["INSUFFICIENT_BALANCE", "NO_OFFLINE_LICENCE"]


Outcome = Deducted | Rejected


@dataclass(frozen=True)
class Offset:
    usage_id: str
    quantity: int
    retention_until: datetime | None


@dataclass
class Counters:
    """What moved (the store adds these to the balance row). SPEC 4 holds per org+resource:
    purchased = remaining + drawn_by_usage + arrears_offset + forfeited (drawn_from_lots is
    drawn_by_usage + arrears_offset); used = drawn_by_usage + arrears_recorded;
    arrears = arrears_recorded - arrears_offset."""

    purchased: int = 0
    drawn_by_usage: int = 0
    arrears_recorded: int = 0
    arrears_offset: int = 0
    forfeited: int = 0
    offline_counted: int = 0
    rejected: int = 0

    def any(self) -> bool:
        return any(vars(self).values())


@dataclass
class Book:
    """One org's state for one resource (or the part of it that a message needs)."""

    resource: str
    lots: dict[str, Lot] = field(default_factory=dict)
    arrears: list[Arrear] = field(default_factory=list)
    counters: Counters = field(default_factory=Counters)
    touched: set[str] = field(default_factory=set)  # lot ids whose remaining changed

    def outstanding(self) -> int:
        return sum(a.outstanding for a in self.arrears)

    def remaining(self) -> int:
        return sum(lot.remaining for lot in self.lots.values() if not lot.expired)


def allocate(lots: list[Lot], use: UseLike, now: datetime, grace: timedelta, *,
             later: bool = False) -> tuple[list[Draw], int]:
    """Plan which lots cover `use` (expiring first); returns the draws and what no lot covers.
    `later`: the lots credited after the use occurred instead (still within their grace), which
    offset its arrears at once."""
    need, at = use.quantity, use.occurred_at
    # Compared in the lots' time zone object (UTC, as read from PostgreSQL): two aware datetimes
    # with different tzinfo objects (pydantic's parsed one and `timezone.utc`) compare through both
    # offsets, twelve times slower; the retention stays computed from the use's own time.
    when = at.astimezone(timezone.utc)
    if later:
        eligible = [lot for lot in lots if lot.offsets_late(when, now, grace)]
    else:
        eligible = [lot for lot in lots if lot.drawable(when, now, grace)]
    if len(eligible) > 1:  # each lot computes its key once and keeps it
        eligible.sort(key=Lot.order_key)
    draws: list[Draw] = []
    for lot in eligible:
        if need == 0:
            break
        take = min(need, lot.remaining)
        draws.append(Draw(lot.lot_id, take, retention_until(at, lot.storage_years)))
        need -= take
    return draws, need


def licensed(licence: bool | datetime | None, occurred_at: datetime) -> bool:
    """Whether a licence held since `licence` (True: since always; None/False: not held) was
    valid when the use occurred."""
    return licence is True or (isinstance(licence, datetime) and licence <= occurred_at)


def deduct(book: Book, use: UseLike, now: datetime, grace: timedelta, *,
           offline_licence: bool | datetime | None = False) -> Outcome:
    """Apply one use to the book: draw lots; the rest is arrears (cloud inspections) or a rejection.
    `offline_licence`: since when the org holds AI-PERPETUAL (checked at the use's occurred_at).
    Arrears a lot credited after the use occurred can cover are offset from it at once."""
    if use.resource == AI and use.channel == "offline":
        if licensed(offline_licence, use.occurred_at):
            book.counters.offline_counted += use.quantity
            return Deducted(use.usage_id, (), 0, offline_licence=True)
        book.counters.rejected += use.quantity
        return Rejected(use.usage_id, NO_OFFLINE_LICENCE)
    draws, rest = allocate(list(book.lots.values()), use, now, grace)
    if rest and use.resource == AI:
        book.counters.rejected += use.quantity
        return Rejected(use.usage_id, INSUFFICIENT_BALANCE)
    for d in draws:
        book.lots[d.lot_id].remaining -= d.quantity
        book.touched.add(d.lot_id)
    book.counters.drawn_by_usage += use.quantity - rest
    offsets: list[Draw] = []
    if rest:
        book.counters.arrears_recorded += rest
        late = Use(use.usage_id, use.resource, rest, use.occurred_at, use.channel)
        offsets, outstanding = allocate(list(book.lots.values()), late, now, grace, later=True)
        for o in offsets:
            book.lots[o.lot_id].remaining -= o.quantity
            book.touched.add(o.lot_id)
        book.counters.arrears_offset += rest - outstanding
        if outstanding:
            book.arrears.append(Arrear(use.usage_id, use.occurred_at, outstanding))
    return Deducted(use.usage_id, tuple(draws), rest, offsets=tuple(offsets))


def deduct_batch(books: dict[tuple[str, str], Book], uses: Sequence[tuple[str, UseLike]], now: datetime,
                 grace: timedelta, perpetual: dict[str, datetime]) -> list[Outcome]:
    """A batch of uses (org, use) in stream order, against books keyed by (org, resource);
    `perpetual`: since when each org holds AI-PERPETUAL."""
    return [deduct(books[(org, u.resource)], u, now, grace, offline_licence=perpetual.get(org)) for org, u in uses]


def credit(book: Book, lot: Lot) -> list[Offset]:
    """Add a new lot; it first offsets the book's outstanding arrears that occurred before it
    expired, oldest first."""
    book.lots[lot.lot_id] = lot
    book.counters.purchased += lot.quantity
    offsets: list[Offset] = []
    for a in sorted(book.arrears, key=lambda a: (a.occurred_at, a.usage_id)):
        if lot.remaining == 0:
            break
        if a.outstanding == 0 or a.occurred_at >= lot.expires_at:
            continue
        take = min(a.outstanding, lot.remaining)
        a.outstanding -= take
        lot.remaining -= take
        offsets.append(Offset(a.usage_id, take, retention_until(a.occurred_at, lot.storage_years)))
    book.arrears = [a for a in book.arrears if a.outstanding > 0]
    book.counters.arrears_offset += sum(o.quantity for o in offsets)
    return offsets


def expiry_due(expires_at: datetime, now: datetime, grace: timedelta) -> bool:
    return now >= expires_at + grace


def expire(book: Book, lot_id: str, now: datetime, grace: timedelta) -> int | None:
    """Forfeit a lot's remainder once due (expiry + grace); None if early or already expired."""
    lot = book.lots.get(lot_id)
    if lot is None or lot.expired or not expiry_due(lot.expires_at, now, grace):
        return None
    forfeited, lot.remaining, lot.expired, lot.forfeited = lot.remaining, 0, True, lot.remaining
    book.touched.add(lot_id)
    book.counters.forfeited += forfeited
    return forfeited


def new_lot(lot_id: str, quantity: int, storage_years: int | None, paid_at: datetime) -> Lot:
    """A paid lot line: valid from paid_at for one calendar year."""
    return Lot(lot_id, quantity, quantity, storage_years, paid_at, add_years(paid_at, 1))


# ---------------------------------------------------------------- order lines


class UnknownOrderLine(ValueError):
    def __init__(self, line: int, detail: str):
        super().__init__(f"line {line}: {detail}")
        self.line = line


# registry kind -> the crediting path: a lot, a licence (periods), a perpetual licence, a service row
CREDIT_PATH = {Kind.LOT: "lot", Kind.LICENCE: "licence", Kind.PERPETUAL: "perpetual",
               Kind.SERVICE: "service", Kind.MAINTENANCE: "service"}


def line_kind(sku: str, registry: Registry = REGISTRY) -> str:
    spec = registry.get(sku)
    return "unknown" if spec is None else CREDIT_PATH[spec.kind]


def lot_resource(sku: str, registry: Registry = REGISTRY) -> str | None:
    """The resource a lot SKU's lots hold (None: not a lot)."""
    return registry.lot_resources().get(sku)


# kinds whose crediting reads the line's fields (a service row only stores them)
CREDIT_READS_FIELDS = frozenset({Kind.LOT, Kind.LICENCE, Kind.MAINTENANCE})


def check_line(line: int, sku: str, *, quantity: int | None, storage_years: int | None,
               months: int | None, feature: str | None, years: int | None,
               registry: Registry = REGISTRY) -> str:
    """The kind of a paid line, or UnknownOrderLine when it cannot be credited: the SKU is
    registered and, where crediting reads them, its fields are there (a number at least 1, a text
    one of its choices). The order service enforced the full limits when it priced the line."""
    spec = registry.get(sku)
    if spec is None:
        raise UnknownOrderLine(line, f"unknown sku {sku!r}")
    given = {"quantity": quantity, "storage_years": storage_years, "months": months, "feature": feature,
             "years": years}
    for f in spec.fields if spec.kind in CREDIT_READS_FIELDS else ():
        value = given.get(f.name)
        if isinstance(f, Choice) and isinstance(f.values[0], str):
            if value not in f.values:
                raise UnknownOrderLine(line, f"{sku} {f.name} {value!r} is not one of {list(f.values)}")
        elif f.default is None and (not isinstance(value, int) or value < 1):
            raise UnknownOrderLine(line, f"{sku} needs a positive {f.name}")
    return CREDIT_PATH[spec.kind]


def licence_feature(sku: str, feature: str | None, registry: Registry = REGISTRY) -> str:
    """The feature a licence line licenses: the SKU's own (basic, ai_perpetual) or the line's."""
    spec = registry.get(sku)
    own = spec.licence if spec is not None else None
    return own if own is not None else str(feature)


def licence_id(org_id: str, feature: str) -> str:
    return f"{org_id}:{feature}"


# ---------------------------------------------------------------- licences and features


@dataclass(frozen=True)
class Licence:
    starts_at: datetime
    ends_at: datetime | None  # None: perpetual

    def active(self, now: datetime) -> bool:
        return self.starts_at <= now and (self.ends_at is None or now < self.ends_at)


def renew(current: Licence | None, paid_at: datetime, months: int) -> tuple[Licence, datetime, datetime]:
    """Stack a period of `months`: it starts at max(paid_at, current end). Returns the licence
    after renewal (its run start is kept while the periods are contiguous) and the new period."""
    if current is not None and current.ends_at is not None and current.ends_at >= paid_at:
        start, run_start = current.ends_at, current.starts_at
    else:
        start = run_start = paid_at
    end = add_months(start, months)
    return Licence(run_start, end), start, end


@dataclass(frozen=True)
class FeatureState:
    enabled: bool
    until: datetime | None


def basic_state(licences: dict[str, Licence], now: datetime) -> FeatureState:
    basic = licences.get(BASIC)
    if basic is not None and basic.active(now):
        return FeatureState(True, basic.ends_at)
    return FeatureState(False, None)


def feature_state(licences: dict[str, Licence], feature: str, now: datetime) -> FeatureState:
    """An optional feature is enabled only while its own licence and the Basic Edition are active;
    `until` is the earlier of the two ends."""
    if feature == BASIC:
        return basic_state(licences, now)
    basic, own = basic_state(licences, now), licences.get(feature)
    if not basic.enabled or own is None or not own.active(now):
        return FeatureState(False, None)
    ends = [e for e in (basic.until, own.ends_at) if e is not None]
    return FeatureState(True, min(ends) if ends else None)


def perpetual_licence(current: Licence | None, paid_at: datetime) -> tuple[Licence, datetime, None]:
    """AI-PERPETUAL: no end; a repeat purchase keeps the earliest start. Returns the licence and
    the new period (paid_at, no end)."""
    starts = min(current.starts_at, paid_at) if current is not None else paid_at
    return Licence(starts, None), paid_at, None


@dataclass(frozen=True)
class StoredLicence:
    """A licence as stored: one per org and feature."""

    licence_id: str
    org_id: str
    feature: str
    licence: Licence
    active: bool  # False once ended by an end_licence command


def licence_end(lic: StoredLicence | None, org_id: str, commanded_end: datetime, now: datetime) -> datetime | None:
    """When an end_licence command takes effect: the licence's end, if it is this org's active,
    time-limited licence, its end has passed, and it was not renewed past the commanded end."""
    if lic is None or lic.org_id != org_id or not lic.active:
        return None
    ends_at = lic.licence.ends_at
    if ends_at is None or ends_at > now or ends_at > commanded_end:
        return None
    return ends_at


# ---------------------------------------------------------------- services


@dataclass(frozen=True)
class Service:
    service_id: str
    org_id: str
    order_id: str
    line: int
    sku: str
    mode: str | None
    quantity: int | None
    years: int | None
    purchased_at: datetime
    accept_by: datetime | None
    ends_at: datetime | None
    status: str
    accepted_at: datetime | None = None
    closed_at: datetime | None = None


@dataclass(frozen=True)
class ServiceTerms:
    accept_by: datetime | None
    ends_at: datetime | None
    status: str


def service_terms(sku: str, paid_at: datetime, years: int | None) -> ServiceTerms:
    """A one-time service awaits acceptance for one year from payment; maintenance runs `years`
    from payment and ends by itself (SPEC 2.5)."""
    if sku == MAINTENANCE:
        return ServiceTerms(None, add_years(paid_at, int(years or 0)), "active")
    return ServiceTerms(add_years(paid_at, 1), None, "awaiting_acceptance")


def service_expiry(svc: Service | None, org_id: str, now: datetime) -> datetime | None:
    """When an expire_service command takes effect: the acceptance deadline, if this org's
    one-time service still awaits acceptance and the deadline has passed."""
    if (svc is None or svc.org_id != org_id or svc.sku not in ONE_TIME_SERVICES
            or svc.status != "awaiting_acceptance" or svc.accept_by is None or svc.accept_by > now):
        return None
    return svc.accept_by


def maintenance_end(svc: Service | None, org_id: str, now: datetime) -> datetime | None:
    """When an end_maintenance command takes effect: the subscription's end, once passed."""
    if (svc is None or svc.org_id != org_id or svc.sku != MAINTENANCE or svc.status != "active"
            or svc.ends_at is None or svc.ends_at > now):
        return None
    return svc.ends_at


def lot_expiry(lot: Lot | None, org_id: str, now: datetime, grace: timedelta) -> int | None:
    """When an expire_lot command takes effect: what this org's lot forfeits, once its expiry plus
    the late-usage grace has passed (None: early, already expired, or not this org's lot)."""
    if lot is None or lot.org_id != org_id:
        return None
    return expire(Book(lot.resource, {lot.lot_id: lot}), lot.lot_id, now, grace)


def service_status(sku: str, status: str, accept_by: datetime | None, ends_at: datetime | None,
                   now: datetime) -> str:
    """The status shown now (deadlines count even before the expiry command arrived)."""
    if status == "awaiting_acceptance" and accept_by is not None and now >= accept_by:
        return "expired"
    if status == "active" and ends_at is not None and now >= ends_at:
        return "ended"
    return status


def acceptable(sku: str, status: str, accept_by: datetime | None, now: datetime) -> bool:
    return sku in ONE_TIME_SERVICES and service_status(sku, status, accept_by, None, now) == "awaiting_acceptance"


# ---------------------------------------------------------------- the balance view


LotStatus = Literal["active", "depleted", "expired"]


def lot_status(lot: Lot, now: datetime) -> LotStatus:
    """`expired` from its expiry on (even before the command forfeits it), `depleted`, `active`."""
    if lot.expired or now >= lot.expires_at:
        return "expired"
    return "depleted" if lot.remaining == 0 else "active"


def available_now(lots: list[Lot], now: datetime) -> int:
    """What may be drawn now: the remaining of unexpired lots valid at this moment."""
    return sum(lot.remaining for lot in lots if not lot.expired and lot.credited_at <= now < lot.expires_at)


@dataclass(frozen=True)
class BalanceFigures:
    purchased: int
    available: int
    used: int
    arrears: int
    forfeited: int


def balance(counters: Counters | None, lots: list[Lot]) -> BalanceFigures:
    """The account view of one resource. `available` is the remaining of every lot not yet
    forfeited: a lot past its expiry keeps its remainder here until the expire_lot command forfeits
    it (at most the late-usage grace later), so purchased = available + drawn + forfeited holds at
    every moment (SPEC 4)."""
    c = counters or Counters()
    return BalanceFigures(
        purchased=c.purchased, available=sum(lot.remaining for lot in lots if not lot.expired),
        used=c.drawn_by_usage + c.arrears_recorded, arrears=c.arrears_recorded - c.arrears_offset,
        forfeited=c.forfeited,
    )


@dataclass(frozen=True)
class LedgerRow:
    seq: int
    event_id: str
    type: str
    time: datetime
    resource: str | None
    data: dict[str, object]


# ---------------------------------------------------------------- an account (for the properties)


@dataclass
class Account:
    """A whole org+resource history applied message by message, with its inbox: what the service
    does across transactions, in memory (used by the property tests and as the reference model)."""

    resource: str
    grace: timedelta
    offline_licence: bool = False
    book: Book = field(init=False)
    seen: set[str] = field(default_factory=set)
    ledger: list[tuple[str, object]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.book = Book(self.resource)

    def apply(self, msg: Use | tuple[str, object], now: datetime) -> None:
        if isinstance(msg, Use):
            if msg.usage_id in self.seen:
                return
            self.seen.add(msg.usage_id)
            self.ledger.append(("use", deduct(self.book, msg, now, self.grace, offline_licence=self.offline_licence)))
            return
        kind, arg = msg
        if kind == "credit":
            assert isinstance(arg, Lot)
            if f"credit:{arg.lot_id}" in self.seen:
                return
            self.seen.add(f"credit:{arg.lot_id}")
            lot = Lot(arg.lot_id, arg.quantity, arg.quantity, arg.storage_years, arg.credited_at, arg.expires_at)
            self.ledger.append(("credit", (lot.lot_id, credit(self.book, lot))))
        elif kind == "expire":
            forfeited = expire(self.book, str(arg), now, self.grace)
            if forfeited is not None:
                self.ledger.append(("expire", (arg, forfeited)))
