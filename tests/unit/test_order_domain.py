"""Order rules without I/O: price book checks, line validation, pricing, Basic Edition stacking."""

from __future__ import annotations

import copy
import json
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from services.order import domain
from services.order.app import DEFAULT_PRICE_BOOK, load_price_book, price_book_path
from services.order.domain import Line, OrderRuleError, PriceBook, PriceBookError
from shared.clock import add_months

DOC = json.loads(DEFAULT_PRICE_BOOK.read_text())
BOOK = PriceBook.from_dict(DOC)
T0 = datetime(2026, 11, 1, tzinfo=timezone.utc)


def _code(lines, *, online=True, basic_active=False):
    with pytest.raises(OrderRuleError) as e:
        domain.price_order(lines, BOOK, online=online, basic_active=basic_active)
    return e.value.code, e.value.line


def _price(line, **kw):
    return domain.price_order([line], BOOK, online=kw.get("online", True), basic_active=True)[0].price


# ---------------------------------------------------------------- the shipped price book


def test_shipped_price_book_lists_every_sku_with_prices():
    assert {i["sku"] for i in DOC["items"]} == set(domain.SKUS)
    assert BOOK.version == DOC["version"] == "2026-11-01"
    assert set(BOOK.unit_prices["CI-QTY"]) == {"1", "2", "3", "5", "10", "15"}
    assert set(BOOK.unit_prices["SW-OPT"]) == set(domain.FEATURES)
    assert set(BOOK.unit_prices["SVC-DELIVERY"]) == {"local", "remote"}


def test_price_book_missing_a_sku_is_refused():
    doc = copy.deepcopy(DOC)
    doc["items"] = [i for i in doc["items"] if i["sku"] != "SVC-MAINTENANCE"]
    with pytest.raises(PriceBookError, match="SVC-MAINTENANCE"):
        PriceBook.from_dict(doc)


def test_price_book_missing_a_storage_duration_price_is_refused():
    doc = copy.deepcopy(DOC)
    next(i for i in doc["items"] if i["sku"] == "CI-QTY")["unit_prices"].pop("15")
    with pytest.raises(PriceBookError, match="15"):
        PriceBook.from_dict(doc)


@pytest.mark.parametrize("bad", ["0.005", "-1.00", "abc", None, 1.5])
def test_price_book_price_must_be_a_two_place_decimal_string(bad):
    doc = copy.deepcopy(DOC)
    next(i for i in doc["items"] if i["sku"] == "AI-QTY")["unit_price"] = bad
    with pytest.raises(PriceBookError):
        PriceBook.from_dict(doc)


def test_price_book_must_mark_ai_perpetual_offline():
    doc = copy.deepcopy(DOC)
    next(i for i in doc["items"] if i["sku"] == "AI-PERPETUAL")["online"] = True
    with pytest.raises(PriceBookError, match="offline"):
        PriceBook.from_dict(doc)


def test_aimis_price_book_env_points_to_another_file(tmp_path, monkeypatch):
    doc = copy.deepcopy(DOC)
    doc["version"] = "2027-01-01"
    path = tmp_path / "book.json"
    path.write_text(json.dumps(doc))
    monkeypatch.setenv("AIMIS_PRICE_BOOK", str(path))
    assert price_book_path() == path
    book, catalog = load_price_book(price_book_path())
    assert book.version == catalog.price_book_version == "2027-01-01"
    monkeypatch.delenv("AIMIS_PRICE_BOOK")
    assert price_book_path() == DEFAULT_PRICE_BOOK


# ---------------------------------------------------------------- pricing


def test_billing_example_10000_inspections_15_years_by_quantity():
    unit_15y = BOOK.unit_prices["CI-QTY"]["15"]
    assert _price(Line("CI-QTY", quantity=10_000, storage_years=15)) == 10_000 * unit_15y
    assert 10_000 * unit_15y == Decimal("32000.00")  # 3.20 per inspection in the shipped book


def test_billing_example_10000_inspections_15_years_annually():
    per_year = BOOK.unit_price["CI-ANNUAL"]
    assert _price(Line("CI-ANNUAL", quantity=10_000, storage_years=15)) == 10_000 * per_year * 15
    assert 10_000 * per_year * 15 == Decimal("37500.00")  # 0.25 per inspection-year


