"""Order rules (SPEC 2.2-2.6): the price book, line validation, pricing, Basic Edition stacking.

What each SKU takes, its limits and its pricing rule come from the SKU registry
(contracts/skus.py); this module interprets them.

Pure Python: no I/O, no framework. Errors carry the SPEC error code and the offending line index.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from contracts.http import ErrorCode
from contracts.skus import BASIC_EDITION, REGISTRY, Bounded, Choice, Pricing, Quantity, Registry, Sku
from contracts.skus import LineField as FieldSpec

CENT = Decimal("0.01")

# Derived from the SKU registry (contracts/skus.py); kept as names for readers and tests.
SKUS = tuple(REGISTRY)
FEATURES = tuple(REGISTRY["SW-OPT"].price_keys() or ())
OFFLINE_ONLY = REGISTRY.offline_only()


class OrderRuleError(Exception):
    """A rule is broken: `code` is the SPEC error code (its HTTP status is `code.status`), `line`
    the offending line index (or None)."""

    def __init__(self, code: ErrorCode, message: str, line: int | None = None):
        super().__init__(message)
        self.code, self.message, self.line = code, message, line


class PriceBookError(ValueError):
    """The price book file is incomplete, malformed or disagrees with the registry (the service
    refuses to start)."""


# ---------------------------------------------------------------- price book


@dataclass(frozen=True)
class PriceBook:
    """The prices of one price book version, checked against a SKU registry; `items` is what the
    catalog shows (the book's names, units and prices, the registry's resource, online and options)."""

    version: str
    unit_price: Mapping[str, Decimal]  # sku -> price (SKUs priced by one unit price)
    unit_prices: Mapping[str, Mapping[str, Decimal]]  # sku -> option -> price
    registry: Registry = REGISTRY
    items: tuple[Mapping[str, Any], ...] = ()

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any], registry: Registry = REGISTRY) -> PriceBook:
        version = doc.get("version")
        if not isinstance(version, str) or not version:
            raise PriceBookError("price book needs a non-empty string 'version'")
        if doc.get("currency", "USD") != "USD":
            raise PriceBookError("price book currency must be USD")
        items = doc.get("items")
        if not isinstance(items, list):
            raise PriceBookError("price book needs a list 'items'")
        by_sku: dict[str, Mapping[str, Any]] = {}
        for item in items:
            sku = item.get("sku") if isinstance(item, Mapping) else None
            if not isinstance(sku, str) or sku not in registry:
                raise PriceBookError(f"unknown sku in price book: {sku!r} (not in the SKU registry)")
            if sku in by_sku:
                raise PriceBookError(f"sku {sku} listed twice")
            by_sku[sku] = item
        missing = [s for s in registry if s not in by_sku]
        if missing:
            raise PriceBookError(f"price book lacks SKUs {missing} (every registered SKU needs a price)")
        single: dict[str, Decimal] = {}
        options: dict[str, dict[str, Decimal]] = {}
        for sku, item in by_sku.items():
            spec = registry[sku]
            _check_repeated_facts(spec, item)
            keys = spec.price_keys()
            if keys is None:
                if "unit_prices" in item:
                    raise PriceBookError(f"{sku} has one unit_price, not unit_prices")
                single[sku] = _money(item.get("unit_price"), f"{sku}.unit_price")
            else:
                table = item.get("unit_prices")
                if "unit_price" in item or not isinstance(table, Mapping):
                    raise PriceBookError(f"{sku} is priced by {spec.price_by}: it needs unit_prices {list(keys)}")
                absent = [k for k in keys if k not in table]
                if absent:
                    raise PriceBookError(f"{sku}.unit_prices lacks {absent}")
                unknown = [k for k in table if k not in keys]
                if unknown:
                    raise PriceBookError(f"{sku}.unit_prices prices {unknown}, which the registry does not offer")
                options[sku] = {k: _money(table[k], f"{sku}.unit_prices.{k}") for k in keys}
        catalog = tuple(_catalog_item(registry[str(i["sku"])], i) for i in items)
        return cls(version, single, options, registry, catalog)


def _check_repeated_facts(spec: Sku, item: Mapping[str, Any]) -> None:
    """What the book repeats from the registry must agree with it (or be left out of the book)."""
    sku = spec.sku
    if "online" in item and item["online"] is not spec.online:
        sold = "sold online" if spec.online else "offline-only (import only)"
        raise PriceBookError(f"{sku} is {sold} in the SKU registry: its 'online' must be {spec.online} or absent")
    if "resource" in item and item["resource"] != spec.resource:
        raise PriceBookError(f"{sku}.resource must be {spec.resource!r} (the registry's) or absent")
    book_options = item.get("options", {})
    if not isinstance(book_options, Mapping):
        raise PriceBookError(f"{sku}.options must be an object")
    registered = spec.options()
    for name, value in book_options.items():
        if name not in registered:
            raise PriceBookError(f"{sku}.options.{name}: {sku} takes no {name} (fields {list(registered)})")
        if value != registered[name]:
            raise PriceBookError(
                f"{sku}.options.{name} is {value!r}; the SKU registry says {registered[name]!r} "
                "(make them agree or remove it from the book)"
            )


def _catalog_item(spec: Sku, item: Mapping[str, Any]) -> dict[str, Any]:
    return {**item, "resource": spec.resource, "online": spec.online, "options": spec.options()}


def _money(raw: Any, where: str) -> Decimal:
    try:
        value = Decimal(str(raw)) if raw is not None and not isinstance(raw, float) else None
    except InvalidOperation:
        value = None
    if value is None or not value.is_finite() or value < 0 or value != value.quantize(CENT):
        raise PriceBookError(f"{where} must be a non-negative decimal string with at most 2 places")
    return value.quantize(CENT)


# ---------------------------------------------------------------- lines


@dataclass(frozen=True)
class Line:
    sku: str
    quantity: int | None = None
    storage_years: int | None = None
    months: int | None = None
    feature: str | None = None
    mode: str | None = None
    years: int | None = None

    def given(self) -> set[str]:
        return {f.name for f in fields(self) if f.name != "sku" and getattr(self, f.name) is not None}


@dataclass(frozen=True, kw_only=True)
class PricedLine(Line):
    """A valid line with its defaults filled, its index in the order and its price."""

    line: int
    price: Decimal


def _check_field_set(spec: Sku, line: Line, i: int) -> None:
    allowed = {f.name for f in spec.fields}
    extra = sorted(line.given() - allowed)
    if extra:
        raise OrderRuleError(ErrorCode.VALIDATION_ERROR, f"{spec.sku} does not take {', '.join(extra)}", i)
    needed = {f.name for f in spec.fields if f.default is None}
    absent = sorted(needed - line.given())
    if absent:
        raise OrderRuleError(ErrorCode.VALIDATION_ERROR, f"{spec.sku} needs {', '.join(absent)}", i)


def _check_field(sku: str, f: FieldSpec, value: Any, i: int) -> None:
    """One field against its registered limit; raises the field's SPEC error code."""
    match f:
        case Quantity(name=name, min=lo, max=hi, step=step, unit=unit):
            what, of = f" {unit}" if unit else "", f"{sku} {name} {value}"
            if value < lo:
                raise OrderRuleError(ErrorCode.QUANTITY_BELOW_MINIMUM, f"{of} is below the minimum {lo}{what}", i)
            if value > hi:
                raise OrderRuleError(ErrorCode.QUANTITY_TOO_LARGE, f"{of} exceeds {hi}{what} per line", i)
            if value % step:
                raise OrderRuleError(ErrorCode.QUANTITY_NOT_MULTIPLE, f"{of} is not a multiple of {step}", i)
        case Bounded(name=name, min=lo, max=hi, code=code):
            if not lo <= value <= hi:
                raise OrderRuleError(code, f"{sku} {name} {value} is outside {lo}..{hi}", i)
        case Choice(name=name, values=values, code=code):
            if value not in values:
                raise OrderRuleError(code, f"{sku} {name} {value!r} is not one of {list(values)}", i)


