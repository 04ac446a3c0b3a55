"""The SKU registry (contracts/skus.py): order's validation and pricing and entitlement's crediting
follow from it; the price book is checked against it. A new SKU of an existing kind is one registry
entry plus one price (shown here with the test-only `CI-QTY-BULK`)."""

from __future__ import annotations

import copy
import json
from decimal import Decimal
from pathlib import Path

import pytest

from contracts.http import ErrorCode
from contracts.skus import CLOUD, REGISTRY, Bounded, Choice, Kind, Pricing, Quantity, Sku
from services.entitlement import domain as entitlement
from services.order import domain as order
from services.order.app import DEFAULT_PRICE_BOOK, load_price_book
from services.order.domain import Line, OrderRuleError, PriceBook, PriceBookError

DOC = json.loads(DEFAULT_PRICE_BOOK.read_text())

# ---------------------------------------------------------------- a test-only SKU of an existing kind

BULK = Sku(
    "CI-QTY-BULK", Kind.LOT,
    (Quantity("quantity", min=100_000, max=10_000_000, step=100_000),
     Choice("storage_years", (5, 10), ErrorCode.INVALID_STORAGE_YEARS)),
    Pricing.PER_UNIT, price_by="storage_years", resource=CLOUD,
)
TEST_REGISTRY = REGISTRY.plus(BULK)
BULK_PRICE = {"sku": "CI-QTY-BULK", "name": "Cloud inspections in bulk", "description": "test only",
              "unit": "inspection", "unit_prices": {"5": "1.20", "10": "2.00"}}


def bulk_book_doc() -> dict:
    doc = copy.deepcopy(DOC)
    doc["items"].append(BULK_PRICE)
    return doc


def test_new_sku_is_one_registry_entry_plus_one_price(tmp_path: Path):
    path = tmp_path / "book.json"
    path.write_text(json.dumps(bulk_book_doc()))
    book, catalog = load_price_book(path, TEST_REGISTRY)
    (line,) = order.price_order([Line("CI-QTY-BULK", quantity=200_000, storage_years=10)], book,
                                online=True, basic_active=False)
    assert line.price == Decimal("400000.00")  # 200,000 x 2.00
    item = next(i for i in catalog.items if i.sku == "CI-QTY-BULK")
    assert item.resource == CLOUD and item.online is True
    assert item.options == {"quantity": {"min": 100_000, "multiple_of": 100_000, "max": 10_000_000},
                            "storage_years": [5, 10]}
    # entitlement credits it as a lot of cloud inspections
    assert entitlement.line_kind("CI-QTY-BULK", TEST_REGISTRY) == "lot"
    assert entitlement.lot_resource("CI-QTY-BULK", TEST_REGISTRY) == CLOUD
    assert entitlement.check_line(0, "CI-QTY-BULK", quantity=200_000, storage_years=10, months=None,
                                  feature=None, years=None, registry=TEST_REGISTRY) == "lot"


@pytest.mark.parametrize("quantity,storage_years,code", [
    (50_000, 5, "QUANTITY_BELOW_MINIMUM"),
    (150_000, 5, "QUANTITY_NOT_MULTIPLE"),
    (20_000_000, 5, "QUANTITY_TOO_LARGE"),
    (100_000, 3, "INVALID_STORAGE_YEARS"),
])
def test_new_sku_gets_the_rules_its_fields_declare(quantity, storage_years, code):
    book = PriceBook.from_dict(bulk_book_doc(), TEST_REGISTRY)
    with pytest.raises(OrderRuleError) as e:
        order.price_order([Line("AI-QTY", quantity=1000), Line("CI-QTY-BULK", quantity=quantity,
                                                                  storage_years=storage_years)],
                          book, online=True, basic_active=False)
    assert (e.value.code, e.value.line) == (code, 1)


def test_registered_sku_without_a_price_stops_the_service(tmp_path: Path):
    path = tmp_path / "book.json"
    path.write_text(json.dumps(DOC))
    with pytest.raises(PriceBookError, match=r"book\.json is refused: .*lacks SKUs \['CI-QTY-BULK'\]"):
        load_price_book(path, TEST_REGISTRY)


def test_priced_sku_the_registry_does_not_know_stops_the_service():
    with pytest.raises(PriceBookError, match="unknown sku in price book: 'CI-QTY-BULK'"):
        PriceBook.from_dict(bulk_book_doc())


def test_unknown_sku_is_refused_and_not_classified():
    book = PriceBook.from_dict(DOC)
    with pytest.raises(OrderRuleError) as e:
        order.price_order([Line("CI-QTY-BULK", quantity=100_000, storage_years=5)], book,
                          online=True, basic_active=False)
    assert e.value.code == "UNKNOWN_SKU"
    assert entitlement.line_kind("CI-QTY-BULK") == "unknown"


# ---------------------------------------------------------------- the book against the registry


def _item(doc: dict, sku: str) -> dict:
    return next(i for i in doc["items"] if i["sku"] == sku)


