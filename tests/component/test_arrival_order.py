"""Issue 18, as a property: the account after any arrival order equals the account after the same
events processed in the order they occurred (docs/decisions/arrival-order.md).

Hypothesis draws, per organisation, purchases (online: they arrive within a minute of their
`paid_at`), imports (a past `paid_at`, arriving up to two years later, often already expired),
cloud inspections and online/offline AI reviews with random `occurred_at`, and `expire_lot`
commands. Each event gets an arrival time within the rule's premises: a use arrives within the
late-usage grace, lots of a resource are credited in the order they were paid, an AI review follows
the purchases that allowed it, a command comes at expiry + grace. The events are fed in arrival
order, as raw records, to the real entitlement consumers (consumer base + PostgreSQL) with the
clock at each arrival; SPEC 4's identities are checked after every message, the ledger is checked
to name every unit, and each organisation's account is compared with `Reference`, a small
independent model that processes the same events sorted by occurrence.

One database for the whole property; each example uses fresh organisation ids (every table is
keyed by organisation), so no reset is needed between examples.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import asyncpg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contracts import topics
from contracts.events import (
    DeductionRequestedData,
    ExpireLotData,
    OrderLineData,
    OrderPaidData,
    encode,
    new_event,
)
from services.entitlement import domain, store
from services.entitlement.app import MIGRATIONS
from services.entitlement.handlers import subscriptions
from shared.clock import FixedClock, add_years
from tests.component.conftest import Database, Feed, runtime

T0 = datetime(2025, 3, 10, 9, 0, tzinfo=timezone.utc)  # no 29 February until 2028: expiry order = credit order
GRACE = timedelta(seconds=300)  # the component runtime's late_usage_grace_s
CI, AI = domain.CLOUD, domain.AI
DAYS = [0, 1, 365, 366, 400, 730]  # few days, near each other's expiry, so events often meet
# 100 here, so the component tier stays fast; tests/integration/test_arrival_order_depth.py runs the
# same property with 500 in a later stage of `make test`. More for a deeper local run.
EXAMPLES = int(os.environ.get("ARRIVAL_EXAMPLES", "100"))


# ---------------------------------------------------------------- the scenario


@dataclass
class Lot:
    line: int
    resource: str
    quantity: int
    years: int | None


@dataclass
class Order:
    paid_at: datetime
    lines: list[Lot]
    imported: bool
    delay: timedelta  # arrival after paid_at (imports: up to two years)
    perpetual: bool = False
    expire: list[bool] = field(default_factory=list)  # per line: does an expire_lot command come
    order_id: str = ""


@dataclass
class UseEv:
    resource: str
    quantity: int
    occurred_at: datetime
    channel: str
    delay: timedelta
    usage_id: str = ""


# The strategies are built once, here: building a strategy per draw (`st.builds(...)` over this
# org's anchors) cost hypothesis more than the example's database work.
UP_TO = [st.integers(0, n) for n in range(8)]  # UP_TO[n]: 0..n (a count, or an index into n + 1 things)
BOOLS = st.booleans()
OFFSET_S = st.integers(-240, 240)
DAY = st.sampled_from(DAYS)
LATE = st.one_of(st.builds(lambda s: timedelta(seconds=s), st.integers(0, 60)),
                 st.builds(lambda d: timedelta(days=d), st.integers(0, 730)))  # at once, or up to two years
LINE_NUMBERS = [st.lists(st.sampled_from([0, 1, 2, 10]), min_size=n, max_size=n, unique=True) for n in (0, 1, 2)]
RESOURCE = st.sampled_from([CI, CI, AI])  # online purchases (AI lots: online only)
CI_QUANTITY, CI_YEARS, AI_USE = st.integers(1, 25), st.integers(1, 15), st.integers(1, 3)
USE_KIND = st.sampled_from(["ci", "ci", "ci", "ai", "offline"])
CI_USE, ONLINE_DELAY_S, USE_DELAY_S = st.integers(1, 20), st.integers(0, 60), st.integers(0, 170)


def instant(draw: st.DrawFn, anchors: list[datetime]) -> datetime:
    """Within minutes of one of the org's few anchor instants, so purchases and uses often meet."""
    return anchors[draw(UP_TO[len(anchors) - 1])] + timedelta(seconds=draw(OFFSET_S))