def test_prices_per_sku_rule():
    u, t = BOOK.unit_price, BOOK.unit_prices
    assert _price(Line("AI-QTY", quantity=3000)) == 3000 * u["AI-QTY"]
    assert _price(Line("SW-BASIC", months=12)) == 12 * u["SW-BASIC"]
    assert _price(Line("SW-OPT", months=6, feature="remote_diagnosis")) == 6 * t["SW-OPT"]["remote_diagnosis"]
    assert _price(Line("SVC-DELIVERY", mode="remote")) == t["SVC-DELIVERY"]["remote"]
    assert _price(Line("SVC-SCHEDULED", quantity=20)) == 20 * u["SVC-SCHEDULED"]
    assert _price(Line("SVC-MAINTENANCE", years=3)) == u["SVC-MAINTENANCE"] * 12 * 3
    assert _price(Line("AI-PERPETUAL"), online=False) == u["AI-PERPETUAL"]


def test_order_total_is_the_sum_of_line_prices_with_two_places():
    lines = domain.price_order(
        [Line("SW-BASIC", months=1), Line("AI-QTY", quantity=1000)], BOOK, online=True, basic_active=False
    )
    total = domain.total_of(lines)
    assert total == lines[0].price + lines[1].price
    assert total.as_tuple().exponent == -2


def test_ai_perpetual_defaults_to_one_product_set():
    (line,) = domain.price_order([Line("AI-PERPETUAL")], BOOK, online=False, basic_active=False)
    assert line.quantity == 1


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize("sku", ["CI-QTY", "CI-ANNUAL", "AI-QTY"])
@pytest.mark.parametrize(
    "quantity, code",
    [
        (999, "QUANTITY_BELOW_MINIMUM"),
        (0, "QUANTITY_BELOW_MINIMUM"),
        (1500, "QUANTITY_NOT_MULTIPLE"),
        (10_001_000, "QUANTITY_TOO_LARGE"),
    ],
)
def test_package_quantity_rules(sku, quantity, code):
    line = Line(sku, quantity=quantity, storage_years=1 if sku != "AI-QTY" else None)
    assert _code([line]) == (code, 0)


@pytest.mark.parametrize("quantity", [1000, 2000, 10_000_000])
def test_package_quantity_bounds_are_inclusive(quantity):
    assert _price(Line("AI-QTY", quantity=quantity)) > 0


@pytest.mark.parametrize("years", [0, 4, 6, 20])
def test_ci_qty_storage_years_outside_the_set(years):
    assert _code([Line("CI-QTY", quantity=1000, storage_years=years)]) == ("INVALID_STORAGE_YEARS", 0)


@pytest.mark.parametrize("years, ok", [(0, False), (1, True), (30, True), (31, False)])
def test_ci_annual_storage_years_1_to_30(years, ok):
    line = Line("CI-ANNUAL", quantity=1000, storage_years=years)
    if ok:
        assert _price(line) > 0
    else:
        assert _code([line]) == ("INVALID_STORAGE_YEARS", 0)


@pytest.mark.parametrize("sku", ["SW-BASIC", "SW-OPT"])
@pytest.mark.parametrize("months, ok", [(0, False), (1, True), (120, True), (121, False)])
def test_software_months_1_to_120(sku, months, ok):
    line = Line(sku, months=months, feature="cloud_film" if sku == "SW-OPT" else None)
    if ok:
        assert _price(line) > 0
    else:
        assert _code([line], basic_active=True) == ("INVALID_DURATION", 0)


@pytest.mark.parametrize("years, ok", [(0, False), (1, True), (10, True), (11, False)])
def test_maintenance_years_1_to_10(years, ok):
    line = Line("SVC-MAINTENANCE", years=years)
    if ok:
        assert _price(line) > 0
    else:
        assert _code([line]) == ("INVALID_DURATION", 0)


@pytest.mark.parametrize("days, code", [(0, "QUANTITY_BELOW_MINIMUM"), (366, "QUANTITY_TOO_LARGE")])
def test_scheduled_person_days_1_to_365(days, code):
    assert _price(Line("SVC-SCHEDULED", quantity=365)) > 0
    assert _code([Line("SVC-SCHEDULED", quantity=days)]) == (code, 0)