# Pricing: one function per registered rule, over (the line with its defaults, the unit price).
PRICING: dict[Pricing, Callable[[Line, Decimal], Decimal]] = {
    Pricing.PER_UNIT: lambda ln, unit: int(ln.quantity or 0) * unit,
    Pricing.PER_UNIT_YEAR: lambda ln, unit: int(ln.quantity or 0) * unit * int(ln.storage_years or 0),
    Pricing.PER_MONTH: lambda ln, unit: int(ln.months or 0) * unit,
    Pricing.ONCE: lambda ln, unit: unit,
    Pricing.MONTHLY_FOR_YEARS: lambda ln, unit: unit * 12 * int(ln.years or 0),
}


def unit_price(book: PriceBook, spec: Sku, line: Line) -> Decimal:
    if spec.price_by is None:
        return book.unit_price[spec.sku]
    return book.unit_prices[spec.sku][str(getattr(line, spec.price_by))]


def price_line(line: Line, i: int, book: PriceBook) -> PricedLine:
    """Validate one line against its registered fields and price it by its pricing rule; raise
    OrderRuleError with line index `i`."""
    spec = book.registry.get(line.sku)
    if spec is None:
        raise OrderRuleError(ErrorCode.UNKNOWN_SKU, f"unknown sku {line.sku!r}", i)
    _check_field_set(spec, line, i)
    for f in spec.fields:  # an absent optional field takes its default
        if f.default is not None and getattr(line, f.name) is None:
            line = replace(line, **{f.name: f.default})  # type: ignore[arg-type]
    for f in spec.fields:
        _check_field(spec.sku, f, getattr(line, f.name), i)
    price = PRICING[spec.pricing](line, unit_price(book, spec, line))
    return PricedLine(**vars(line), line=i, price=Decimal(price).quantize(CENT, rounding=ROUND_HALF_UP))


