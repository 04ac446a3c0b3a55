"""SPEC 2.3 end to end: AI review packages, no arrears, the perpetual offline licence, the allowance."""

from __future__ import annotations

import pytest

from cli.client import CliError
from contracts.events import UsageDeductedData, UsageRejectedLedgerData
from tests.e2e.helpers import assert_conservation, buy, eventually, ledger, now, of_kind, onboard, usage

pytestmark = pytest.mark.e2e


def rejections(admin, org, usage_id):
    return [d for d in of_kind(ledger(admin, org), UsageRejectedLedgerData) if d["usage_id"] == usage_id]


async def test_ai_review_without_balance_is_rejected_insufficient_balance_with_nothing_deducted(stack, org_id):
    await onboard(stack.admin, org_id)
    await buy(stack.admin, org_id, [{"sku": "AI-QTY", "quantity": 1000}])
    await eventually(lambda: stack.admin.allowance(org_id), lambda a: a["remaining"] == 1000)
    stack.admin.send_usage([usage(org_id, "ai_review", quantity=999)])
    a = await eventually(lambda: stack.admin.allowance(org_id), lambda a: a["remaining"] == 1)
    assert a["allowed"] is True
    too_many = usage(org_id, "ai_review", quantity=2)
    stack.admin.send_usage([too_many])
    [r] = await eventually(lambda: rejections(stack.admin, org_id, too_many["id"]), bool)
    assert r["reason"] == "INSUFFICIENT_BALANCE"
    b = stack.admin.balances(org_id)["resources"]["ai_review"]
    assert (b["available"], b["used"], b["arrears"]) == (1, 999, 0)
    last = usage(org_id, "ai_review", quantity=1)
    stack.admin.send_usage([last])
    a = await eventually(lambda: stack.admin.allowance(org_id), lambda a: a["remaining"] == 0)
    assert a == {"allowed": False, "remaining": 0, "offline_licence": False}
    assert_conservation(stack.admin, org_id)


async def test_ai_packages_stack_and_renewal_records_list_every_package(stack, org_id):
    await onboard(stack.admin, org_id)
    first = await buy(stack.admin, org_id, [{"sku": "AI-QTY", "quantity": 1000}])
    second = await buy(stack.admin, org_id, [{"sku": "AI-QTY", "quantity": 2000}])
    b = await eventually(lambda: stack.admin.balances(org_id)["resources"]["ai_review"],
                         lambda r: r["purchased"] == 3000)
    assert {lot["order_id"] for lot in b["lots"]} == {first["order_id"], second["order_id"]}
    assert b["available"] == 3000


async def test_ai_perpetual_is_offline_only_and_counts_offline_reviews_without_deduction(stack, org_id):
    await onboard(stack.admin, org_id)
    with pytest.raises(CliError) as e:
        stack.admin.place_order(org_id, [{"sku": "AI-PERPETUAL"}])
    assert (e.value.status, e.value.code, e.value.line) == (422, "OFFLINE_ONLY_PRODUCT", 0)
    await buy(stack.admin, org_id, [{"sku": "AI-PERPETUAL"}], paid_at=now())
    await eventually(lambda: stack.admin.allowance(org_id), lambda a: a["offline_licence"])
    offline = usage(org_id, "ai_review", quantity=50, channel="offline")
    stack.admin.send_usage([offline])
    [d] = await eventually(
        lambda: [d for d in of_kind(ledger(stack.admin, org_id), UsageDeductedData) if d["usage_id"] == offline["id"]],
        bool)
    assert d["allocations"] == [] and d["offline_licence"] is True and d["arrears_quantity"] == 0
    b = stack.admin.balances(org_id)["resources"]["ai_review"]
    assert b["available"] == 0 and b["offline_licence"] is True
    assert_conservation(stack.admin, org_id)


async def test_offline_review_without_perpetual_licence_is_rejected_no_offline_licence(stack, org_id):
    await onboard(stack.admin, org_id)
    await buy(stack.admin, org_id, [{"sku": "AI-QTY", "quantity": 1000}])
    await eventually(lambda: stack.admin.allowance(org_id), lambda a: a["remaining"] == 1000)
    offline = usage(org_id, "ai_review", channel="offline")
    stack.admin.send_usage([offline])
    [r] = await eventually(lambda: rejections(stack.admin, org_id, offline["id"]), bool)
    assert r["reason"] == "NO_OFFLINE_LICENCE"
    assert stack.admin.allowance(org_id)["remaining"] == 1000