def test_delivery_mode_must_be_local_or_remote():
    assert _code([Line("SVC-DELIVERY", mode="onsite")]) == ("INVALID_MODE", 0)


def test_unknown_sku_and_feature():
    assert _code([Line("SW-BASIC", months=1), Line("CI-FOREVER")]) == ("UNKNOWN_SKU", 1)
    assert _code([Line("SW-OPT", months=1, feature="teleportation")], basic_active=True) == (
        "UNKNOWN_FEATURE", 0,
    )


def test_ai_perpetual_is_offline_only_online_and_allowed_offline():
    assert _code([Line("AI-QTY", quantity=1000), Line("AI-PERPETUAL")]) == ("OFFLINE_ONLY_PRODUCT", 1)
    assert domain.price_order([Line("AI-PERPETUAL", quantity=2)], BOOK, online=False, basic_active=False)


def test_import_still_enforces_quantity_rules():
    assert _code([Line("CI-QTY", quantity=500, storage_years=1)], online=False) == ("QUANTITY_BELOW_MINIMUM", 0)


def test_fields_a_sku_does_not_take_or_lacks_are_malformed():
    assert _code([Line("CI-QTY", quantity=1000, storage_years=1, months=3)]) == ("VALIDATION_ERROR", 0)
    assert _code([Line("CI-QTY", quantity=1000)]) == ("VALIDATION_ERROR", 0)
    assert _code([Line("SW-OPT", months=1)], basic_active=True) == ("VALIDATION_ERROR", 0)


def test_optional_feature_needs_basic_active_or_in_the_same_order():
    opt = Line("SW-OPT", months=3, feature="follow_up")
    assert _code([Line("AI-QTY", quantity=1000), opt]) == ("BASIC_EDITION_REQUIRED", 1)
    assert domain.price_order([opt, Line("SW-BASIC", months=3)], BOOK, online=True, basic_active=False)
    assert domain.price_order([opt], BOOK, online=True, basic_active=True)


# ---------------------------------------------------------------- Basic Edition stacking


def test_basic_renewals_stack_from_the_current_end():
    paid = [(T0, 1), (T0 + timedelta(days=10), 2)]
    periods = domain.basic_periods(paid, add_months)
    assert periods == [(T0, add_months(T0, 1)), (add_months(T0, 1), add_months(T0, 3))]
    assert domain.basic_active_at(paid, add_months(T0, 3) - timedelta(seconds=1), add_months)
    assert not domain.basic_active_at(paid, add_months(T0, 3), add_months)


def test_basic_after_a_gap_starts_at_paid_at():
    later = T0 + timedelta(days=100)
    paid = [(T0, 1), (later, 1)]
    assert domain.basic_periods(paid, add_months)[1] == (later, add_months(later, 1))
    assert not domain.basic_active_at(paid, T0 + timedelta(days=50), add_months)
    assert domain.basic_active_at(paid, later, add_months)
    assert not domain.basic_active_at([], T0, add_months)


# ---------------------------------------------------------------- lifecycle decisions


def test_payment_rules():
    total = Decimal("100.00")
    assert domain.payment_decision("placed", total, Decimal("100.0"), None, "p1") == "pay"
    assert domain.payment_decision("paid", total, total, "p1", "p1") == "repeat"
    assert domain.payment_decision("fulfilled", total, total, "p1", "p1") == "repeat"
    for status, amount, ref, code in [
        ("placed", Decimal("99.99"), None, "AMOUNT_MISMATCH"),
        ("cancelled", total, None, "ORDER_NOT_PAYABLE"),
        ("paid", total, "p0", "PAYMENT_CONFLICT"),
    ]:
        with pytest.raises(OrderRuleError) as e:
            domain.payment_decision(status, total, amount, ref, "p1")
        assert e.value.code == code


def test_cancel_rules():
    assert domain.cancel_decision("placed") == "cancel"
    assert domain.cancel_decision("cancelled") == "repeat"
    for status in ("paid", "fulfilled"):
        with pytest.raises(OrderRuleError) as e:
            domain.cancel_decision(status)
        assert e.value.code == "ORDER_NOT_CANCELLABLE"
