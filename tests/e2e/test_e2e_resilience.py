"""SPEC 4 end to end: each use takes effect exactly once through kill -9 of metering and entitlement."""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.e2e.helpers import assert_conservation, buy, eventually, ledger, of_kind, onboard, send_to_kafka, usage

pytestmark = pytest.mark.e2e

USES = 3000


async def test_every_use_takes_effect_once_through_kill9_of_metering_and_entitlement(stack, org_id):
    await onboard(stack.admin, org_id)
    await buy(stack.admin, org_id, [{"sku": "CI-QTY", "quantity": 2000, "storage_years": 2}])
    await eventually(lambda: stack.admin.balances(org_id),
                     lambda b: b["resources"]["cloud_inspection"]["purchased"] == 2000)
    events = [usage(org_id, quantity=1) for _ in range(USES)]
    # Some duplicates too: the platform resends a few events.
    records = [(org_id, json.dumps(e).encode()) for e in events] + [
        (org_id, json.dumps(e).encode()) for e in events[::100]]

    async def play() -> None:
        for i in range(0, len(records), 200):
            await send_to_kafka(stack.bootstrap, records[i:i + 200])

    producing = asyncio.create_task(play())
    # Kill both once some uses have been deducted, while the stream is still arriving.
    used_at_kill = await eventually(
        lambda: stack.admin.balances(org_id)["resources"]["cloud_inspection"]["used"], lambda u: u >= 300)
    stack.procs["metering"].kill9()
    stack.procs["entitlement"].kill9()
    assert used_at_kill < USES, "the kill must land mid-stream"
    await producing
    await stack.procs["entitlement"].start()
    await stack.procs["metering"].start()

    b = await eventually(lambda: stack.admin.balances(org_id)["resources"]["cloud_inspection"],
                         lambda r: r["used"] >= USES, timeout=120)
    assert (b["used"], b["available"], b["arrears"]) == (USES, 0, USES - 2000)
    deducted = [d for d in of_kind(ledger(stack.admin, org_id), "usage_deducted") if d["resource"] == "cloud_inspection"]
    ids = [d["usage_id"] for d in deducted]
    assert len(ids) == len(set(ids)) == USES
    assert set(ids) == {e["id"] for e in events}
    assert_conservation(stack.admin, org_id)
