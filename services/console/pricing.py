"""Prices and hints from the catalog (GET /v1/catalog), for the purchasing pages.

The console shows a price as choices change; the order service prices the order again when it is
placed and its answer is the one that counts. A unit test checks both agree for every SKU.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

CENT = Decimal("0.01")
# sku -> what multiplies the unit price (option names; ints are constant factors)
MULTIPLIERS: dict[str, tuple[str | int, ...]] = {
    "CI-QTY": ("quantity",),
    "CI-ANNUAL": ("quantity", "storage_years"),
    "AI-QTY": ("quantity",),
    "AI-PERPETUAL": ("quantity",),
    "SW-BASIC": ("months",),
    "SW-OPT": ("months",),
    "SVC-DELIVERY": (),
    "SVC-SCHEDULED": ("quantity",),
    "SVC-MAINTENANCE": (12, "years"),
}
# options whose value picks the unit price when an item has `unit_prices`
PRICE_KEYS = ("storage_years", "feature", "mode")
NUMERIC = ("quantity", "storage_years", "months", "years")

Line = dict[str, Any]
Hint = tuple[str, dict[str, Any]]


def _money(raw: Any) -> Decimal | None:
    try:
        return Decimal(str(raw)).quantize(CENT)
    except (InvalidOperation, ValueError):
        return None


def unit_price(item: dict[str, Any], line: Line) -> Decimal | None:
    table = item.get("unit_prices")
    if table:
        for key in PRICE_KEYS:
            if key in line and str(line[key]) in table:
                return _money(table[str(line[key])])
        return None
    return _money(item.get("unit_price"))


def line_price(item: dict[str, Any], line: Line) -> Decimal | None:
    """The line's price, or None when the choices do not name a price (e.g. an unknown option)."""
    unit = unit_price(item, line)
    factors = MULTIPLIERS.get(item["sku"])
    if unit is None or factors is None:
        return None
    price = unit
    for f in factors:
        v = f if isinstance(f, int) else line.get(f)
        if not isinstance(v, int) or v < 0:
            return None
        price *= v
    return price.quantize(CENT)


def total(items: dict[str, dict[str, Any]], lines: list[Line]) -> Decimal | None:
    prices: list[Decimal] = []
    for ln in lines:
        price = line_price(items[ln["sku"]], ln) if ln["sku"] in items else None
        if price is None:
            return None
        prices.append(price)
    if not prices:
        return None
    return sum(prices, Decimal("0.00"))


def parse_line(
    item: dict[str, Any], form: dict[str, str], fixed: dict[str, Any] | None = None
) -> tuple[Line, list[Hint]]:
    """The order line the form describes, and what is not a valid choice (as message keys)."""
    line: Line = {"sku": item["sku"], **(fixed or {})}
    problems: list[Hint] = []
    for key, spec in (item.get("options") or {}).items():
        if key in line:
            continue
        raw = (form.get(key) or "").strip().replace(",", "").replace(" ", "")
        if key in NUMERIC:
            if not raw.isdigit() or len(raw) > 12:
                problems.append(("hint.whole_number", {"field": key}))
                continue
            line[key] = int(raw)
        else:
            line[key] = raw
        problems += hints(key, spec, line[key])
    return line, problems


def hints(key: str, spec: Any, value: Any) -> list[Hint]:
    """Catalog options as readable rules: the same limits the order service enforces."""
    if isinstance(spec, list):
        return [] if value in spec else [("hint.one_of", {"field": key, "choices": ", ".join(map(str, spec))})]
    if not isinstance(spec, dict) or not isinstance(value, int):
        return []
    out: list[Hint] = []
    lo, hi, step = spec.get("min"), spec.get("max"), spec.get("multiple_of")
    if isinstance(lo, int) and value < lo:
        out.append(("hint.min", {"field": key, "n": lo}))
    elif isinstance(hi, int) and value > hi:
        out.append(("hint.max", {"field": key, "n": hi}))
    if isinstance(step, int) and step > 0 and value % step:
        out.append(("hint.multiple", {"field": key, "n": step}))
    return out


def default_value(spec: Any) -> Any:
    if isinstance(spec, list):
        return spec[0] if spec else ""
    if isinstance(spec, dict):
        return spec.get("default", spec.get("min", 1))
    return ""
