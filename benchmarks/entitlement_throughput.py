"""Deduction throughput of the entitlement service on this machine.

Starts one entitlement instance (consumers + outbox relay, in process), waits until all its consumers
hold their partitions, then produces N `deduction_requested` records (over several orgs that hold
lots) and measures the time from the first use committed until every use is (inbox, lots, arrears,
ledger, outbox). Prints deductions/second and batch size.

    .venv/bin/python benchmarks/entitlement_throughput.py [--uses 20000] [--orgs 20] [--max-records 2000]

Uses AIMIS_KAFKA_BOOTSTRAP / AIMIS_DATABASE_URL when set, else starts its own local Kafka and
PostgreSQL (tests/support/infra.py).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import uuid
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import asyncpg  # noqa: E402
from prometheus_client import REGISTRY  # noqa: E402

from contracts import topics  # noqa: E402
from services.entitlement.app import create_app  # noqa: E402
from tests.integration import test_entitlement_rules as rules  # noqa: E402  (its record builders)
from tests.support.infra import infra  # noqa: E402
from tests.support.kafka import producer, wait_until  # noqa: E402
from tests.support.services import serve_in_process  # noqa: E402


async def run(bootstrap: str, base_dsn: str, n_uses: int, n_orgs: int, max_records: int) -> None:
    dsn = await rules.new_database(base_dsn)
    s = rules.test_settings(bootstrap, dsn, batch_max_records=max_records, log_level="WARNING")
    group = f"bench-{uuid.uuid4().hex[:8]}"
    await rules.group_starts_at_end(bootstrap, group)
    rnd = random.Random(1)
    orgs = [f"bench-{uuid.uuid4().hex[:6]}-{i}" for i in range(n_orgs)]
    lots = [rules.line(0, "CI-QTY", quantity=100_000, storage_years=5), rules.line(1, "AI-QTY", quantity=100_000)]
    orders = [rules.order_paid(o, lots, paid_at=rules.now() - timedelta(days=1)) for o in orgs]
    occurred = rules.now() - timedelta(hours=1)
    uses = [rules.deduction(rnd.choice(orgs), "cloud_inspection" if rnd.random() < 0.7 else "ai_review",
                            rnd.randint(1, 3), occurred) for _ in range(n_uses)]
    prod = await producer(bootstrap)
    conn = await asyncpg.connect(dsn, server_settings={"search_path": "entitlement"})
    try:
        async with serve_in_process(create_app(s, group_id=group)):  # credit the lots, then stop
            await rules.send(prod, *orders)
            await wait_until(lambda: conn.fetchval("SELECT count(*) = $1 FROM fulfilled_orders", n_orgs), 60)
        app = create_app(s, group_id=group)
        async with serve_in_process(app):
            # The instance's consumers (deductions, orders, expiry commands) join the group one after
            # another, and each join pauses the others for a rebalance (1-5 s, or none, by luck): the
            # backlog is loaded once every consumer holds its partitions. It is produced ~5 times
            # faster than it is consumed, so the batches are full from the first.
            await wait_until(app.state.runtime.consumers_assigned, 60, interval=0.01)
            for i in range(0, n_uses, 5000):
                await rules.send(prod, *uses[i:i + 5000])
            await wait_until(lambda: conn.fetchval("SELECT count(*) = $1 FROM inbox WHERE stream = 'usage'", n_uses),
                             600, interval=0.05)
            span = await conn.fetchval(
                "SELECT extract(epoch FROM clock_timestamp() - min(processed_at)) FROM inbox WHERE stream = 'usage'")
            await wait_until(lambda: conn.fetchval("SELECT count(*) = 0 FROM outbox_state WHERE state = 'unsent'"), 300)
            drained = await conn.fetchval(
                "SELECT extract(epoch FROM clock_timestamp() - min(processed_at)) FROM inbox WHERE stream = 'usage'")
            labels = {"service": "entitlement", "topic": topics.DEDUCTIONS}
            batches = REGISTRY.get_sample_value("aimis_batch_seconds_count", labels) or 0
            msgs = REGISTRY.get_sample_value("aimis_messages_total", {**labels, "outcome": "ok"}) or 0
            secs = REGISTRY.get_sample_value("aimis_batch_seconds_sum", labels) or 0
    finally:
        await conn.close()
        await prod.stop()
    span, drained = float(span), float(drained)
    print(f"uses={n_uses} orgs={n_orgs} max_records={max_records}")
    print(f"deductions/second: {n_uses / span:.0f} ({n_uses} uses committed in {span:.2f}s: "
          f"inbox, lots, arrears, ledger, outbox)")
    print(f"deductions/second including the ledger published to Kafka: {n_uses / drained:.0f} ({drained:.2f}s)")
    print(f"batches: {batches:.0f}, mean batch size: {msgs / batches if batches else 0:.0f}, "
          f"mean batch transaction: {1000 * secs / batches if batches else 0:.0f} ms")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--uses", type=int, default=20_000)
    ap.add_argument("--orgs", type=int, default=20)
    ap.add_argument("--max-records", type=int, default=2000)
    a = ap.parse_args()
    with infra() as i:
        asyncio.run(run(i.bootstrap, i.dsn, a.uses, a.orgs, a.max_records))


if __name__ == "__main__":
    main()