def price_order(
    lines: Sequence[Line], book: PriceBook, *, online: bool, basic_active: bool
) -> list[PricedLine]:
    """Check every line in order (first error wins) and price it.

    `online`: the public order endpoint (offline-only SKUs are refused); False for admin import.
    `basic_active`: the org's Basic Edition is active at the order's time (from paid orders).
    """
    has_basic = any(ln.sku == BASIC_EDITION for ln in lines)
    priced = []
    for i, line in enumerate(lines):
        spec = book.registry.get(line.sku)
        if online and spec is not None and not spec.online:
            raise OrderRuleError(
                ErrorCode.OFFLINE_ONLY_PRODUCT, f"{line.sku} is not sold online; sales staff import it", i
            )
        p = price_line(line, i, book)
        if spec is not None and spec.needs_basic and not (has_basic or basic_active):
            raise OrderRuleError(ErrorCode.BASIC_EDITION_REQUIRED,
                "an optional feature needs an active Basic Edition or SW-BASIC in the same order", i,
            )
        priced.append(p)
    return priced


def total_of(lines: Iterable[PricedLine]) -> Decimal:
    return sum((ln.price for ln in lines), Decimal("0.00")).quantize(CENT)


# ---------------------------------------------------------------- Basic Edition


def basic_periods(
    paid_basic: Iterable[tuple[datetime, int]], add_months: Any
) -> list[tuple[datetime, datetime]]:
    """Stack paid SW-BASIC lines (in payment order): start = max(paid_at, current end)."""
    periods: list[tuple[datetime, datetime]] = []
    end: datetime | None = None
    for paid_at, months in paid_basic:
        start = paid_at if end is None or paid_at > end else end
        end = add_months(start, months)
        periods.append((start, end))
    return periods


def basic_active_at(
    paid_basic: Iterable[tuple[datetime, int]], at: datetime, add_months: Any
) -> bool:
    return any(start <= at < end for start, end in basic_periods(paid_basic, add_months))


# ---------------------------------------------------------------- lifecycle


PAYABLE = "placed"
PAID_STATES = frozenset({"paid", "fulfilled"})


def payment_decision(
    status: str, total: Decimal, amount: Decimal, stored_ref: str | None, payment_ref: str
) -> str:
    """'pay' (take it), 'repeat' (same payment again: answer as before, no new event), else raise."""
    if status in PAID_STATES:
        if stored_ref == payment_ref and amount == total:
            return "repeat"
        raise OrderRuleError(ErrorCode.PAYMENT_CONFLICT, "the order is already paid by another payment")
    if status != PAYABLE:
        raise OrderRuleError(ErrorCode.ORDER_NOT_PAYABLE, f"a {status} order cannot be paid")
    if amount != total:
        raise OrderRuleError(ErrorCode.AMOUNT_MISMATCH, f"amount {amount} does not equal the order total {total}")
    return "pay"


def cancel_decision(status: str) -> str:
    """'cancel', or 'repeat' for an already cancelled order; raise when paid."""
    if status == "cancelled":
        return "repeat"
    if status != PAYABLE:
        raise OrderRuleError(ErrorCode.ORDER_NOT_CANCELLABLE, f"a {status} order cannot be cancelled")
    return "cancel"
