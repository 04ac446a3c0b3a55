"""Order rules (SPEC 2.2-2.6): the price book, line validation, pricing, Basic Edition stacking.

Pure Python: no I/O, no framework. Errors carry the SPEC error code and the offending line index.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from contracts.catalog import OPTIONAL_FEATURES

CENT = Decimal("0.01")

CI_QTY_STORAGE_YEARS = (1, 2, 3, 5, 10, 15)
CI_ANNUAL_STORAGE_YEARS = range(1, 31)
QTY_MIN, QTY_STEP, QTY_MAX = 1_000, 1_000, 10_000_000
MONTHS = range(1, 121)
MAINTENANCE_YEARS = range(1, 11)
PERSON_DAYS = range(1, 366)
PERPETUAL_SETS = range(1, 101)
MODES = ("local", "remote")
FEATURES = OPTIONAL_FEATURES
OFFLINE_ONLY = frozenset({"AI-PERPETUAL"})

# sku -> the line fields it takes (anything else on the line is a malformed line)
FIELDS: dict[str, frozenset[str]] = {
    "CI-QTY": frozenset({"quantity", "storage_years"}),
    "CI-ANNUAL": frozenset({"quantity", "storage_years"}),
    "AI-QTY": frozenset({"quantity"}),
    "AI-PERPETUAL": frozenset({"quantity"}),
    "SW-BASIC": frozenset({"months"}),
    "SW-OPT": frozenset({"months", "feature"}),
    "SVC-DELIVERY": frozenset({"mode"}),
    "SVC-SCHEDULED": frozenset({"quantity"}),
    "SVC-MAINTENANCE": frozenset({"years"}),
}
SKUS = tuple(FIELDS)
# sku -> the option keys its unit_prices must cover (None: a single unit_price)
PRICE_KEYS: dict[str, tuple[str, ...] | None] = {
    "CI-QTY": tuple(str(y) for y in CI_QTY_STORAGE_YEARS),
    "CI-ANNUAL": None,
    "AI-QTY": None,
    "AI-PERPETUAL": None,
    "SW-BASIC": None,
    "SW-OPT": FEATURES,
    "SVC-DELIVERY": MODES,
    "SVC-SCHEDULED": None,
    "SVC-MAINTENANCE": None,
}


class OrderRuleError(Exception):
    """A line breaks a rule: `code` is the SPEC error code, `line` the line index (or None)."""

    def __init__(self, code: str, message: str, line: int | None = None):
        super().__init__(message)
        self.code, self.message, self.line = code, message, line


class PriceBookError(ValueError):
    """The price book file is incomplete or malformed (the service refuses to start)."""


# ---------------------------------------------------------------- price book


@dataclass(frozen=True)
class PriceBook:
    version: str
    unit_price: Mapping[str, Decimal]  # sku -> price (SKUs priced by one unit price)
    unit_prices: Mapping[str, Mapping[str, Decimal]]  # sku -> option -> price

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> "PriceBook":
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
            if sku not in FIELDS:
                raise PriceBookError(f"unknown sku in price book: {sku!r}")
            if sku in by_sku:
                raise PriceBookError(f"sku {sku} listed twice")
            by_sku[sku] = item
        missing = [s for s in SKUS if s not in by_sku]
        if missing:
            raise PriceBookError(f"price book lacks SKUs {missing}")
        for sku in OFFLINE_ONLY:
            if by_sku[sku].get("online", True) is not False:
                raise PriceBookError(f"{sku} is offline-only: its 'online' must be false")
        single: dict[str, Decimal] = {}
        options: dict[str, dict[str, Decimal]] = {}
        for sku, keys in PRICE_KEYS.items():
            item = by_sku[sku]
            if keys is None:
                single[sku] = _money(item.get("unit_price"), f"{sku}.unit_price")
            else:
                table = item.get("unit_prices") or {}
                absent = [k for k in keys if k not in table]
                if absent:
                    raise PriceBookError(f"{sku}.unit_prices lacks {absent}")
                options[sku] = {k: _money(table[k], f"{sku}.unit_prices.{k}") for k in keys}
        return cls(version, single, options)


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


@dataclass(frozen=True)
class PricedLine:
    line: int
    sku: str
    quantity: int | None
    storage_years: int | None
    months: int | None
    feature: str | None
    mode: str | None
    years: int | None
    price: Decimal

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _check_field_set(line: Line, i: int) -> None:
    allowed = FIELDS[line.sku]
    extra = sorted(line.given() - allowed)
    if extra:
        raise OrderRuleError("VALIDATION_ERROR", f"{line.sku} does not take {', '.join(extra)}", i)
    needed = set(allowed) - ({"quantity"} if line.sku == "AI-PERPETUAL" else set())
    absent = sorted(needed - line.given())
    if absent:
        raise OrderRuleError("VALIDATION_ERROR", f"{line.sku} needs {', '.join(absent)}", i)


def _check_package_quantity(q: int, i: int) -> None:
    if q < QTY_MIN:
        raise OrderRuleError("QUANTITY_BELOW_MINIMUM", f"quantity {q} is below the minimum {QTY_MIN}", i)
    if q > QTY_MAX:
        raise OrderRuleError("QUANTITY_TOO_LARGE", f"quantity {q} exceeds {QTY_MAX} per line", i)
    if q % QTY_STEP:
        raise OrderRuleError("QUANTITY_NOT_MULTIPLE", f"quantity {q} is not a multiple of {QTY_STEP}", i)


def _check_range(value: int, allowed: range, code: str, what: str, i: int) -> None:
    if value not in allowed:
        raise OrderRuleError(code, f"{what} {value} is outside {allowed.start}..{allowed.stop - 1}", i)


def price_line(line: Line, i: int, book: PriceBook) -> PricedLine:
    """Validate one line's own rules and price it; raise OrderRuleError with line index `i`."""
    if line.sku not in FIELDS:
        raise OrderRuleError("UNKNOWN_SKU", f"unknown sku {line.sku!r}", i)
    _check_field_set(line, i)
    sku, q = line.sku, line.quantity
    unit = book.unit_price.get(sku)
    if sku in ("CI-QTY", "CI-ANNUAL", "AI-QTY"):
        assert q is not None
        _check_package_quantity(q, i)
    if sku == "CI-QTY":
        assert line.storage_years is not None
        if line.storage_years not in CI_QTY_STORAGE_YEARS:
            raise OrderRuleError(
                "INVALID_STORAGE_YEARS",
                f"CI-QTY storage_years must be one of {list(CI_QTY_STORAGE_YEARS)}", i,
            )
        price = q * book.unit_prices[sku][str(line.storage_years)]
    elif sku == "CI-ANNUAL":
        assert line.storage_years is not None
        if line.storage_years not in CI_ANNUAL_STORAGE_YEARS:
            raise OrderRuleError("INVALID_STORAGE_YEARS", "CI-ANNUAL storage_years must be 1..30", i)
        price = q * unit * line.storage_years
    elif sku == "AI-QTY":
        price = q * unit
    elif sku == "AI-PERPETUAL":
        q = 1 if q is None else q
        if q < PERPETUAL_SETS.start:
            raise OrderRuleError("QUANTITY_BELOW_MINIMUM", "AI-PERPETUAL quantity is at least 1 product set", i)
        if q not in PERPETUAL_SETS:
            raise OrderRuleError("QUANTITY_TOO_LARGE", f"AI-PERPETUAL quantity is at most {PERPETUAL_SETS.stop - 1}", i)
        price = q * unit
    elif sku in ("SW-BASIC", "SW-OPT"):
        assert line.months is not None
        _check_range(line.months, MONTHS, "INVALID_DURATION", "months", i)
        if sku == "SW-BASIC":
            price = line.months * unit
        else:
            if line.feature not in FEATURES:
                raise OrderRuleError("UNKNOWN_FEATURE", f"unknown feature {line.feature!r}", i)
            price = line.months * book.unit_prices[sku][line.feature]
    elif sku == "SVC-DELIVERY":
        if line.mode not in MODES:
            raise OrderRuleError("INVALID_MODE", f"mode must be one of {list(MODES)}", i)
        price = book.unit_prices[sku][line.mode]
    elif sku == "SVC-SCHEDULED":
        assert q is not None
        if q < PERSON_DAYS.start:
            raise OrderRuleError("QUANTITY_BELOW_MINIMUM", "SVC-SCHEDULED quantity is at least 1 person-day", i)
        if q not in PERSON_DAYS:
            raise OrderRuleError("QUANTITY_TOO_LARGE", "SVC-SCHEDULED quantity is at most 365 person-days", i)
        price = q * unit
    else:  # SVC-MAINTENANCE
        assert line.years is not None
        _check_range(line.years, MAINTENANCE_YEARS, "INVALID_DURATION", "years", i)
        price = unit * 12 * line.years
    return PricedLine(
        i, sku, q, line.storage_years, line.months, line.feature, line.mode, line.years,
        Decimal(price).quantize(CENT, rounding=ROUND_HALF_UP),
    )