def order(draw: st.DrawFn, anchors: list[datetime]) -> Order:
    imported = draw(BOOLS)
    if draw(UP_TO[3]) == 0:
        return Order(instant(draw, anchors), [], True, draw(LATE), perpetual=True)
    n = draw(UP_TO[1]) + 1
    lines = []
    resource = CI if imported else draw(RESOURCE)
    for i in draw(LINE_NUMBERS[n]):
        lines.append(Lot(i, resource, draw(CI_QUANTITY) if resource == CI else 1000,
                         draw(CI_YEARS) if resource == CI else None))
    delay = draw(LATE) if imported else timedelta(seconds=draw(ONLINE_DELAY_S))
    return Order(instant(draw, anchors), lines, imported, delay, expire=[draw(BOOLS) for _ in range(n)])


def use(draw: st.DrawFn, anchors: list[datetime]) -> UseEv:
    kind = draw(USE_KIND)
    resource = CI if kind == "ci" else AI
    quantity = draw(CI_USE) if kind == "ci" else draw(AI_USE)
    return UseEv(resource, quantity, instant(draw, anchors), "offline" if kind == "offline" else "online",
                 timedelta(seconds=draw(USE_DELAY_S)))


@dataclass
class Scenario:
    orgs: dict[str, tuple[list[Order], list[UseEv]]]


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    orgs = {}
    for _ in range(draw(UP_TO[1]) + 1):
        org = f"org-{uuid.uuid4().hex[:10]}"
        anchors = [T0 + timedelta(days=draw(DAY)) for _ in range(draw(UP_TO[2]) + 1)]
        os_ = [order(draw, anchors) for _ in range(draw(UP_TO[3]))]
        meet = anchors + [o.paid_at for o in os_]  # uses meet purchases
        us = [use(draw, meet) for _ in range(draw(UP_TO[6]))]
        for o in os_:
            o.order_id = f"o{uuid.uuid4().hex[:8]}"
        for i, u in enumerate(us):
            u.usage_id = f"u{i}-{uuid.uuid4().hex[:6]}"
        orgs[org] = (os_, us)
    return Scenario(orgs)


# ---------------------------------------------------------------- arrival (the premises of the rule)


@dataclass(order=True)
class Arrival:
    at: datetime
    rank: int  # at the same instant: lots, then uses, then commands
    seq: int
    org: str = field(compare=False)
    what: Any = field(compare=False)  # Order | UseEv | (Order, Lot) for expire_lot


def expires(o: Order) -> datetime:
    return add_years(o.paid_at, 1)


def arrivals(sc: Scenario) -> list[Arrival]:
    out: list[Arrival] = []
    seq = 0
    for org, (os_, us) in sc.orgs.items():
        at: dict[str, datetime] = {}
        last: dict[str, datetime] = {}
        # lots of a resource are credited in the order they were paid (each order is one message)
        for o in sorted(os_, key=lambda o: (o.paid_at, o.order_id)):
            resources = {l.resource for l in o.lines} or {"perpetual"}
            a = max([o.paid_at + o.delay] + [last[r] for r in resources if r in last])
            for r in resources:
                last[r] = a
            at[o.order_id] = a
            out.append(Arrival(a, 0, seq := seq + 1, org, o))
        for u in us:
            a = u.occurred_at + u.delay
            if u.resource == AI:  # a review follows the purchases (AI lots, the licence) that allowed it
                a = max([a] + [at[o.order_id] for o in os_ if o.paid_at <= u.occurred_at
                               and (o.perpetual if u.channel == "offline" else any(l.resource == AI for l in o.lines))])
            out.append(Arrival(a, 1, seq := seq + 1, org, u))
        for o in os_:
            for lot, command in zip(o.lines, o.expire, strict=True):
                if command:
                    out.append(Arrival(max(expires(o) + GRACE, at[o.order_id]), 2, seq := seq + 1, org, (o, lot)))
    return sorted(out)


