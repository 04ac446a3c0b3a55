"""SPEC 4 end to end: each use takes effect exactly once through kill -9 of services and restarts of
Kafka and PostgreSQL."""

from __future__ import annotations

import asyncio
import json

import pytest

from contracts.events import UsageDeductedData
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
    deducted = [d for d in of_kind(ledger(stack.admin, org_id), UsageDeductedData)
                if d["resource"] == "cloud_inspection"]
    ids = [d["usage_id"] for d in deducted]
    assert len(ids) == len(set(ids)) == USES
    assert set(ids) == {e["id"] for e in events}
    assert_conservation(stack.admin, org_id)


async def test_every_use_takes_effect_once_through_restarts_of_kafka_and_postgresql(stack, org_id):
    if stack.infra.restart_kafka is None or stack.infra.restart_postgres is None:
        pytest.skip("the broker and database are not ours to restart (AIMIS_* or containers)")
    await onboard(stack.admin, org_id)
    await buy(stack.admin, org_id, [{"sku": "CI-QTY", "quantity": 1000, "storage_years": 3}])
    await eventually(lambda: stack.admin.balances(org_id),
                     lambda b: b["resources"]["cloud_inspection"]["purchased"] == 1000)
    first = [usage(org_id) for _ in range(400)]
    await send_to_kafka(stack.bootstrap, [(org_id, json.dumps(e).encode()) for e in first])
    # PostgreSQL goes away and comes back while those are processed.
    await asyncio.to_thread(stack.infra.restart_postgres)
    second = [usage(org_id) for _ in range(400)]
    await send_to_kafka(stack.bootstrap, [(org_id, json.dumps(e).encode()) for e in second])
    # Then the broker restarts (same data): consumers, producers and relays reconnect.
    await asyncio.to_thread(stack.infra.restart_kafka)
    third = [usage(org_id) for _ in range(400)]
    await send_to_kafka(stack.bootstrap, [(org_id, json.dumps(e).encode()) for e in third])

    total = len(first) + len(second) + len(third)
    b = await eventually(lambda: stack.admin.balances(org_id)["resources"]["cloud_inspection"],
                         lambda r: r["used"] >= total, timeout=180)
    assert (b["used"], b["available"], b["arrears"]) == (total, 0, total - 1000)
    ids = [d["usage_id"] for d in of_kind(ledger(stack.admin, org_id), UsageDeductedData)]
    assert len(ids) == len(set(ids)) == total
    for name, proc in stack.procs.items():
        assert proc.proc is not None and proc.proc.poll() is None, f"{name} died"
    assert_conservation(stack.admin, org_id)
