"""SPEC 2.1 and 2.2 end to end: agreements, cloud-inspection lots, expiring-first, arrears, expiry."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from cli.client import CliError
from contracts import topics
from contracts.events import ArrearsOffsetData, LotExpiredData, UsageDeductedData
from tests.e2e.conftest import GRACE_S
from tests.e2e.helpers import (
    assert_conservation,
    buy,
    eventually,
    ledger,
    now,
    of_kind,
    onboard,
    parse,
    send_to_kafka,
    usage,
)
from tests.support.kafka import TopicReader

pytestmark = pytest.mark.e2e


def ci(b):
    return b["resources"]["cloud_inspection"]


async def test_order_without_agreement_is_rejected_agreement_required(stack, org_id):
    with pytest.raises(CliError) as e:
        stack.admin.place_order(org_id, [{"sku": "CI-QTY", "quantity": 1000, "storage_years": 1}])
    assert (e.value.status, e.value.code) == (422, "AGREEMENT_REQUIRED")


async def test_usage_of_org_without_agreement_is_rejected_unknown_org(stack, org_id):
    async with TopicReader(stack.bootstrap, topics.USAGE_REJECTED) as rejected:
        ev = usage(org_id)
        await send_to_kafka(stack.bootstrap, [(org_id, json.dumps(ev).encode())])
        [r] = await rejected.wait_for(lambda e: e["data"]["original"].get("id") == ev["id"]
                                      if isinstance(e["data"]["original"], dict) else False)
        assert r["data"]["reason"] == "UNKNOWN_ORG"


async def test_billing_example_priced_by_quantity_and_annually(stack):
    catalog = stack.admin.call("order", "GET", "/v1/catalog")
    items = {i["sku"]: i for i in catalog["items"]}
    org = f"price-{catalog['price_book_version']}"[:60].replace(":", "-")
    await onboard(stack.admin, org)
    by_qty = stack.admin.place_order(org, [{"sku": "CI-QTY", "quantity": 10_000, "storage_years": 15}])
    annual = stack.admin.place_order(org, [{"sku": "CI-ANNUAL", "quantity": 10_000, "storage_years": 15}])
    from decimal import Decimal

    unit15 = Decimal(items["CI-QTY"]["unit_prices"]["15"])
    per_year = Decimal(items["CI-ANNUAL"]["unit_price"])
    assert Decimal(by_qty["total"]) == 10_000 * unit15
    assert Decimal(annual["total"]) == 10_000 * per_year * 15
    assert by_qty["price_book_version"] == catalog["price_book_version"]


@pytest.mark.parametrize("quantity, code", [
    (999, "QUANTITY_BELOW_MINIMUM"), (1500, "QUANTITY_NOT_MULTIPLE"), (10_001_000, "QUANTITY_TOO_LARGE"),
])
async def test_inspection_quantity_rules(stack, org_id, quantity, code):
    await onboard(stack.admin, org_id)
    with pytest.raises(CliError) as e:
        stack.admin.place_order(org_id, [{"sku": "CI-QTY", "quantity": quantity, "storage_years": 1}])
    assert (e.value.status, e.value.code, e.value.line) == (422, code, 0)


@pytest.mark.parametrize("line", [
    {"sku": "CI-QTY", "quantity": 1000, "storage_years": 4},
    {"sku": "CI-ANNUAL", "quantity": 1000, "storage_years": 31},
])
async def test_storage_duration_rules(stack, org_id, line):
    await onboard(stack.admin, org_id)
    with pytest.raises(CliError) as e:
        stack.admin.place_order(org_id, [line])
    assert (e.value.status, e.value.code) == (422, "INVALID_STORAGE_YEARS")


async def test_lot_is_valid_one_calendar_year_from_paid_at_feb29_to_feb28(stack, org_id):
    await onboard(stack.admin, org_id)
    paid = parse("2024-02-29T10:00:00+00:00")
    await buy(stack.admin, org_id, [{"sku": "CI-QTY", "quantity": 1000, "storage_years": 1}], paid_at=paid)
    b = await eventually(lambda: stack.admin.balances(org_id), lambda b: ci(b)["lots"])
    lot = ci(b)["lots"][0]
    assert parse(lot["credited_at"]) == paid
    assert parse(lot["expires_at"]) == parse("2025-02-28T10:00:00+00:00")


async def test_usage_draws_the_lot_that_expires_first_and_spans_lots_with_its_retention(stack, org_id):
    await onboard(stack.admin, org_id)
    older = await buy(stack.admin, org_id, [{"sku": "CI-QTY", "quantity": 1000, "storage_years": 5}],
                      paid_at=now() - timedelta(days=200))
    newer = await buy(stack.admin, org_id, [{"sku": "CI-QTY", "quantity": 2000, "storage_years": 10}])
    await eventually(lambda: stack.admin.balances(org_id), lambda b: ci(b)["purchased"] == 3000)
    at = now()  # both lots are valid now (a lot only covers uses that occurred after its credit)
    ev = usage(org_id, quantity=1500, at=at)
    stack.admin.send_usage([ev])
    b = await eventually(lambda: stack.admin.balances(org_id), lambda b: ci(b)["used"] == 1500)
    lots = {lot["order_id"]: lot for lot in ci(b)["lots"]}
    assert lots[older["order_id"]]["remaining"] == 0 and lots[older["order_id"]]["status"] == "depleted"
    assert lots[newer["order_id"]]["remaining"] == 1500
    [d] = [d for d in of_kind(ledger(stack.admin, org_id), UsageDeductedData) if d["usage_id"] == ev["id"]]
    years = [(a["quantity"], parse(a["retention_until"]).year - at.year) for a in d["allocations"]]
    assert years == [(1000, 5), (500, 10)]
    assert d["arrears_quantity"] == 0
    assert_conservation(stack.admin, org_id)


async def test_lots_expiring_together_are_drawn_by_credit_time_then_smaller_lot_id(stack, org_id):
    await onboard(stack.admin, org_id)
    order = await buy(stack.admin, org_id, [{"sku": "CI-QTY", "quantity": 1000, "storage_years": 15},
                                            {"sku": "CI-QTY", "quantity": 1000, "storage_years": 1}])
    b = await eventually(lambda: stack.admin.balances(org_id), lambda b: ci(b)["purchased"] == 2000)
    first, second = sorted(ci(b)["lots"], key=lambda lot: lot["lot_id"])
    assert first["expires_at"] == second["expires_at"] and first["credited_at"] == second["credited_at"]
    ev = usage(org_id, quantity=1200)
    stack.admin.send_usage([ev])
    b = await eventually(lambda: stack.admin.balances(org_id), lambda b: ci(b)["used"] == 1200)
    remaining = {lot["lot_id"]: lot["remaining"] for lot in ci(b)["lots"]}
    assert remaining == {first["lot_id"]: 0, second["lot_id"]: 800}
    assert first["lot_id"].startswith(order["order_id"])
    assert_conservation(stack.admin, org_id)


async def test_storage_beyond_balance_is_arrears_offset_oldest_first_by_next_lot(stack, org_id):
    await onboard(stack.admin, org_id)
    await buy(stack.admin, org_id, [{"sku": "CI-QTY", "quantity": 1000, "storage_years": 1}])
    await eventually(lambda: stack.admin.balances(org_id), lambda b: ci(b)["purchased"] == 1000)
    start = now()
    first = usage(org_id, quantity=1200, at=start)
    second = usage(org_id, quantity=300, at=start + timedelta(milliseconds=1))
    stack.admin.send_usage([first, second])
    b = await eventually(lambda: stack.admin.balances(org_id), lambda b: ci(b)["used"] == 1500)
    assert (ci(b)["arrears"], ci(b)["available"]) == (500, 0)
    renewal = await buy(stack.admin, org_id, [{"sku": "CI-QTY", "quantity": 1000, "storage_years": 3}])
    b = await eventually(lambda: stack.admin.balances(org_id), lambda b: ci(b)["purchased"] == 2000)
    assert (ci(b)["arrears"], ci(b)["available"]) == (0, 500)
    [off] = of_kind(ledger(stack.admin, org_id), ArrearsOffsetData)
    assert off["lot_id"].startswith(renewal["order_id"])
    assert [(o["usage_id"], o["quantity"]) for o in off["offsets"]] == [(first["id"], 200), (second["id"], 300)]
    assert all(parse(o["retention_until"]).year - parse(u["time"]).year == 3
               for o, u in zip(off["offsets"], [first, second], strict=False))
    assert_conservation(stack.admin, org_id)


async def test_duplicate_usage_is_deducted_once(stack, org_id):
    await onboard(stack.admin, org_id)
    await buy(stack.admin, org_id, [{"sku": "CI-QTY", "quantity": 1000, "storage_years": 1}])
    await eventually(lambda: stack.admin.balances(org_id), lambda b: ci(b)["purchased"] == 1000)
    ev = usage(org_id, quantity=7)
    marker = usage(org_id, quantity=1)
    raw = json.dumps(ev).encode()
    await send_to_kafka(stack.bootstrap, [(org_id, raw), (org_id, raw)])
    stack.admin.send_usage([ev])
    stack.admin.send_usage([marker])  # per-org order: once the marker is deducted, the repeats were seen
    await eventually(lambda: stack.admin.balances(org_id),
                     lambda b: any(d["usage_id"] == marker["id"]
                                   for d in of_kind(ledger(stack.admin, org_id), UsageDeductedData)))
    assert ci(stack.admin.balances(org_id))["used"] == 8
    assert_conservation(stack.admin, org_id)


async def test_lot_remainder_forfeited_at_expiry_and_late_use_within_grace_still_draws(stack, org_id):
    await onboard(stack.admin, org_id)
    expires = now() + timedelta(seconds=3)
    paid = expires.replace(year=expires.year - 1)
    order = await buy(stack.admin, org_id, [{"sku": "CI-QTY", "quantity": 1000, "storage_years": 2}], paid_at=paid)
    await eventually(lambda: stack.admin.balances(org_id), lambda b: ci(b)["purchased"] == 1000)
    # A use that occurred before expiry but arrives after it, within the grace, draws on the lot.
    late = usage(org_id, quantity=10, at=expires - timedelta(seconds=1))
    await eventually(lambda: now(), lambda t: t > expires + timedelta(seconds=0.3), timeout=10)
    stack.admin.send_usage([late])
    b = await eventually(lambda: stack.admin.balances(org_id), lambda b: ci(b)["used"] == 10)
    assert ci(b)["arrears"] == 0
    # After the grace, the remainder is forfeited exactly once.
    b = await eventually(lambda: stack.admin.balances(org_id), lambda b: ci(b)["forfeited"] == 990,
                         timeout=GRACE_S + 30)
    lot = ci(b)["lots"][0]
    assert lot["status"] == "expired" and lot["order_id"] == order["order_id"]
    assert ci(b)["available"] == 0
    expired = of_kind(ledger(stack.admin, org_id), LotExpiredData)
    assert [e["forfeited"] for e in expired] == [990]
    # A use after expiry (beyond the lot) becomes arrears.
    after = usage(org_id, quantity=5)
    stack.admin.send_usage([after])
    b = await eventually(lambda: stack.admin.balances(org_id), lambda b: ci(b)["used"] == 15)
    assert ci(b)["arrears"] == 5
    assert_conservation(stack.admin, org_id)


async def test_rejected_usage_reasons_on_the_rejected_topic(stack, org_id):
    await onboard(stack.admin, org_id)
    unknown_type = {**usage(org_id), "type": "aimis.usage.teleport"}
    bad_qty = usage(org_id)
    bad_qty["data"]["quantity"] = 0
    future = usage(org_id, at=now() + timedelta(minutes=10))
    records = [
        (org_id, b"{this is not json"),
        (org_id, json.dumps(unknown_type).encode()),
        (org_id, json.dumps(bad_qty).encode()),
        (org_id, json.dumps(future).encode()),
    ]
    async with TopicReader(stack.bootstrap, topics.USAGE_REJECTED) as rejected:
        await send_to_kafka(stack.bootstrap, records)

        def mine(e):
            o = e["data"]["original"]
            return o == "{this is not json" or (isinstance(o, dict) and o.get("subject") == org_id)

        found = await rejected.wait_for(mine, count=4)
    reasons = sorted(e["data"]["reason"] for e in found)
    assert reasons == ["INVALID_QUANTITY", "MALFORMED", "TIME_IN_FUTURE", "UNKNOWN_TYPE"]
    assert all(e["type"] == "aimis.usage.rejected" for e in found)