# ---------------------------------------------------------------- the reference: occurrence order


@dataclass
class RLot:
    lot_id: str
    key: tuple[Any, ...]
    quantity: int
    years: int | None
    credited_at: datetime
    expires_at: datetime
    remaining: int
    expired: bool = False


@dataclass
class RAccount:
    lots: dict[str, RLot] = field(default_factory=dict)
    arrears: list[list[Any]] = field(default_factory=list)  # [occurred_at, outstanding]
    used: int = 0
    forfeited: int = 0
    rejected: int = 0
    offline: int = 0


class Reference:
    """Each event processed in the order it occurred, with the SPEC's rules and nothing about
    arrival: lots at paid_at, uses at occurred_at, a commanded expiry at expires_at."""

    def __init__(self, orders: list[Order], uses: list[UseEv]):
        self.acc = {CI: RAccount(), AI: RAccount()}
        self.perpetual = False
        events: list[tuple[datetime, int, str, Any]] = []
        for o in orders:  # lots paid at the same instant: by order id, as arrivals() credits them
            events.append((o.paid_at, 0, o.order_id, o))
            events += [(expires(o), 2, o.order_id, (o, l)) for l, c in zip(o.lines, o.expire, strict=True) if c]
        events += [(u.occurred_at, 1, f"{i:03}", u) for i, u in enumerate(uses)]
        for _, rank, _, e in sorted(events, key=lambda e: e[:3]):
            (self.credit, self.use, self.expire)[rank](e)

    def credit(self, o: Order) -> None:
        self.perpetual |= o.perpetual
        for l in sorted(o.lines, key=lambda l: l.line):
            acc = self.acc[l.resource]
            lot = RLot(f"{o.order_id}.{l.line}", (expires(o), o.paid_at, o.order_id, l.line), l.quantity, l.years,
                       o.paid_at, expires(o), l.quantity)
            acc.lots[lot.lot_id] = lot
            for a in sorted(acc.arrears, key=lambda a: a[0]):  # arrears are offset first, oldest first
                take = min(a[1], lot.remaining)
                a[1] -= take
                lot.remaining -= take

    def use(self, u: UseEv) -> None:
        acc = self.acc[u.resource]
        if u.channel == "offline":
            if self.perpetual:
                acc.offline += u.quantity
            else:
                acc.rejected += u.quantity
            return
        valid = sorted((l for l in acc.lots.values() if l.credited_at <= u.occurred_at < l.expires_at
                        and not l.expired), key=lambda l: l.key)
        if u.resource == AI and sum(l.remaining for l in valid) < u.quantity:
            acc.rejected += u.quantity
            return
        need = u.quantity
        for l in valid:
            take = min(need, l.remaining)
            l.remaining -= take
            need -= take
        acc.used += u.quantity
        if need:
            acc.arrears.append([u.occurred_at, need])

    def expire(self, ol: tuple[Order, Lot]) -> None:
        o, l = ol
        lot = self.acc[l.resource].lots[f"{o.order_id}.{l.line}"]
        self.acc[l.resource].forfeited += lot.remaining
        lot.remaining, lot.expired = 0, True

    def account(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for r, acc in self.acc.items():
            out[r] = {
                "purchased": sum(l.quantity for l in acc.lots.values()),
                "available": sum(l.remaining for l in acc.lots.values() if not l.expired),
                "used": acc.used, "arrears": sum(a[1] for a in acc.arrears), "forfeited": acc.forfeited,
                "offline_counted": acc.offline, "rejected": acc.rejected,
                "lots": {l.lot_id: (l.remaining, l.expired) for l in acc.lots.values()},
            }
        return out


# ---------------------------------------------------------------- the real policy


class Entitlement:
    def __init__(self, rt: Any, clock: FixedClock):
        self.rt, self.clock = rt, clock
        self.feeds = {s.topic: Feed(rt, s) for s in subscriptions(rt)}

    async def deliver(self, batch: list[Arrival]) -> None:
        self.clock.set(batch[-1].at)
        first = batch[0].what
        topic = (topics.ORDERS if isinstance(first, Order) else topics.DEDUCTIONS if isinstance(first, UseEv)
                 else topics.EXPIRY_COMMANDS)
        feed = self.feeds[topic]
        await feed(*[feed.record(self.encode(a.org, a.what), a.org) for a in batch])

    def encode(self, org: str, what: Any) -> bytes:
        if isinstance(what, Order):
            lines = [OrderLineData(line=0, sku="AI-PERPETUAL", price=Decimal("1.00"))] if what.perpetual else [
                OrderLineData(line=l.line, sku="CI-QTY" if l.resource == CI else "AI-QTY", quantity=l.quantity,
                              storage_years=l.years, price=Decimal("1.00")) for l in what.lines]
            return encode(new_event(org, OrderPaidData(
                order_id=what.order_id, org_id=org, lines=lines, total=Decimal("1.00"), price_book_version="t",
                placed_at=what.paid_at, paid_at=what.paid_at, payment_ref="pay"), "/aimis/order"))
        if isinstance(what, UseEv):
            return encode(new_event(org, DeductionRequestedData(
                usage_id=what.usage_id, org_id=org, resource=what.resource, quantity=what.quantity,
                occurred_at=what.occurred_at, received_at=what.occurred_at + what.delay, channel=what.channel,
                inspection_id=f"i-{what.usage_id}"), "/aimis/metering", id=what.usage_id))
        o, l = what
        return encode(new_event(org, ExpireLotData(org_id=org, lot_id=f"{o.order_id}.{l.line}",
                                                   expires_at=expires(o)), "/aimis/expiry"))

    async def account(self, conn: asyncpg.Connection, org: str) -> dict[str, Any]:
        counters = await store.balance_counters(conn, org)
        lots = await store.lots_of(conn, org)
        out: dict[str, Any] = {}
        for r in (CI, AI):
            mine = [l for l in lots if l.resource == r]
            c = counters.get(r) or domain.Counters()
            out[r] = {**vars(domain.balance(c, mine)), "offline_counted": c.offline_counted, "rejected": c.rejected,
                      "lots": {l.lot_id: (l.remaining, l.expired) for l in mine}}
        return out


def batches(order: list[Arrival]) -> Iterator[list[Arrival]]:
    """Consecutive uses arriving within two minutes of each other go in one batch (the deduction
    policy's batch path), so each is still processed well inside the grace; the rest one by one."""
    batch: list[Arrival] = []
    for a in order:
        if batch and (a.rank != 1 or batch[0].rank != 1 or a.at - batch[0].at > timedelta(minutes=2)):
            yield batch
            batch = []
        batch.append(a)
    if batch:
        yield batch


CONSERVATION = """
SELECT b.org_id, b.resource, b.purchased, b.drawn_by_usage, b.arrears_recorded, b.arrears_offset, b.forfeited,
       (SELECT coalesce(sum(remaining), 0) FROM lots l
         WHERE l.org_id = b.org_id AND l.resource = b.resource AND l.status = 'active') AS available,
       (SELECT coalesce(sum(quantity), 0) FROM lots l
         WHERE l.org_id = b.org_id AND l.resource = b.resource) AS lots_purchased,
       (SELECT coalesce(sum(forfeited), 0) FROM lots l
         WHERE l.org_id = b.org_id AND l.resource = b.resource) AS lots_forfeited,
       (SELECT coalesce(sum(outstanding), 0) FROM arrears a
         WHERE a.org_id = b.org_id AND a.resource = b.resource) AS outstanding
FROM balances b WHERE b.org_id = ANY($1::text[])"""


async def check_conservation(conn: asyncpg.Connection, orgs: list[str]) -> None:
    """SPEC 4 per org and resource, after every message."""
    for r in await conn.fetch(CONSERVATION, orgs):
        assert r["purchased"] == r["lots_purchased"] == (
            r["available"] + r["drawn_by_usage"] + r["arrears_offset"] + r["forfeited"]), dict(r)
        assert r["forfeited"] == r["lots_forfeited"], dict(r)
        assert r["arrears_recorded"] - r["arrears_offset"] == r["outstanding"] >= 0, dict(r)


async def check_ledger(conn: asyncpg.Connection, org: str, uses: list[UseEv]) -> None:
    """Every unit drawn from a lot is named by a draw or an offset with that lot and its
    retention_until; every deducted use is drawn or in arrears; offsets match the arrears."""
    lots = {l.lot_id: l for l in await store.lots_of(conn, org)}
    rows = await conn.fetch("SELECT type, data FROM ledger WHERE org_id = $1 ORDER BY seq", org)
    by_lot: dict[str, int] = dict.fromkeys(lots, 0)
    offset_of: dict[str, int] = {}
    occurred = {u.usage_id: u.occurred_at for u in uses}
    deducted: dict[str, dict[str, Any]] = {}

    def named(lot_id: str, quantity: int, usage_id: str, retention: str | None) -> None:
        lot = lots[lot_id]
        by_lot[lot_id] += quantity
        want = domain.retention_until(occurred[usage_id], lot.storage_years)
        assert (datetime.fromisoformat(retention) if retention else None) == want

    for row in rows:
        data = row["data"] if isinstance(row["data"], dict) else json.loads(row["data"])
        if row["type"] == "aimis.ledger.usage_deducted":
            deducted[data["usage_id"]] = data
            for a in data["allocations"]:
                named(a["lot_id"], a["quantity"], data["usage_id"], a["retention_until"])
            assert sum(a["quantity"] for a in data["allocations"]) + data["arrears_quantity"] == (
                0 if data["offline_licence"] else data["quantity"])
        elif row["type"] == "aimis.ledger.arrears_offset":
            assert data["quantity"] == sum(o["quantity"] for o in data["offsets"])
            for o in data["offsets"]:
                named(data["lot_id"], o["quantity"], o["usage_id"], o["retention_until"])
                offset_of[o["usage_id"]] = offset_of.get(o["usage_id"], 0) + o["quantity"]
    for lot_id, lot in lots.items():
        assert by_lot[lot_id] == lot.quantity - lot.remaining - lot.forfeited, lot_id
    outstanding = {r["usage_id"]: r["outstanding"] for r in await conn.fetch(
        "SELECT usage_id, outstanding FROM arrears WHERE org_id = $1", org)}
    for uid, d in deducted.items():
        assert d["arrears_quantity"] - offset_of.get(uid, 0) == outstanding.get(uid, 0), uid


# ---------------------------------------------------------------- the property


def test_the_account_does_not_depend_on_arrival_order(pg_server: tuple[str, bool]) -> None:
    check_arrival_order(*pg_server, examples=EXAMPLES)


def check_arrival_order(dsn: str, throwaway: bool, examples: int) -> None:
    """The property, `examples` deep, on a new database of the PostgreSQL server at `dsn`."""
    loop = asyncio.new_event_loop()
    db = Database(dsn, keep=throwaway)
    clock = FixedClock(T0)
    rt = loop.run_until_complete(runtime("entitlement", MIGRATIONS, db, clock))
    ent = Entitlement(rt, clock)

    async def example(sc: Scenario) -> None:
        orgs = list(sc.orgs)
        async with rt.pool.acquire() as conn:  # the checks' own connection: one pool reset per example
            for batch in batches(arrivals(sc)):
                await ent.deliver(batch)
                await check_conservation(conn, orgs)
            for org, (os_, us) in sc.orgs.items():
                assert await ent.account(conn, org) == Reference(os_, us).account()
                await check_ledger(conn, org, us)

    @settings(max_examples=examples, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(scenarios())
    def prop(sc: Scenario) -> None:
        loop.run_until_complete(example(sc))

    try:
        prop()
    finally:
        loop.run_until_complete(rt.close_database())
        loop.run_until_complete(db.drop())
        loop.close()