def price_order(
    lines: Sequence[Line], book: PriceBook, *, online: bool, basic_active: bool
) -> list[PricedLine]:
    """Check every line in order (first error wins) and price it.

    `online`: the public order endpoint (offline-only SKUs are refused); False for admin import.
    `basic_active`: the org's Basic Edition is active at the order's time (from paid orders).
    """
    has_basic = any(ln.sku == "SW-BASIC" for ln in lines)
    priced = []
    for i, line in enumerate(lines):
        if online and line.sku in OFFLINE_ONLY:
            raise OrderRuleError(
                "OFFLINE_ONLY_PRODUCT", f"{line.sku} is not sold online; sales staff import it", i
            )
        p = price_line(line, i, book)
        if p.sku == "SW-OPT" and not (has_basic or basic_active):
            raise OrderRuleError(
                "BASIC_EDITION_REQUIRED",
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
        raise OrderRuleError("PAYMENT_CONFLICT", "the order is already paid by another payment")
    if status != PAYABLE:
        raise OrderRuleError("ORDER_NOT_PAYABLE", f"a {status} order cannot be paid")
    if amount != total:
        raise OrderRuleError("AMOUNT_MISMATCH", f"amount {amount} does not equal the order total {total}")
    return "pay"


def cancel_decision(status: str) -> str:
    """'cancel', or 'repeat' for an already cancelled order; raise when paid."""
    if status == "cancelled":
        return "repeat"
    if status != PAYABLE:
        raise OrderRuleError("ORDER_NOT_CANCELLABLE", f"a {status} order cannot be cancelled")
    return "cancel"
