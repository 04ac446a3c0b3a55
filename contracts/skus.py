"""The SKU registry (SPEC 2.2-2.6): every product, once, for every service.

For each SKU: its kind (what crediting a paid line of it does), the metered resource where it has
one, the line fields it takes with their limits, how it is priced, and whether the public order
endpoint sells it. Order's validation and pricing and entitlement's crediting are derived from
this table; the price book only adds names, units and prices (and is checked against it).

Adding a SKU of an existing kind = one entry in `SKUS` + one item in the price book.
Pure data: the order and entitlement domains interpret it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum

from contracts.catalog import OPTIONAL_FEATURES
from contracts.http import ErrorCode

CLOUD = "cloud_inspection"
AI = "ai_review"
RESOURCES = (CLOUD, AI)


class Kind(StrEnum):
    """What a paid line becomes in entitlement."""

    LOT = "lot"  # a prepaid package of a metered resource, valid one year (2.2, 2.3)
    LICENCE = "licence"  # months of a software licence; renewals stack (2.4)
    PERPETUAL = "perpetual"  # a licence without end (AI-PERPETUAL, 2.3)
    SERVICE = "service"  # a one-time service, complete on acceptance within a year (2.5)
    MAINTENANCE = "maintenance"  # a subscription for whole years from paid_at (2.5)


class Pricing(StrEnum):
    """How a line's price follows from its unit price (the order domain holds one function each)."""

    PER_UNIT = "per_unit"  # quantity x unit price
    PER_UNIT_YEAR = "per_unit_year"  # quantity x unit price x storage_years
    PER_MONTH = "per_month"  # months x unit price
    ONCE = "once"  # the unit price
    MONTHLY_FOR_YEARS = "monthly_for_years"  # unit price (a month) x 12 x years


# ---------------------------------------------------------------- line fields and their limits


@dataclass(frozen=True)
class Quantity:
    """An integer count: below `min` QUANTITY_BELOW_MINIMUM, above `max` QUANTITY_TOO_LARGE, not a
    multiple of `step` QUANTITY_NOT_MULTIPLE. `default`: optional, this value when absent."""

    name: str
    min: int
    max: int
    step: int = 1
    default: int | None = None
    unit: str = ""

    def option(self) -> dict[str, int]:
        """As the price book and catalog write it."""
        doc = {"min": self.min}
        if self.step != 1:
            doc["multiple_of"] = self.step
        doc["max"] = self.max
        if self.default is not None:
            doc["default"] = self.default
        return doc


@dataclass(frozen=True)
class Bounded:
    """An integer in min..max, else `code`."""

    name: str
    min: int
    max: int
    code: ErrorCode
    default: int | None = None

    def option(self) -> dict[str, int]:
        return {"min": self.min, "max": self.max}


@dataclass(frozen=True)
class Choice:
    """One of `values`, else `code`."""

    name: str
    values: tuple[int, ...] | tuple[str, ...]
    code: ErrorCode
    default: int | None = None

    def option(self) -> list[int] | list[str]:
        return list(self.values)  # type: ignore[return-value]


LineField = Quantity | Bounded | Choice
LINE_FIELDS = ("quantity", "storage_years", "months", "feature", "mode", "years")


@dataclass(frozen=True)
class Sku:
    sku: str
    kind: Kind
    fields: tuple[LineField, ...]  # checked in this order; any other line field is malformed
    pricing: Pricing
    price_by: str | None = None  # the field whose value picks the unit price (book: unit_prices)
    resource: str | None = None  # the metered resource (lots, the perpetual AI licence)
    online: bool = True  # False: the public endpoint refuses it (OFFLINE_ONLY_PRODUCT), import only
    licence: str | None = None  # licence kinds: the feature licensed (None: the line's `feature`)
    needs_basic: bool = False  # needs an active Basic Edition or one in the same order

    def __post_init__(self) -> None:
        names = [f.name for f in self.fields]
        if len(set(names)) != len(names) or not set(names) <= set(LINE_FIELDS):
            raise ValueError(f"{self.sku}: fields {names} must be distinct, from {LINE_FIELDS}")
        if self.price_by is not None and not isinstance(self.field(self.price_by), Choice):
            raise ValueError(f"{self.sku}: price_by {self.price_by!r} must name a Choice field")
        if self.kind is Kind.LOT and self.resource is None:
            raise ValueError(f"{self.sku}: a lot needs the resource it holds")
        if self.resource is not None and self.kind not in (Kind.LOT, Kind.PERPETUAL):
            raise ValueError(f"{self.sku}: only lots and perpetual licences have a resource")
        if self.kind is Kind.LOT and self.field("quantity") is None:
            raise ValueError(f"{self.sku}: a lot needs a quantity field")
        if self.resource is not None and self.resource not in RESOURCES:
            raise ValueError(f"{self.sku}: unknown resource {self.resource!r}")

    def field(self, name: str) -> LineField | None:
        return next((f for f in self.fields if f.name == name), None)

    def price_keys(self) -> tuple[str, ...] | None:
        """The option keys `unit_prices` must cover, or None: one `unit_price`."""
        chooser = self.field(self.price_by) if self.price_by else None
        return tuple(str(v) for v in chooser.values) if isinstance(chooser, Choice) else None

    def options(self) -> dict[str, object]:
        return {f.name: f.option() for f in self.fields}


