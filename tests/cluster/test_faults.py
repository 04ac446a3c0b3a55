"""SPEC 10 fault test: 20,000 usage events for 50 organisations on three brokers with two replicas
of every service, while one broker is killed with -9 and later restarted, then one replica of
metering and one of entitlement are killed with -9. Every event takes effect exactly once, SPEC 4
conservation holds for every organisation, and nothing acknowledged is lost."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter
from datetime import timedelta

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from contracts import topics
from contracts.events import UsageDeductedData, UsageRejectedLedgerData
from tests.cluster.conftest import Replicated
from tests.e2e.helpers import assert_conservation, iso, now, of_kind, usage

pytestmark = pytest.mark.cluster

USES, ORGS, CHUNK = 20_000, 50, 500


async def send_all(replicated: Replicated, records: list[tuple[str, bytes]], faults: dict[int, object]) -> int:
    """Produce as the platform principal, a chunk at a time, each chunk until every record of it
    is acknowledged (a resend repeats ids, which the system must ignore); run `faults[i]` before
    chunk i. Returns how many chunks needed a resend."""
    p = AIOKafkaProducer(bootstrap_servers=replicated.cluster.bootstrap, acks="all", enable_idempotence=True,
                         request_timeout_ms=10_000, **replicated.cluster.options("platform"))
    await p.start()
    resent = 0
    try:
        for i in range(0, len(records), CHUNK):
            if (fault := faults.get(i)) is not None:
                await asyncio.to_thread(fault)  # type: ignore[arg-type]
            chunk = records[i:i + CHUNK]
            for attempt in range(30):
                try:
                    futures = [await p.send(topics.USAGE, value, key=key.encode()) for key, value in chunk]
                    await asyncio.gather(*futures)
                    break
                except KafkaError:
                    resent += 1
                    await asyncio.sleep(min(0.2 * 2 ** attempt, 3))
            else:
                raise AssertionError(f"chunk {i} never acknowledged")
    finally:
        await p.stop()
    return resent


async def test_every_use_takes_effect_once_through_broker_and_replica_kills(replicated: Replicated) -> None:
    admin = replicated.admin
    run = uuid.uuid4().hex[:6]
    orgs = [f"flt-{run}-{i:02d}" for i in range(ORGS)]
    for org in orgs:
        admin.record_agreement(org, f"AGR-{org}", iso(now() - timedelta(days=5)))
        admin.import_order(f"{org}-o1", org, [{"sku": "CI-QTY", "quantity": 1000, "storage_years": 5},
                                             {"sku": "AI-QTY", "quantity": 1000}],
                           iso(now() - timedelta(hours=1)), f"IMP-{org}")
    await until(lambda: all(admin.balances(o)["resources"]["cloud_inspection"]["purchased"] == 1000 for o in orgs),
                timeout=180, what="50 orgs credited")

    events = [usage(orgs[i % ORGS], "ai_review" if i % 10 == 0 else "cloud_inspection", quantity=1 + i % 5)
              for i in range(USES)]
    expected: Counter[tuple[str, str]] = Counter()
    for e in events:
        expected[(e["subject"], e["type"].removeprefix("aimis.usage."))] += e["data"]["quantity"]
    records = [(e["subject"], json.dumps(e).encode()) for e in events]

    procs = replicated.procs
    faults = {
        5_000: lambda: replicated.cluster.kill_broker(2),
        10_000: lambda: replicated.cluster.start_broker(2),
        15_000: lambda: (procs["metering"][0].kill9(), procs["entitlement"][0].kill9()),
    }
    started = time.monotonic()
    resent = await send_all(replicated, records, faults)
    print(f"\n[faults] {USES} events produced in {time.monotonic() - started:.0f} s ({resent} chunk resends)")

    admin = replicated.admin  # the replicas that survived
    def done() -> bool:
        for o in orgs:
            res = admin.balances(o)["resources"]
            if any(res[r]["used"] < expected[(o, r)] for r in ("cloud_inspection", "ai_review")):
                return False
        return True

    await until(done, timeout=600, what="every use deducted")
    print(f"[faults] all deducted {time.monotonic() - started:.0f} s after the first produce")

    by_org: dict[str, set[str]] = {o: set() for o in orgs}
    for e in events:
        by_org[e["subject"]].add(e["id"])
    for o in orgs:
        entries = admin.ledger_all(o)
        ids = [d["usage_id"] for d in of_kind(entries, UsageDeductedData)]
        assert len(ids) == len(set(ids)), f"{o}: a use deducted twice"
        assert set(ids) == by_org[o], f"{o}: {len(by_org[o] - set(ids))} uses lost"
        assert not of_kind(entries, UsageRejectedLedgerData), f"{o}: a use refused"
        res = admin.balances(o)["resources"]
        for r in ("cloud_inspection", "ai_review"):
            assert res[r]["used"] == expected[(o, r)], (o, r, res[r])
        assert_conservation(admin, o)
    for name, ps in procs.items():
        alive = [p for p in ps if p.proc is not None and p.proc.poll() is None]
        assert alive, f"no replica of {name} survived"


async def until(cond, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(cond):
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {timeout:.0f} s: {what}")
        await asyncio.sleep(1.0)
