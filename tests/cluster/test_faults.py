"""SPEC 10 fault test: 20,000 usage events for 50 organisations on three brokers with two replicas
of every service, while one broker is killed with -9 and later restarted, then one replica of
metering and one of entitlement are killed with -9. Every event takes effect exactly once, SPEC 4
conservation holds for every organisation, and nothing acknowledged is lost."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from datetime import timedelta

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from contracts import topics
from contracts.events import UsageDeductedData, UsageRejectedLedgerData
from tests.cluster.conftest import Replicated
from tests.e2e.helpers import assert_conservation, iso, now, of_kind, usage

pytestmark = pytest.mark.cluster

USES, ORGS, CHUNK = 20_000, 50, 500
WAIT_S = 300  # all deducted ~30 s after the first produce here; more is a hang, to diagnose


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


@pytest.mark.timeout(WAIT_S + 300)  # the wait fails first, and says where the uses stopped
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

    try:
        await until(done, timeout=WAIT_S, what="every use deducted")
    except AssertionError:
        print(await diagnose(replicated, orgs, expected), flush=True)
        raise
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


async def diagnose(replicated: Replicated, orgs: list[str], expected: Counter[tuple[str, str]]) -> str:
    """Where the uses stopped, when they did not all arrive: what each organisation lacks, each
    outbox's rows by state, and how far each consumer group has committed on each partition."""
    lines = ["[faults] not every use was deducted:"]
    short = []
    for o in orgs:
        res = replicated.admin.balances(o)["resources"]
        short += [f"{o}/{r} {res[r]['used']}/{expected[(o, r)]}" for r in ("cloud_inspection", "ai_review")
                  if res[r]["used"] != expected[(o, r)]]
    lines.append(f"  short ({len(short)}): " + ", ".join(short[:20]))
    for ps in replicated.procs.values():
        for p in ps:
            if p.proc is not None and p.proc.poll() is None:
                lines.append(f"  {p.label} /readyz: {await asyncio.to_thread(_readyz, p.url)}")
    conn = await asyncpg.connect(replicated.dsn)
    try:
        for schema in ("metering", "entitlement"):
            states = await conn.fetch(f"SELECT state, count(*) AS n, min(seq) AS first, max(seq) AS last"
                                      f" FROM {schema}.outbox_state GROUP BY state ORDER BY state")
            cursor = await conn.fetchval(f"SELECT sent_upto FROM {schema}.outbox_cursor")
            lines.append(f"  {schema} outbox cursor {cursor}: " + "; ".join(
                f"{r['state']} {r['n']} (seq {r['first']}-{r['last']})" for r in states))
        activity = await conn.fetch("SELECT application_name, state, wait_event_type, wait_event,"
                                    " now() - xact_start AS xact, left(query, 80) AS query FROM pg_stat_activity"
                                    " WHERE application_name LIKE 'aimis-%' AND state <> 'idle'")
        lines += [f"  pg: {dict(r)}" for r in activity]
    finally:
        await conn.close()
    admin = AIOKafkaAdminClient(bootstrap_servers=replicated.cluster.bootstrap, **replicated.cluster.options("admin"))
    ends_of = AIOKafkaConsumer(bootstrap_servers=replicated.cluster.bootstrap, **replicated.cluster.options("admin"))
    await admin.start()
    await ends_of.start()
    try:
        for group, topic in (("aimis-metering", topics.USAGE), ("aimis-entitlement", topics.DEDUCTIONS)):
            [desc] = await admin.describe_topics([topic])
            tps = [TopicPartition(topic, p["partition"]) for p in desc["partitions"]]
            ends = await ends_of.end_offsets(tps)
            committed = await admin.list_consumer_group_offsets(group, partitions=tps)
            lag = {tp.partition: ends[tp] - (committed[tp].offset if tp in committed else 0) for tp in tps}
            lines.append(f"  {group} on {topic}, lag by partition: {lag}")
    finally:
        await ends_of.stop()
        await admin.close()
    return "\n".join(lines)


def _readyz(url: str) -> str:
    try:
        with urllib.request.urlopen(f"{url}/readyz", timeout=10) as r:
            return r.read().decode()[:500]
    except urllib.error.HTTPError as e:
        return f"{e.code} {e.read().decode()[:500]}"
    except OSError as e:
        return repr(e)
