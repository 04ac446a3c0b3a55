"""Issue 18 end to end: the account does not depend on arrival order (docs/decisions/arrival-order.md)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from contracts.events import ArrearsOffsetData, UsageDeductedData
from shared.clock import add_years
from tests.e2e.helpers import assert_conservation, buy, eventually, ledger, of_kind, onboard, parse, usage

pytestmark = pytest.mark.e2e


def ci(b):
    return b["resources"]["cloud_inspection"]


async def test_a_late_use_is_offset_by_the_purchase_that_preceded_its_arrival(stack, org_id):
    """The issue's example: the org buys 1,000; a use of 100 that occurred three minutes before
    the purchase arrives after it. As in occurrence order: arrears 0 and 900 available."""
    await onboard(stack.admin, org_id)
    order = await buy(stack.admin, org_id, [{"sku": "CI-QTY", "quantity": 1000, "storage_years": 5}])
    b = await eventually(lambda: stack.admin.balances(org_id), lambda b: ci(b)["purchased"] == 1000)
    [lot] = ci(b)["lots"]
    at = parse(lot["credited_at"]) - timedelta(minutes=3)
    late = usage(org_id, quantity=100, at=at)
    stack.admin.send_usage([late])
    b = await eventually(lambda: stack.admin.balances(org_id), lambda b: ci(b)["used"] == 100)
    assert (ci(b)["arrears"], ci(b)["available"], ci(b)["purchased"]) == (0, 900, 1000)
    entries = ledger(stack.admin, org_id)
    [d] = [d for d in of_kind(entries, UsageDeductedData) if d["usage_id"] == late["id"]]
    assert d["allocations"] == [] and d["arrears_quantity"] == 100  # no lot was valid when it occurred
    [off] = of_kind(entries, ArrearsOffsetData)  # ... and the lot credited since offset it at once
    assert off["lot_id"] == lot["lot_id"] and off["lot_id"].startswith(order["order_id"])
    assert [(o["usage_id"], o["quantity"]) for o in off["offsets"]] == [(late["id"], 100)]
    assert parse(off["offsets"][0]["retention_until"]) == add_years(at, 5)
    assert_conservation(stack.admin, org_id)
