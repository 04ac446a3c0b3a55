"""Entitlement on the real broker and database: one test per rule of issue 5.

One in-process entitlement serves the module (its own database and consumer group, started at
the topics' end offsets); each test uses its own org, produces the CloudEvents itself and reads
`aimis.ledger.v1`. The service clock is the real one unless a test pins it (late-usage grace).
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from contracts import topics
from contracts.events import (
    DeductionRequestedData,
    EndLicenceData,
    EndMaintenanceData,
    ExpireLotData,
    ExpireServiceData,
    OrderLineData,
    OrderPaidData,
    encode,
    new_event,
    topic_of,
)
from services.entitlement.app import create_app
from shared.clock import Clock, add_years
from shared.config import Settings
from shared.kafka import ensure_topics
from tests.support.kafka import TopicReader, partitions_of, producer
from tests.support.services import SECRET, bearer, serve_in_process

pytestmark = pytest.mark.integration
CONSUMED = (topics.ORDERS, topics.DEDUCTIONS, topics.EXPIRY_COMMANDS)


# ---------------------------------------------------------------- helpers (also used by the resilience tests)


class PinnableClock(Clock):
    """The real clock, unless a test pins it to an instant."""

    def __init__(self) -> None:
        self.pinned: datetime | None = None

    def now(self) -> datetime:
        return self.pinned or datetime.now(timezone.utc)


def now() -> datetime:
    return datetime.now(timezone.utc)


async def group_starts_at_end(bootstrap: str, group_id: str, names=CONSUMED) -> None:
    """Commit the topics' end offsets for `group_id`, so a new group skips earlier tests' records."""
    await ensure_topics(bootstrap, 6)
    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group_id, enable_auto_commit=False)
    await c.start()
    try:
        tps = [TopicPartition(t, p) for t in names for p in await partitions_of(bootstrap, t)]
        c.assign(tps)
        ends = await c.end_offsets(tps)
        await c.commit(dict(ends))
    finally:
        await c.stop()


async def new_database(dsn: str) -> str:
    name = f"t_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(dsn)
    try:
        await admin.execute(f"CREATE DATABASE {name}")
    finally:
        await admin.close()
    return f"{dsn.rsplit('/', 1)[0]}/{name}"


def test_settings(bootstrap: str, dsn: str, **kw: Any) -> Settings:
    return Settings(kafka_bootstrap=bootstrap, database_url=dsn, auth_secret=SECRET,
                    expiry_interval_s=0.5, late_usage_grace_s=2, **kw)


test_settings.__test__ = False  # type: ignore[attr-defined]


def line(i: int, sku: str, **kw: Any) -> OrderLineData:
    return OrderLineData(line=i, sku=sku, price=Decimal("1.00"), **kw)


def order_paid(org: str, lines: list[OrderLineData], paid_at: datetime | None = None,
               order_id: str | None = None) -> Any:
    paid_at = paid_at or now()
    data = OrderPaidData(
        order_id=order_id or f"ord-{uuid.uuid4().hex[:10]}", org_id=org, lines=lines,
        total=Decimal(len(lines)), price_book_version="test", placed_at=paid_at, paid_at=paid_at,
        payment_ref="pay-1",
    )
    return new_event(org, data, "/test")


def deduction(org: str, resource: str, quantity: int, occurred_at: datetime | None = None,
              channel: str = "online", usage_id: str | None = None) -> Any:
    uid = usage_id or f"u-{uuid.uuid4().hex}"
    occurred_at = occurred_at or now()
    data = DeductionRequestedData(
        usage_id=uid, org_id=org, resource=resource, quantity=quantity, occurred_at=occurred_at,
        received_at=occurred_at, channel=channel, inspection_id=f"insp-{uid}",
    )
    return new_event(org, data, "/test", id=uid)


def command(kind: str, org: str, data: Any) -> Any:
    assert data.TYPE.endswith(f".{kind}")
    return new_event(org, data, "/test")


async def send(prod: AIOKafkaProducer, *events: Any) -> None:
    futs = [await prod.send(topic_of(e.type), encode(e), key=e.subject.encode()) for e in events]
    await asyncio.gather(*futs)


async def send_raw(prod: AIOKafkaProducer, topic: str, key: str, value: bytes) -> None:
    await prod.send_and_wait(topic, value, key=key.encode())


def of(kind: str, org: str, **match: Any):
    def pred(e: dict[str, Any]) -> bool:
        return (e["type"] == f"aimis.ledger.{kind}" and e["subject"] == org
                and all(e["data"].get(k) == v for k, v in match.items()))
    return pred


def iso(t: datetime) -> str:
    return t.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def same_instant(a: str, b: datetime) -> bool:
    return datetime.fromisoformat(a.replace("Z", "+00:00")) == b


@dataclass
class Svc:
    url: str
    settings: Settings
    clock: PinnableClock
    prod: AIOKafkaProducer
    dsn: str
    rt: Any

    async def get(self, org: str, path: str, **params: Any) -> Any:
        async with httpx.AsyncClient(base_url=self.url, headers=bearer(SECRET, org)) as c:
            r = await c.get(f"/v1/orgs/{org}{path}", params=params)
            assert r.status_code == 200, r.text
            return r.json()

    async def balance(self, org: str, resource: str) -> dict[str, Any]:
        return (await self.get(org, "/balances"))["resources"][resource]


@pytest.fixture(scope="module")
async def svc(real_infra):
    dsn = await new_database(real_infra.dsn)
    s = test_settings(real_infra.bootstrap, dsn)
    group = f"t-ent-{uuid.uuid4().hex[:8]}"
    await group_starts_at_end(real_infra.bootstrap, group)
    clock = PinnableClock()
    app = create_app(s, clock, group_id=group)
    prod = await producer(real_infra.bootstrap)
    try:
        async with serve_in_process(app) as url:
            yield Svc(url, s, clock, prod, dsn, app.state.runtime)
    finally:
        await prod.stop()


@pytest.fixture
async def ledger(svc):
    async with TopicReader(svc.settings.kafka_bootstrap, topics.LEDGER) as r:
        yield r


@pytest.fixture
def org() -> str:
    return f"org-{uuid.uuid4().hex[:12]}"


async def credited(svc: Svc, ledger: TopicReader, org: str, *lines: OrderLineData,
                   paid_at: datetime | None = None) -> str:
    ev = order_paid(org, list(lines), paid_at)
    await send(svc.prod, ev)
    await ledger.wait_for(of("order_fulfilled", org, order_id=ev.data.order_id))
    return ev.data.order_id


# ---------------------------------------------------------------- credits


async def test_order_paid_credits_every_line_and_emits_order_fulfilled_last(svc, ledger, org):
    paid_at = now() - timedelta(days=3)
    ev = order_paid(org, [
        line(0, "CI-QTY", quantity=1000, storage_years=5), line(1, "AI-QTY", quantity=2000),
        line(2, "CI-ANNUAL", quantity=3000, storage_years=20), line(3, "SW-BASIC", months=12),
        line(4, "SVC-DELIVERY", mode="remote"), line(5, "SVC-MAINTENANCE", years=2),
        line(6, "AI-PERPETUAL"),
    ], paid_at)
    oid = ev.data.order_id
    await send(svc.prod, ev)
    await ledger.wait_for(of("order_fulfilled", org, order_id=oid))
    evs = [e for e in ledger.events(lambda e: e["subject"] == org)]
    kinds = [e["type"].rsplit(".", 1)[1] for e in evs]
    assert kinds == ["lot_credited", "lot_credited", "lot_credited", "licence_activated", "service_granted",
                     "service_granted", "licence_activated", "order_fulfilled"]
    lot0 = evs[0]["data"]
    assert lot0["lot_id"] == f"{oid}.0" and lot0["resource"] == "cloud_inspection" and lot0["storage_years"] == 5
    assert same_instant(lot0["credited_at"], paid_at) and same_instant(lot0["expires_at"], add_years(paid_at, 1))
    assert evs[1]["data"]["resource"] == "ai_review" and evs[1]["data"]["storage_years"] is None
    assert evs[2]["data"]["storage_years"] == 20
    assert evs[4]["data"]["service_id"] == f"{oid}.4"
    assert same_instant(evs[4]["data"]["accept_by"], add_years(paid_at, 1))
    assert same_instant(evs[5]["data"]["ends_at"], add_years(paid_at, 2))
    assert evs[6]["data"]["feature"] == "ai_perpetual" and evs[6]["data"]["ends_at"] is None
    bal = (await svc.get(org, "/balances"))["resources"]
    ci, ai = bal["cloud_inspection"], bal["ai_review"]
    assert (ci["purchased"], ci["available"], ai["purchased"], ai["available"]) == (4000, 4000, 2000, 2000)
    assert ai["offline_licence"] is True
    assert {l["lot_id"]: l["status"] for l in ci["lots"]} == {f"{oid}.0": "active", f"{oid}.2": "active"}


async def test_order_paid_redelivered_credits_each_line_exactly_once(svc, ledger, org):
    ev = order_paid(org, [line(0, "CI-QTY", quantity=1000, storage_years=1)])
    again_other_id = ev.model_copy(update={"id": str(uuid.uuid4())})
    await send(svc.prod, ev, ev, again_other_id)
    await ledger.wait_for(of("order_fulfilled", org))
    await send(svc.prod, ev)
    probe = await credited(svc, ledger, org, line(0, "AI-QTY", quantity=1000))  # processed after the repeats
    assert probe
    assert len(ledger.events(of("lot_credited", org, resource="cloud_inspection"))) == 1
    assert len(ledger.events(of("order_fulfilled", org, order_id=ev.data.order_id))) == 1
    assert (await svc.balance(org, "cloud_inspection"))["purchased"] == 1000


# test_crediting_a_lot_offsets_arrears_oldest_first_with_its_storage_years: moved to tests/component/test_entitlement_rules.py


async def test_sw_licence_periods_stack_from_the_current_end(svc, ledger, org):
    paid = now() - timedelta(days=10)
    await credited(svc, ledger, org, line(0, "SW-BASIC", months=1), line(1, "SW-BASIC", months=2), paid_at=paid)
    acts = [e["data"] for e in ledger.events(of("licence_activated", org))]
    assert [a["licence_id"] for a in acts] == [f"{org}:basic"] * 2
    assert same_instant(acts[1]["period_start"], datetime.fromisoformat(acts[0]["period_end"].replace("Z", "+00:00")))
    from shared.clock import add_months
    assert same_instant(acts[1]["ends_at"], add_months(add_months(paid, 1), 2))


# ---------------------------------------------------------------- deductions


# test_deduction_draws_the_lot_expiring_first_and_may_span_lots: moved to tests/component/test_entitlement_rules.py


# test_cloud_inspection_beyond_balance_is_recorded_as_arrears: moved to tests/component/test_entitlement_rules.py


# test_usage_for_an_org_without_lots_is_all_arrears_or_insufficient_balance: moved to tests/component/test_entitlement_rules.py


# test_ai_review_beyond_balance_is_rejected_whole_with_nothing_deducted: moved to tests/component/test_entitlement_rules.py


# test_offline_ai_review_is_counted_under_perpetual_licence_else_no_offline_licence: moved to tests/component/test_entitlement_rules.py


async def test_same_usage_id_twice_is_deducted_once(svc, ledger, org):
    await credited(svc, ledger, org, line(0, "CI-QTY", quantity=1000, storage_years=1))
    u = deduction(org, "cloud_inspection", 7)
    await send(svc.prod, u, u)
    await ledger.wait_for(of("usage_deducted", org, usage_id=u.id))
    await send(svc.prod, u)
    probe = deduction(org, "cloud_inspection", 1)
    await send(svc.prod, probe)
    await ledger.wait_for(of("usage_deducted", org, usage_id=probe.id))
    assert len(ledger.events(of("usage_deducted", org, usage_id=u.id))) == 1
    assert (await svc.balance(org, "cloud_inspection"))["available"] == 1000 - 8


async def test_late_use_draws_an_expired_lot_only_within_the_grace(svc, ledger, org):
    paid = now() - timedelta(days=400)
    oid = await credited(svc, ledger, org, line(0, "CI-QTY", quantity=1000, storage_years=3), paid_at=paid)
    expires = add_years(paid, 1)
    within, after = deduction(org, "cloud_inspection", 2, expires - timedelta(seconds=5)), \
        deduction(org, "cloud_inspection", 3, expires - timedelta(seconds=5))
    try:
        svc.clock.pinned = expires + timedelta(seconds=1)  # inside the 2 s grace
        await send(svc.prod, within)
        got = (await ledger.wait_for(of("usage_deducted", org, usage_id=within.id)))[0]["data"]
        assert [(a["lot_id"], a["quantity"]) for a in got["allocations"]] == [(f"{oid}.0", 2)]
        svc.clock.pinned = expires + timedelta(seconds=2)  # the grace has passed
        await send(svc.prod, after)
        got = (await ledger.wait_for(of("usage_deducted", org, usage_id=after.id)))[0]["data"]
        assert got["allocations"] == [] and got["arrears_quantity"] == 3
    finally:
        svc.clock.pinned = None


# ---------------------------------------------------------------- expiry commands


async def test_expire_lot_forfeits_the_remainder_only_once_due_and_only_once(svc, ledger, org):
    fresh = await credited(svc, ledger, org, line(0, "CI-QTY", quantity=1000, storage_years=1))
    paid = now() - timedelta(days=366)
    old = await credited(svc, ledger, org, line(0, "CI-QTY", quantity=1000, storage_years=1),
                         line(1, "AI-QTY", quantity=1000), line(2, "CI-QTY", quantity=2000, storage_years=1),
                         paid_at=paid)
    u = deduction(org, "ai_review", 1000, paid + timedelta(days=1))  # depletes the old AI lot
    svc.clock.pinned = add_years(paid, 1) - timedelta(days=1)
    try:
        await send(svc.prod, u)
        await ledger.wait_for(of("usage_deducted", org, usage_id=u.id))
    finally:
        svc.clock.pinned = None

    def expire(lot_id: str, at: datetime) -> Any:
        return command("expire_lot", org, ExpireLotData(org_id=org, lot_id=lot_id, expires_at=at))

    old_exp = add_years(paid, 1)
    due = expire(f"{old}.0", old_exp)
    await send(svc.prod, expire(f"{fresh}.0", add_years(now(), 1)), due, expire(f"{old}.1", old_exp), due,
               expire(f"{old}.0", old_exp), expire(f"{old}.2", old_exp))  # the last one is the probe
    await ledger.wait_for(of("lot_expired", org, lot_id=f"{old}.2"))
    got = ledger.events(of("lot_expired", org))
    assert sorted((e["data"]["lot_id"], e["data"]["forfeited"]) for e in got) == [
        (f"{old}.0", 1000), (f"{old}.1", 0), (f"{old}.2", 2000)]
    probe = deduction(org, "cloud_inspection", 1)
    await send(svc.prod, probe)
    await ledger.wait_for(of("usage_deducted", org, usage_id=probe.id))
    bal = await svc.balance(org, "cloud_inspection")
    assert (bal["forfeited"], bal["purchased"], bal["available"]) == (3000, 4000, 999)
    assert {l["lot_id"]: l["status"] for l in bal["lots"]}[f"{old}.0"] == "expired"


# test_expire_lot_waits_for_the_late_usage_grace moved to tests/component/test_entitlement_consumers.py


async def test_end_licence_expires_a_lapsed_licence_but_not_a_renewed_one(svc, ledger, org):
    from shared.clock import add_months

    paid = now() - timedelta(days=70)
    await credited(svc, ledger, org, line(0, "SW-BASIC", months=1), line(1, "SW-OPT", months=1, feature="cloud_film"),
                   line(2, "SW-OPT", months=1, feature="remote_teaching"), paid_at=paid)
    end = add_months(paid, 1)  # all lapsed about 40 days ago
    await credited(svc, ledger, org, line(0, "SW-OPT", months=3, feature="cloud_film"))  # renewed since

    def end_licence(feature: str) -> Any:
        return command("end_licence", org, EndLicenceData(org_id=org, licence_id=f"{org}:{feature}", ends_at=end))

    await send(svc.prod, end_licence("cloud_film"), end_licence("basic"), end_licence("basic"),
               end_licence("remote_teaching"))  # the last one is the probe
    await ledger.wait_for(of("licence_expired", org, licence_id=f"{org}:remote_teaching"))
    got = ledger.events(of("licence_expired", org))
    assert sorted(e["data"]["feature"] for e in got) == ["basic", "remote_teaching"]
    assert all(same_instant(e["data"]["ended_at"], end) for e in got)
    features = await svc.get(org, "/features")
    assert features["basic"]["active"] is False and features["features"]["cloud_film"]["enabled"] is False


async def test_expire_service_expires_only_an_unaccepted_one_time_service_past_accept_by(svc, ledger, org):
    bought = now() - timedelta(days=400)
    old = await credited(svc, ledger, org, line(0, "SVC-DELIVERY", mode="local"), line(1, "SVC-SCHEDULED", quantity=3),
                         line(2, "SVC-MAINTENANCE", years=3), paid_at=bought)
    fresh = await credited(svc, ledger, org, line(0, "SVC-DELIVERY", mode="remote"))
    past = add_years(bought, 1)
    cmds = [command("expire_service", org, ExpireServiceData(org_id=org, service_id=s, accept_by=past))
            for s in (f"{old}.0", f"{fresh}.0", f"{old}.2", f"{old}.0", f"{old}.1")]  # the last: the probe
    await send(svc.prod, *cmds)
    await ledger.wait_for(of("service_expired", org, service_id=f"{old}.1"))
    assert sorted(e["data"]["service_id"] for e in ledger.events(of("service_expired", org))) == [
        f"{old}.0", f"{old}.1"]
    views = {s["service_id"]: s["status"] for s in await svc.get(org, "/services")}
    assert views == {f"{old}.0": "expired", f"{old}.1": "expired", f"{old}.2": "active",
                     f"{fresh}.0": "awaiting_acceptance"}


async def test_end_maintenance_ends_it_only_after_ends_at(svc, ledger, org):
    bought = now() - timedelta(days=400)
    old = await credited(svc, ledger, org, line(0, "SVC-MAINTENANCE", years=1), line(1, "SVC-MAINTENANCE", years=1),
                         paid_at=bought)
    fresh = await credited(svc, ledger, org, line(0, "SVC-MAINTENANCE", years=2))
    end_old = add_years(bought, 1)
    cmds = [command("end_maintenance", org, EndMaintenanceData(org_id=org, service_id=s, ends_at=end_old))
            for s in (f"{fresh}.0", f"{old}.0", f"{old}.0", f"{old}.1")]  # the last: the probe
    await send(svc.prod, *cmds)
    await ledger.wait_for(of("maintenance_ended", org, service_id=f"{old}.1"))
    assert sorted(e["data"]["service_id"] for e in ledger.events(of("maintenance_ended", org))) == [
        f"{old}.0", f"{old}.1"]
    views = {s["service_id"]: s["status"] for s in await svc.get(org, "/services")}
    assert views == {f"{old}.0": "ended", f"{old}.1": "ended", f"{fresh}.0": "active"}


# ---------------------------------------------------------------- bad input


async def test_bad_input_goes_to_the_dead_letter_topic_and_the_partition_keeps_moving(svc, ledger, org):
    async with TopicReader(svc.settings.kafka_bootstrap, topics.ENTITLEMENT_DLQ) as dlq:
        good = deduction(org, "cloud_inspection", 1)
        bad_schema = deduction(org, "cloud_inspection", 1)
        raw_schema = encode(bad_schema).replace(b'"quantity":1', b'"quantity":"lots"')
        unknown_sku = order_paid(org, [line(0, "CI-QTY", quantity=1000, storage_years=1), line(1, "NOPE")])
        unknown_type = encode(bad_schema).replace(b"aimis.metering.deduction_requested", b"aimis.orders.nope")
        await send_raw(svc.prod, topics.DEDUCTIONS, org, b"{not json")
        await send_raw(svc.prod, topics.DEDUCTIONS, org, raw_schema)
        await send_raw(svc.prod, topics.ORDERS, org, unknown_type)
        await send_raw(svc.prod, topics.EXPIRY_COMMANDS, org, b'{"specversion": "1.0"}')
        await send(svc.prod, unknown_sku, good)
        await ledger.wait_for(of("usage_deducted", org, usage_id=good.id))
        dead = await dlq.wait_for(lambda e: e["subject"] == org or e["data"]["original"] == '{not json'
                                  or e["data"]["topic"] == topics.EXPIRY_COMMANDS, count=5)
        mine = [e["data"] for e in dead]
        got = sorted((d["topic"], d["reason"]) for d in mine)
        assert got == sorted([
            (topics.DEDUCTIONS, "MALFORMED"), (topics.DEDUCTIONS, "SCHEMA_VIOLATION"),
            (topics.ORDERS, "UNKNOWN_TYPE"), (topics.EXPIRY_COMMANDS, "MALFORMED"),
            (topics.ORDERS, "UNKNOWN_ORDER_LINE")])
        assert all(isinstance(d["offset"], int) and d["partition"] >= 0 for d in mine)
        assert ledger.events(of("lot_credited", org)) == []  # a bad line credits nothing of its order
    async with httpx.AsyncClient(base_url=svc.url) as c:
        metrics = (await c.get("/metrics")).text
    assert ('aimis_dead_letters_total{reason="UNKNOWN_ORDER_LINE",service="entitlement",topic="aimis.orders.v1"}'
            in metrics)


# ---------------------------------------------------------------- HTTP


async def test_balances_ledger_features_services_and_allowance_are_org_scoped(svc, ledger, org):
    async with httpx.AsyncClient(base_url=svc.url) as c:
        assert (await c.get(f"/v1/orgs/{org}/balances")).status_code == 401
        other = await c.get(f"/v1/orgs/{org}/balances", headers=bearer(SECRET, "someone-else"))
        assert other.status_code == 404 and other.json()["error"]["code"] == "NOT_FOUND"  # SPEC 7.4
        admin = await c.get(f"/v1/orgs/{org}/features", headers=bearer(SECRET))
        assert admin.status_code == 200


async def test_balances_show_counters_and_every_lot(svc, ledger, org):
    oid = await credited(svc, ledger, org, line(0, "CI-QTY", quantity=2000, storage_years=3),
                         line(1, "AI-QTY", quantity=1000))
    u = deduction(org, "cloud_inspection", 2001)
    await send(svc.prod, u)
    await ledger.wait_for(of("usage_deducted", org, usage_id=u.id))
    body = await svc.get(org, "/balances")
    assert body["org_id"] == org
    ci = body["resources"]["cloud_inspection"]
    assert {k: ci[k] for k in ("purchased", "available", "used", "arrears", "forfeited")} == {
        "purchased": 2000, "available": 0, "used": 2001, "arrears": 1, "forfeited": 0}
    assert ci["lots"][0]["lot_id"] == f"{oid}.0" and ci["lots"][0]["order_id"] == oid
    assert ci["lots"][0]["sku"] == "CI-QTY" and ci["lots"][0]["storage_years"] == 3
    ai = body["resources"]["ai_review"]
    assert (ai["available"], ai["offline_licence"], ai["lots"][0]["status"]) == (1000, False, "active")


async def test_ledger_is_paged_with_a_cursor_and_filtered_by_resource(svc, ledger, org):
    await credited(svc, ledger, org, line(0, "CI-QTY", quantity=1000, storage_years=1), line(1, "SW-BASIC", months=1))
    uses = [deduction(org, "cloud_inspection", 1) for _ in range(5)]
    await send(svc.prod, *uses)
    await ledger.wait_for(of("usage_deducted", org), count=5)
    pages, after = [], None
    while True:
        params = {"limit": 2, **({"after": after} if after else {})}
        page = await svc.get(org, "/ledger", **params)
        pages.append(page["entries"])
        after = page["next"]
        if after is None:
            break
    entries = [e for p in pages for e in p]
    assert [len(p) for p in pages] == [2, 2, 2, 2]  # 8 entries: lot, licence, fulfilled, 5 uses
    assert [e["id"] for e in entries] == [e["id"] for e in ledger.events(lambda e: e["subject"] == org)]
    only_ci = await svc.get(org, "/ledger", resource="cloud_inspection", limit=100)
    assert {e["type"] for e in only_ci["entries"]} == {"aimis.ledger.lot_credited", "aimis.ledger.usage_deducted"}
    assert only_ci["next"] is None


async def test_features_enable_optional_only_while_basic_is_active(svc, ledger, org):
    await credited(svc, ledger, org, line(0, "SW-OPT", months=12, feature="advanced_viewer"))
    body = await svc.get(org, "/features")
    assert body["basic"] == {"active": False, "until": None}
    assert body["features"]["advanced_viewer"]["enabled"] is False
    assert len(body["features"]) == 10
    await credited(svc, ledger, org, line(0, "SW-BASIC", months=3))
    body = await svc.get(org, "/features")
    basic_until = body["basic"]["until"]
    assert body["basic"]["active"] is True
    assert body["features"]["advanced_viewer"] == {"enabled": True, "until": basic_until}  # min(feature, basic)
    assert body["features"]["follow_up"]["enabled"] is False
    one = await svc.get(org, "/features/basic")
    assert one == {"feature": "basic", "enabled": True, "until": basic_until}
    async with httpx.AsyncClient(base_url=svc.url, headers=bearer(SECRET, org)) as c:
        r = await c.get(f"/v1/orgs/{org}/features/teleportation")
    assert r.status_code == 404 and r.json()["error"]["code"] == "NOT_FOUND"


async def test_service_acceptance_is_idempotent_and_refused_when_expired_or_maintenance(svc, ledger, org):
    fresh = await credited(svc, ledger, org, line(0, "SVC-DELIVERY", mode="local"), line(1, "SVC-MAINTENANCE", years=1))
    old = await credited(svc, ledger, org, line(0, "SVC-SCHEDULED", quantity=2), paid_at=now() - timedelta(days=400))
    async with httpx.AsyncClient(base_url=svc.url, headers=bearer(SECRET, org)) as c:
        url = f"/v1/orgs/{org}/services/{{}}/acceptance"
        first = await c.post(url.format(f"{fresh}.0"))
        second = await c.post(url.format(f"{fresh}.0"))
        assert first.status_code == second.status_code == 200
        assert first.json()["status"] == "accepted" and first.json() == second.json()
        for sid in (f"{fresh}.1", f"{old}.0"):
            r = await c.post(url.format(sid))
            assert r.status_code == 409 and r.json()["error"]["code"] == "SERVICE_NOT_ACCEPTABLE"
        assert (await c.post(url.format("nope.0"))).status_code == 404
    await credited(svc, ledger, org, line(0, "AI-QTY", quantity=1000))  # the relay publishes in commit order
    got = ledger.events(of("service_accepted", org))
    assert len(got) == 1 and got[0]["data"]["service_id"] == f"{fresh}.0"


async def test_ai_review_allowance_is_the_ai_balance_valid_now(svc, ledger, org):
    assert await svc.get(org, "/ai-review/allowance") == {"allowed": False, "remaining": 0, "offline_licence": False}
    await credited(svc, ledger, org, line(0, "AI-QTY", quantity=1000), line(1, "AI-PERPETUAL"))
    await credited(svc, ledger, org, line(0, "AI-QTY", quantity=1000), paid_at=now() - timedelta(days=400))
    assert await svc.get(org, "/ai-review/allowance") == {"allowed": True, "remaining": 1000, "offline_licence": True}


# test_migrations_from_empty_give_the_entitlement_schema_and_rerun_is_noop moved to
# tests/component/test_migrations.py (PostgreSQL only)
