"""Exactly-once deduction through a consumer-group rebalance and through kill -9 + restart.

The expected result is computed with the pure domain model applied one use at a time in each
org's stream order (Kafka keeps one org's records in order), then compared with the database,
the HTTP balances and the ledger topic.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import defaultdict
from datetime import timedelta
from typing import Any

import asyncpg
import httpx
import pytest

from contracts import topics
from services.entitlement import domain
from services.entitlement.app import create_app
from services.entitlement.domain import Account, Deducted, Use
from tests.integration.test_entitlement_rules import (
    SECRET,
    PinnableClock,
    deduction,
    group_starts_at_end,
    line,
    new_database,
    now,
    order_paid,
    send,
    test_settings,
)
from tests.support.kafka import TopicReader, producer, wait_until
from tests.support.services import ServiceProcess, bearer, serve_in_process

pytestmark = pytest.mark.integration


def workload(n_orgs: int, n_uses: int, seed: int) -> tuple[list[Any], list[Any]]:
    """Orders crediting each org (two cloud lots, one AI lot) and `n_uses` deductions that drain
    them into arrears and INSUFFICIENT_BALANCE rejections."""
    rnd = random.Random(seed)
    tag = uuid.uuid4().hex[:6]
    orgs = [f"org-{tag}-{i}" for i in range(n_orgs)]
    paid = now() - timedelta(days=30)
    orders = [order_paid(o, [line(0, "CI-QTY", quantity=1000, storage_years=5),
                             line(1, "CI-ANNUAL", quantity=1000, storage_years=2),
                             line(2, "AI-QTY", quantity=1000)], paid_at=paid) for o in orgs]
    occurred = now() - timedelta(days=1)
    uses = [deduction(rnd.choice(orgs), "cloud_inspection" if rnd.random() < 0.7 else "ai_review",
                      rnd.randint(1, 3), occurred + timedelta(milliseconds=i)) for i in range(n_uses)]
    return orders, uses


def expected(orders: list[Any], uses: list[Any]) -> tuple[dict[str, Any], dict[tuple[str, str], Account]]:
    """Outcome per usage id and the final account per org+resource, one use at a time."""
    at = now()
    accounts: dict[tuple[str, str], Account] = {}
    for o in orders:
        for res in domain.RESOURCES:
            accounts[(o.subject, res)] = Account(res, timedelta(seconds=2))
        for l in o.data.lines:
            res = domain.LOT_SKUS[l.sku]
            lot = domain.new_lot(f"{o.data.order_id}.{l.line}", l.quantity,
                                 l.storage_years if res == domain.CLOUD else None, o.data.paid_at)
            accounts[(o.subject, res)].apply(("credit", lot), at)
    outcomes = {}
    for u in uses:
        d = u.data
        acc = accounts[(d.org_id, d.resource)]
        acc.apply(Use(d.usage_id, d.resource, d.quantity, d.occurred_at, d.channel), at)
        outcomes[d.usage_id] = acc.ledger[-1][1]
    return outcomes, accounts


async def db(dsn: str) -> asyncpg.Connection:
    return await asyncpg.connect(dsn, server_settings={"search_path": "entitlement"})


async def assert_exact(conn: asyncpg.Connection, url: str, orders, uses, ledger: TopicReader) -> None:
    want, accounts = expected(orders, uses)
    # the database ledger: exactly one entry per use, with the outcome one-by-one processing gives
    rows = await conn.fetch(
        """SELECT type, data FROM ledger WHERE type IN ('aimis.ledger.usage_deducted', 'aimis.ledger.usage_rejected')
           AND org_id = ANY($1::text[])""", [o.subject for o in orders])
    import json
    got = defaultdict(list)
    for r in rows:
        data = r["data"] if isinstance(r["data"], dict) else json.loads(r["data"])
        got[data["usage_id"]].append((r["type"], data))
    assert len(rows) == len(uses) and set(got) == set(want), "every use exactly once"
    for uid, outcome in want.items():
        (kind, data), = got[uid]
        if isinstance(outcome, Deducted):
            assert kind == "aimis.ledger.usage_deducted"
            assert [(a["lot_id"], a["quantity"]) for a in data["allocations"]] == \
                [(a.lot_id, a.quantity) for a in outcome.allocations]
            assert data["arrears_quantity"] == outcome.arrears_quantity
        else:
            assert kind == "aimis.ledger.usage_rejected" and data["reason"] == outcome.reason
    # balances (HTTP) equal the model's; conservation holds
    async with httpx.AsyncClient(base_url=url, headers=bearer(SECRET)) as c:
        for o in orders:
            body = (await c.get(f"/v1/orgs/{o.subject}/balances")).json()["resources"]
            for res in domain.RESOURCES:
                acc, bal = accounts[(o.subject, res)], body[res]
                cnt = acc.book.counters
                assert {l["lot_id"]: l["remaining"] for l in bal["lots"]} == \
                    {l.lot_id: l.remaining for l in acc.book.lots.values()}
                assert bal["used"] == cnt.drawn_by_usage + cnt.arrears_recorded
                assert bal["arrears"] == cnt.arrears_recorded - cnt.arrears_offset
                assert bal["purchased"] == bal["available"] + cnt.drawn_by_usage + cnt.arrears_offset + bal["forfeited"]
    # the ledger topic: every use published, never two different entries for one use
    ids = {u.id for u in uses}
    found = await ledger.wait_for(lambda e: e["type"].startswith("aimis.ledger.usage_")
                                  and e["data"]["usage_id"] in ids, count=len(ids), timeout=120,
                                  distinct=lambda e: e["data"]["usage_id"])  # a restart repeats some
    event_ids_per_use = defaultdict(set)
    for e in found:
        event_ids_per_use[e["data"]["usage_id"]].add(e["id"])
    assert set(event_ids_per_use) == ids
    assert all(len(v) == 1 for v in event_ids_per_use.values()), "a redelivery may repeat an event, never add one"


async def paced(prod, events: list[Any], chunk: int, pause_s: float, progress: list[int],
                gates: tuple[tuple[int, asyncio.Event], ...] = ()) -> None:
    """Stream `events` in chunks; past each gate's threshold, trickle (10 per 0.25 s) until the gate
    opens, so records keep flowing while an instance joins or leaves."""
    i = 0
    while i < len(events):
        slow = any(i >= at and not ev.is_set() for at, ev in gates)
        n = 10 if slow else chunk
        await send(prod, *events[i:i + n])
        i += n
        progress[0] = i
        await asyncio.sleep(0.25 if slow else pause_s)  # pacing the producer, not awaiting a condition


async def test_rebalance_between_two_instances_never_double_deducts_or_loses_a_use(real_infra):
    dsn = await new_database(real_infra.dsn)
    s = test_settings(real_infra.bootstrap, dsn)
    group = f"t-ent-rb-{uuid.uuid4().hex[:8]}"
    await group_starts_at_end(real_infra.bootstrap, group)
    orders, uses = workload(n_orgs=8, n_uses=2000, seed=7)
    prod = await producer(real_infra.bootstrap)
    ledger = await TopicReader(real_infra.bootstrap, topics.LEDGER).start()
    conn = None
    a_cm = serve_in_process(create_app(s, PinnableClock(), group_id=group))
    b_cm = serve_in_process(create_app(s, PinnableClock(), group_id=group))
    try:
        await a_cm.__aenter__()
        conn = await db(dsn)
        await send(prod, *orders)
        await wait_until(lambda: conn.fetchval("SELECT count(*) = $1 FROM fulfilled_orders", len(orders)), 60)
        progress, b_joined, a_left = [0], asyncio.Event(), asyncio.Event()
        stream = asyncio.create_task(paced(prod, uses, 50, 0.05, progress, ((600, b_joined), (1300, a_left))))
        await wait_until(lambda: progress[0] >= 600, 60)
        url_b = await b_cm.__aenter__()  # B joins: the group rebalances mid-stream
        b_joined.set()
        await wait_until(lambda: progress[0] >= 1300, 60)
        assert not stream.done(), "the stream is still running when A leaves"
        await a_cm.__aexit__(None, None, None)  # A leaves: a second rebalance
        a_cm = None
        a_left.set()
        assert not stream.done()
        await stream
        await wait_until(
            lambda: conn.fetchval("SELECT count(*) = $1 FROM inbox WHERE stream = 'usage'", len(uses)), 120
        )
        await assert_exact(conn, url_b, orders, uses, ledger)
    finally:
        if conn:
            await conn.close()
        for cm in (a_cm, b_cm):
            if cm is not None:
                try:
                    await cm.__aexit__(None, None, None)
                except Exception:  # noqa: BLE001 - not started
                    pass
        await ledger.stop()
        await prod.stop()


async def test_kill9_mid_stream_then_restart_leaves_every_balance_and_the_ledger_exact(real_infra, tmp_path):
    dsn = await new_database(real_infra.dsn)
    group = f"t-ent-k9-{uuid.uuid4().hex[:8]}"
    await group_starts_at_end(real_infra.bootstrap, group)
    env = {"AIMIS_KAFKA_BOOTSTRAP": real_infra.bootstrap, "AIMIS_DATABASE_URL": dsn, "AIMIS_AUTH_SECRET": SECRET,
           "AIMIS_ENTITLEMENT_GROUP_ID": group, "AIMIS_LATE_USAGE_GRACE_S": "2", "AIMIS_LOG_LEVEL": "WARNING"}
    orders, uses = workload(n_orgs=6, n_uses=10_000, seed=11)
    prod = await producer(real_infra.bootstrap)
    ledger = await TopicReader(real_infra.bootstrap, topics.LEDGER).start()
    first = await ServiceProcess("entitlement", dict(env), tmp_path).start()
    second = None
    conn = await db(dsn)
    try:
        await send(prod, *orders)
        await wait_until(lambda: conn.fetchval("SELECT count(*) = $1 FROM fulfilled_orders", len(orders)), 60)
        progress, killed = [0], asyncio.Event()
        stream = asyncio.create_task(paced(prod, uses, 500, 0.05, progress, ((4000, killed),)))
        await wait_until(lambda: conn.fetchval("SELECT count(*) >= 3000 FROM inbox WHERE stream = 'usage'"), 120,
                         interval=0.02)
        first.kill9()
        killed.set()
        done_at_kill = await conn.fetchval("SELECT count(*) FROM inbox WHERE stream = 'usage'")
        assert done_at_kill < len(uses), "the kill landed in the middle of the stream"
        await stream
        second = await ServiceProcess("entitlement", dict(env, AIMIS_ENTITLEMENT_PORT=str(first.port)),
                                      tmp_path).start()
        await wait_until(lambda: conn.fetchval("SELECT count(*) = $1 FROM inbox WHERE stream = 'usage'", len(uses)),
                         180)
        await wait_until(lambda: conn.fetchval("SELECT count(*) = 0 FROM outbox_state WHERE state = 'unsent'"), 60)
        await assert_exact(conn, second.url, orders, uses, ledger)
    finally:
        await conn.close()
        first.kill9()
        if second:
            second.stop()
        await ledger.stop()
        await prod.stop()