@pytest.mark.parametrize("sku,options", [
    ("CI-QTY", {"storage_years": [1, 2, 3, 5, 10]}),
    ("CI-QTY", {"quantity": {"min": 500, "multiple_of": 1000, "max": 10_000_000}}),
    ("SW-BASIC", {"months": {"min": 1, "max": 60}}),
    ("SVC-DELIVERY", {"mode": ["local"]}),
    ("AI-QTY", {"storage_years": [1]}),
])
def test_book_limits_that_disagree_with_the_registry_are_refused(sku, options):
    doc = copy.deepcopy(DOC)
    _item(doc, sku)["options"] = options
    with pytest.raises(PriceBookError, match=rf"{sku}\.options\.{next(iter(options))}"):
        PriceBook.from_dict(doc)


def test_book_may_repeat_limits_that_agree():
    doc = copy.deepcopy(DOC)
    for item in doc["items"]:
        spec = REGISTRY[item["sku"]]
        item.update(options=spec.options(), resource=spec.resource, online=spec.online)
    book = PriceBook.from_dict(doc)
    assert [i["sku"] for i in book.items] == list(REGISTRY)


def test_book_resource_must_match_the_registry():
    doc = copy.deepcopy(DOC)
    _item(doc, "AI-QTY")["resource"] = CLOUD
    with pytest.raises(PriceBookError, match="AI-QTY.resource"):
        PriceBook.from_dict(doc)


def test_book_prices_an_option_the_registry_does_not_offer():
    doc = copy.deepcopy(DOC)
    _item(doc, "CI-QTY")["unit_prices"]["4"] = "1.00"
    with pytest.raises(PriceBookError, match=r"\['4'\]"):
        PriceBook.from_dict(doc)


def test_catalog_takes_resource_online_and_options_from_the_registry():
    _, catalog = load_price_book(DEFAULT_PRICE_BOOK)
    items = {i.sku: i for i in catalog.items}
    assert list(items) == list(REGISTRY)
    assert items["AI-PERPETUAL"].online is False and items["AI-PERPETUAL"].resource == "ai_review"
    assert items["CI-ANNUAL"].options == {"quantity": {"min": 1000, "multiple_of": 1000, "max": 10_000_000},
                                          "storage_years": {"min": 1, "max": 30}}
    assert items["SW-BASIC"].resource is None


def test_bad_shipped_book_stops_the_order_process_with_a_clear_message(tmp_path: Path):
    import os
    import subprocess
    import sys

    doc = copy.deepcopy(DOC)
    _item(doc, "SW-OPT")["options"] = {"months": {"min": 1, "max": 12}}
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(doc))
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, "-m", "services.order"], cwd=root, capture_output=True, text=True,
                          env={**os.environ, "AIMIS_PRICE_BOOK": str(path)}, timeout=60)
    assert proc.returncode == 1
    assert "order service not started: price book" in proc.stderr and "SW-OPT.options.months" in proc.stderr
    assert "Traceback" not in proc.stderr


# ---------------------------------------------------------------- the registry's own consistency


def test_registry_derives_entitlement_and_order_constants():
    assert entitlement.LOT_SKUS == {"CI-QTY": CLOUD, "CI-ANNUAL": CLOUD, "AI-QTY": "ai_review"}
    assert entitlement.LICENCE_SKUS == {"SW-BASIC", "SW-OPT"}
    assert entitlement.ONE_TIME_SERVICES == {"SVC-DELIVERY", "SVC-SCHEDULED"}
    assert (entitlement.MAINTENANCE, entitlement.AI_PERPETUAL) == ("SVC-MAINTENANCE", "AI-PERPETUAL")
    assert entitlement.licence_feature("SW-BASIC", None) == "basic"
    assert entitlement.licence_feature("AI-PERPETUAL", None) == "ai_perpetual"
    assert entitlement.licence_feature("SW-OPT", "cloud_film") == "cloud_film"
    assert order.OFFLINE_ONLY == {"AI-PERPETUAL"}
    assert set(order.FEATURES) == set(REGISTRY["SW-OPT"].options()["feature"])  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [
    lambda: Sku("X", Kind.LOT, (Quantity("quantity", 1, 2),), Pricing.PER_UNIT),  # a lot without resource
    lambda: Sku("X", Kind.SERVICE, (), Pricing.ONCE, resource=CLOUD),
    lambda: Sku("X", Kind.LOT, (Bounded("months", 1, 2, ErrorCode.INVALID_DURATION),), Pricing.PER_UNIT,
                resource=CLOUD),  # a lot without quantity
    lambda: Sku("X", Kind.SERVICE, (Quantity("colour", 1, 2),), Pricing.ONCE),
    lambda: Sku("X", Kind.SERVICE, (Quantity("quantity", 1, 2),), Pricing.ONCE, price_by="quantity"),
    lambda: REGISTRY.plus(REGISTRY["AI-QTY"]),
])
def test_registry_refuses_an_inconsistent_entry(bad):
    with pytest.raises(ValueError):
        bad()