# ---------------------------------------------------------------- the registry


class Registry(Mapping[str, Sku]):
    """SKUs by name, in catalog order."""

    def __init__(self, skus: Iterable[Sku]):
        self._skus: dict[str, Sku] = {}
        for s in skus:
            if s.sku in self._skus:
                raise ValueError(f"sku {s.sku} registered twice")
            self._skus[s.sku] = s

    def __getitem__(self, sku: str) -> Sku:
        return self._skus[sku]

    def __iter__(self) -> Iterator[str]:
        return iter(self._skus)

    def __len__(self) -> int:
        return len(self._skus)

    def __hash__(self) -> int:
        return hash(tuple(self._skus.values()))

    def of_kind(self, *kinds: Kind) -> frozenset[str]:
        return frozenset(s.sku for s in self._skus.values() if s.kind in kinds)

    def offline_only(self) -> frozenset[str]:
        return frozenset(s.sku for s in self._skus.values() if not s.online)

    def lot_resources(self) -> dict[str, str]:
        """Lot SKU -> the resource its lots hold."""
        return {s.sku: s.resource for s in self._skus.values() if s.kind is Kind.LOT and s.resource}

    def plus(self, *extra: Sku) -> Registry:
        """This registry with more SKUs (tests, and a reader's proof that a SKU is one entry)."""
        return Registry([*self._skus.values(), *extra])


PACKAGE = Quantity("quantity", min=1_000, max=10_000_000, step=1_000)
MONTHS = Bounded("months", 1, 120, ErrorCode.INVALID_DURATION)
BASIC_EDITION = "SW-BASIC"

SKUS = (
    Sku("CI-QTY", Kind.LOT, (PACKAGE, Choice("storage_years", (1, 2, 3, 5, 10, 15), ErrorCode.INVALID_STORAGE_YEARS)),
        Pricing.PER_UNIT, price_by="storage_years", resource=CLOUD),
    Sku("CI-ANNUAL", Kind.LOT, (PACKAGE, Bounded("storage_years", 1, 30, ErrorCode.INVALID_STORAGE_YEARS)),
        Pricing.PER_UNIT_YEAR, resource=CLOUD),
    Sku("AI-QTY", Kind.LOT, (PACKAGE,), Pricing.PER_UNIT, resource=AI),
    Sku("AI-PERPETUAL", Kind.PERPETUAL, (Quantity("quantity", 1, 100, default=1, unit="product set"),),
        Pricing.PER_UNIT, resource=AI, online=False, licence="ai_perpetual"),
    Sku(BASIC_EDITION, Kind.LICENCE, (MONTHS,), Pricing.PER_MONTH, licence="basic"),
    Sku("SW-OPT", Kind.LICENCE, (MONTHS, Choice("feature", OPTIONAL_FEATURES, ErrorCode.UNKNOWN_FEATURE)),
        Pricing.PER_MONTH, price_by="feature", needs_basic=True),
    Sku("SVC-DELIVERY", Kind.SERVICE, (Choice("mode", ("local", "remote"), ErrorCode.INVALID_MODE),),
        Pricing.ONCE, price_by="mode"),
    Sku("SVC-SCHEDULED", Kind.SERVICE, (Quantity("quantity", 1, 365, unit="person-day"),), Pricing.PER_UNIT),
    Sku("SVC-MAINTENANCE", Kind.MAINTENANCE, (Bounded("years", 1, 10, ErrorCode.INVALID_DURATION),),
        Pricing.MONTHLY_FOR_YEARS),
)
REGISTRY = Registry(SKUS)
