"""The expiry service on the real broker and database: ledger in, commands and reminders out."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone

import httpx
import pytest

from contracts import topics
from contracts.events import (
    Allocation,
    LicenceActivatedData,
    LotCreditedData,
    ServiceAcceptedData,
    ServiceGrantedData,
    UsageDeductedData,
    encode,
    new_event,
)
from services.expiry import domain, store
from services.expiry.app import create_app
from shared.clock import Clock
from shared.config import Settings
from tests.support.kafka import TopicReader, producer, wait_until
from tests.support.services import SECRET, bearer, serve_in_process

pytestmark = pytest.mark.integration

DAY = timedelta(days=1)
SOURCE = "/aimis/entitlement"  # the ledger's writer; the tests stand in for it


class ShiftClock(Clock):
    """Real time plus an offset that a test can move forward (days pass in a moment)."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def now(self) -> datetime:
        return datetime.now(timezone.utc) + self.offset

    def advance(self, delta: timedelta) -> None:
        self.offset += delta


class Expiry:
    """One running expiry app (in-process) plus what a test needs to talk to it."""

    def __init__(self, url: str, app) -> None:  # type: ignore[no-untyped-def]
        self.url, self.app = url, app
        self.rt = app.state.runtime

    async def schedule(self, org_id: str, secret: str = SECRET) -> dict:
        async with httpx.AsyncClient() as c:
            r = await c.get(f"{self.url}/v1/orgs/{org_id}/schedule", headers=bearer(secret, org_id))
            assert r.status_code == 200, r.text
            return r.json()


@contextlib.asynccontextmanager
async def running(settings: Settings, dsn: str, group: str, clock: Clock | None = None) -> AsyncIterator[Expiry]:
    app = create_app(settings.model_copy(update={"database_url": dsn}), clock, group_id=group)
    async with serve_in_process(app) as url:
        yield Expiry(url, app)


@pytest.fixture
def group() -> str:
    return f"t-expiry-{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def kafka(settings):
    p = await producer(settings.kafka_bootstrap)
    try:
        yield p
    finally:
        await p.stop()


async def publish(p, *events) -> None:  # type: ignore[no-untyped-def]
    for e in events:
        await p.send_and_wait(topics.LEDGER, encode(e), key=e.subject.encode())


def ledger(kind: str, org_id: str, data):  # type: ignore[no-untyped-def]
    assert data.TYPE.endswith(f".{kind}")
    return new_event(org_id, data, SOURCE)


def lot_credited(org_id: str, lot_id: str, expires_at: datetime, quantity: int = 1000):
    return ledger("lot_credited", org_id, LotCreditedData(
        org_id=org_id, lot_id=lot_id, order_id=lot_id.rsplit(".", 1)[0], line=0, sku="CI-QTY",
        resource="cloud_inspection", quantity=quantity, storage_years=1,
        credited_at=expires_at - 365 * DAY, expires_at=expires_at,
    ))


def usage_deducted(org_id: str, lot_id: str, quantity: int):
    return ledger("usage_deducted", org_id, UsageDeductedData(
        org_id=org_id, usage_id=str(uuid.uuid4()), resource="cloud_inspection", quantity=quantity,
        occurred_at=datetime.now(timezone.utc), allocations=[Allocation(lot_id=lot_id, quantity=quantity)],
    ))


def licence_activated(org_id: str, ends_at: datetime, feature: str = "basic"):
    return ledger("licence_activated", org_id, LicenceActivatedData(
        org_id=org_id, licence_id=f"{org_id}:{feature}", order_id="o-lic", line=0, sku="SW-BASIC",
        feature=feature, period_start=ends_at - 30 * DAY, period_end=ends_at, ends_at=ends_at,
    ))


def service_granted(org_id: str, service_id: str, *, accept_by=None, ends_at=None):  # type: ignore[no-untyped-def]
    return ledger("service_granted", org_id, ServiceGrantedData(
        org_id=org_id, service_id=service_id, order_id="o-svc", line=0,
        sku="SVC-DELIVERY" if accept_by else "SVC-MAINTENANCE", mode="local" if accept_by else None,
        years=None if accept_by else 1, purchased_at=datetime.now(timezone.utc) - DAY,
        accept_by=accept_by, ends_at=ends_at,
    ))


def at(ev: dict) -> datetime:
    return datetime.fromisoformat(ev["time"])


def of(org_id: str, type_suffix: str, **data):  # type: ignore[no-untyped-def]
    """Predicate: an event of this org and type whose data has these values."""
    def pred(ev: dict) -> bool:
        return (
            ev.get("subject") == org_id and ev.get("type", "").endswith(type_suffix)
            and all(ev["data"].get(k) == v for k, v in data.items())
        )
    return pred


async def listed(svc: Expiry, org_id: str, ref_id: str, **fields) -> dict:  # type: ignore[no-untyped-def]
    """Wait until the schedule lists `ref_id` (with these field values) and return the item."""
    async def cond():  # type: ignore[no-untyped-def]
        for item in (await svc.schedule(org_id))["items"]:
            if item["ref_id"] == ref_id and all(
                v(item[k]) if callable(v) else item[k] == v for k, v in fields.items()
            ):
                return item
        return None
    return await wait_until(cond, timeout=45)


# ---------------------------------------------------------------- lots


async def test_lot_is_commanded_exactly_once_and_not_before_its_grace_passed(settings, fresh_db, group, org_id, kafka):
    async with running(settings, fresh_db, group) as svc, \
            TopicReader(settings.kafka_bootstrap, topics.EXPIRY_COMMANDS) as commands:
        expires_at = datetime.now(timezone.utc) + timedelta(seconds=4)
        lot = f"{org_id}-o1#0"
        await publish(kafka, lot_credited(org_id, lot, expires_at), usage_deducted(org_id, lot, 300))
        item = await listed(svc, org_id, lot, remaining=700)
        due_at = expires_at + timedelta(seconds=settings.late_usage_grace_s)
        assert datetime.fromisoformat(item["due_at"]) == due_at
        if datetime.now(timezone.utc) < expires_at:
            assert item["status"] == "scheduled"

        [cmd] = await commands.wait_for(of(org_id, "expire_lot", lot_id=lot), timeout=30)
        received = datetime.now(timezone.utc)
        assert received >= due_at and at(cmd) >= due_at
        assert datetime.fromisoformat(cmd["data"]["expires_at"]) == expires_at
        await commands.settle(quiet_s=2.0)  # four more sweeps
        assert len(commands.events(of(org_id, "expire_lot"))) == 1
        assert (await listed(svc, org_id, lot))["status"] == "commanded"


async def test_depleted_lot_is_still_commanded_at_its_expiry(settings, fresh_db, group, org_id, kafka):
    async with running(settings, fresh_db, group) as svc, \
            TopicReader(settings.kafka_bootstrap, topics.EXPIRY_COMMANDS) as commands:
        lot = f"{org_id}-o1#0"
        expires_at = datetime.now(timezone.utc) + timedelta(seconds=2)
        await publish(kafka, lot_credited(org_id, lot, expires_at), usage_deducted(org_id, lot, 1000))
        item = await listed(svc, org_id, lot, remaining=0)
        assert item["status"] in ("depleted", "commanded")
        await commands.wait_for(of(org_id, "expire_lot", lot_id=lot), timeout=30)


async def test_commanded_item_without_terminal_event_is_commanded_again_after_the_recommand_period(
    settings, fresh_db, group, org_id, kafka
):
    clock = ShiftClock()
    async with running(settings, fresh_db, group, clock) as svc, \
            TopicReader(settings.kafka_bootstrap, topics.EXPIRY_COMMANDS) as commands:
        lot = f"{org_id}-o1#0"
        await publish(kafka, lot_credited(org_id, lot, clock.now() - timedelta(seconds=10)))
        [first] = await commands.wait_for(of(org_id, "expire_lot", lot_id=lot), timeout=30)
        await commands.settle(quiet_s=1.5)
        assert len(commands.events(of(org_id, "expire_lot"))) == 1
        clock.advance(domain.recommand_after(settings.expiry_interval_s))
        again = await commands.wait_for(of(org_id, "expire_lot", lot_id=lot), count=2, timeout=30)
        assert again[1]["id"] != first["id"]
        await commands.settle(quiet_s=1.5)
        assert len(commands.events(of(org_id, "expire_lot"))) == 2
        assert (await listed(svc, org_id, lot))["status"] == "commanded"


async def test_command_claimed_before_a_crash_is_published_after_restart(settings, fresh_db, group, org_id, kafka):
    lot = f"{org_id}-o1#0"
    async with TopicReader(settings.kafka_bootstrap, topics.EXPIRY_COMMANDS) as commands:
        async with running(settings, fresh_db, group) as svc:
            await svc.rt.relay.stop()  # the process "dies" before its relay publishes
            await publish(kafka, lot_credited(org_id, lot, datetime.now(timezone.utc) - timedelta(seconds=10)))
            await listed(svc, org_id, lot, status="commanded")
            pending = await svc.rt.pool.fetchval(
                "SELECT count(*) FROM outbox_state WHERE state = 'unsent' AND topic = $1", topics.EXPIRY_COMMANDS
            )
            assert pending >= 1
            await commands.settle(quiet_s=1.0)
            assert commands.events(of(org_id, "expire_lot")) == []
        async with running(settings, fresh_db, group):
            await commands.wait_for(of(org_id, "expire_lot", lot_id=lot), timeout=30)
            await commands.settle(quiet_s=1.5)
            assert len(commands.events(of(org_id, "expire_lot"))) == 1


# ---------------------------------------------------------------- two sweepers


async def test_two_sweepers_command_each_due_item_once(settings, fresh_db, group, kafka):
    orgs = [f"org-{uuid.uuid4().hex[:10]}" for _ in range(6)]
    lots = [(org, f"{org}-o{n}.0") for org in orgs for n in range(25)]
    async with running(settings, fresh_db, group) as a, running(settings, fresh_db, group) as b, \
            TopicReader(settings.kafka_bootstrap, topics.EXPIRY_COMMANDS) as commands:
        expires_at = datetime.now(timezone.utc) + timedelta(seconds=2)
        await publish(kafka, *(lot_credited(org, lot, expires_at) for org, lot in lots))
        mine = set(orgs)
        got = await commands.wait_for(lambda e: e["subject"] in mine, count=len(lots), timeout=60)
        await commands.settle(quiet_s=2.0)
        got = commands.events(lambda e: e["subject"] in mine)
        assert sorted(e["data"]["lot_id"] for e in got) == sorted(lot for _, lot in lots)
        assert all(e["type"] == "aimis.expiry.expire_lot" for e in got)
        for s in (a, b):
            assert all(i["status"] == "commanded" for i in (await s.schedule(orgs[0]))["items"])


# test_claim_due_skips_rows_another_sweeper_holds moved to tests/component/test_expiry_sweep.py


# ---------------------------------------------------------------- licences and services


async def test_licence_end_service_acceptance_and_maintenance_end_are_commanded_on_time(
    settings, fresh_db, group, org_id, kafka
):
    async with running(settings, fresh_db, group) as svc, \
            TopicReader(settings.kafka_bootstrap, topics.EXPIRY_COMMANDS) as commands:
        await publish(kafka, lot_credited(org_id, f"{org_id}-warm#0", datetime.now(timezone.utc) + 300 * DAY))
        await listed(svc, org_id, f"{org_id}-warm#0")  # the consumer is assigned and caught up
        due = datetime.now(timezone.utc) + timedelta(seconds=3)
        await publish(
            kafka,
            licence_activated(org_id, due),
            service_granted(org_id, f"{org_id}-s#0", accept_by=due),
            service_granted(org_id, f"{org_id}-s#1", ends_at=due),
        )
        await listed(svc, org_id, f"{org_id}-s#1", kind="maintenance")
        expected = {
            "end_licence": ("licence_id", f"{org_id}:basic", "ends_at"),
            "expire_service": ("service_id", f"{org_id}-s#0", "accept_by"),
            "end_maintenance": ("service_id", f"{org_id}-s#1", "ends_at"),
        }
        for kind, (field, ref, when) in expected.items():
            [cmd] = await commands.wait_for(of(org_id, kind, **{field: ref}), timeout=30)
            assert datetime.fromisoformat(cmd["data"][when]) == due
            lateness = at(cmd) - due
            assert timedelta(0) <= lateness < timedelta(seconds=5), lateness


async def test_accepted_service_is_never_expired(settings, fresh_db, group, org_id, kafka):
    async with running(settings, fresh_db, group) as svc, \
            TopicReader(settings.kafka_bootstrap, topics.EXPIRY_COMMANDS) as commands:
        accept_by = datetime.now(timezone.utc) + timedelta(seconds=3)
        accepted, open_ = f"{org_id}-s#0", f"{org_id}-s#1"
        await publish(
            kafka,
            service_granted(org_id, accepted, accept_by=accept_by),
            service_granted(org_id, open_, accept_by=accept_by),
            ledger("service_accepted", org_id, ServiceAcceptedData(
                org_id=org_id, service_id=accepted, accepted_at=datetime.now(timezone.utc))),
        )
        await commands.wait_for(of(org_id, "expire_service", service_id=open_), timeout=30)  # its twin, past due
        await commands.settle(quiet_s=1.5)
        assert commands.events(of(org_id, "expire_service", service_id=accepted)) == []
        assert [i["ref_id"] for i in (await svc.schedule(org_id))["items"]] == [open_]


async def test_renewed_licence_is_not_ended_at_its_old_date(settings, fresh_db, group, org_id, kafka):
    async with running(settings, fresh_db, group) as svc, \
            TopicReader(settings.kafka_bootstrap, topics.EXPIRY_COMMANDS) as commands:
        old_end = datetime.now(timezone.utc) + timedelta(seconds=3)
        new_end = old_end + 30 * DAY
        await publish(kafka, licence_activated(org_id, old_end), licence_activated(org_id, new_end))
        item = await listed(svc, org_id, f"{org_id}:basic", due_at=lambda v: datetime.fromisoformat(v) == new_end)
        assert item["status"] == "scheduled"
        await wait_until(lambda: datetime.now(timezone.utc) > old_end + timedelta(seconds=1.5), timeout=10)
        await commands.settle(quiet_s=1.0)
        assert commands.events(of(org_id, "end_licence")) == []


# ---------------------------------------------------------------- reminders


async def test_reminders_go_out_once_per_threshold_across_a_restart(settings, fresh_db, group, org_id, kafka):
    clock = ShiftClock()
    lot = f"{org_id}-o1#0"
    expires_at = clock.now() + 40 * DAY  # no reminder due until both events are in the schedule
    async with TopicReader(settings.kafka_bootstrap, topics.NOTIFICATIONS) as notes:
        def sent(d: int) -> list[dict]:
            return notes.events(of(org_id, "expiry_upcoming", ref_id=lot, days_before=d))

        async with running(settings, fresh_db, group, clock) as svc:
            await publish(kafka, lot_credited(org_id, lot, expires_at), usage_deducted(org_id, lot, 250))
            await listed(svc, org_id, lot, remaining=750)
            clock.advance(30 * DAY)  # 10 days left
            [r30] = await notes.wait_for(of(org_id, "expiry_upcoming", days_before=30), timeout=30)
            assert r30["data"] == {
                "org_id": org_id, "kind": "lot", "ref_id": lot,
                "expires_at": r30["data"]["expires_at"], "days_before": 30, "remaining": 750,
            }
            assert datetime.fromisoformat(r30["data"]["expires_at"]) == expires_at
            clock.advance(4 * DAY)  # 6 days left
            await notes.wait_for(of(org_id, "expiry_upcoming", days_before=7), timeout=30)
        async with running(settings, fresh_db, group, clock):
            await notes.settle(quiet_s=2.0)  # four sweeps after the restart
            assert (len(sent(30)), len(sent(7)), len(sent(1))) == (1, 1, 0)
            clock.advance(5 * DAY + timedelta(hours=12))  # half a day left
            await notes.wait_for(of(org_id, "expiry_upcoming", days_before=1), timeout=30)
            await notes.settle(quiet_s=1.5)
            assert (len(sent(30)), len(sent(7)), len(sent(1))) == (1, 1, 1)


async def test_item_created_inside_several_thresholds_gets_one_reminder(settings, fresh_db, group, org_id, kafka):
    async with running(settings, fresh_db, group) as svc, \
            TopicReader(settings.kafka_bootstrap, topics.NOTIFICATIONS) as notes:
        ends_at = datetime.now(timezone.utc) + 3 * DAY
        await publish(kafka, licence_activated(org_id, ends_at))
        [r] = await notes.wait_for(of(org_id, "expiry_upcoming"), timeout=30)
        assert r["data"] == {
            "org_id": org_id, "kind": "licence", "ref_id": f"{org_id}:basic",
            "expires_at": r["data"]["expires_at"], "days_before": 7, "remaining": None,
        }
        await notes.settle(quiet_s=1.5)
        assert len(notes.events(of(org_id, "expiry_upcoming"))) == 1
        decided = await store.reminders_of(svc.rt.pool, "licence", f"{org_id}:basic")
        assert [(r["days_before"], r["status"]) for r in decided] == [(30, "skipped"), (7, "sent")]


# ---------------------------------------------------------------- schedule endpoint and bad input


async def test_schedule_lists_the_orgs_open_items_by_due_time(settings, fresh_db, group, org_id, kafka):
    other = f"org-{uuid.uuid4().hex[:10]}"
    now = datetime.now(timezone.utc)
    async with running(settings, fresh_db, group) as svc:
        await publish(
            kafka,
            lot_credited(org_id, f"{org_id}-a#0", now + 200 * DAY, quantity=2000),
            licence_activated(org_id, now + 100 * DAY),
            service_granted(org_id, f"{org_id}-s#0", accept_by=now + 300 * DAY),
            service_granted(org_id, f"{org_id}-m#0", ends_at=now + 50 * DAY),
            usage_deducted(org_id, f"{org_id}-a#0", 500),
            lot_credited(other, f"{other}-x#0", now + 10 * DAY),
        )
        await listed(svc, org_id, f"{org_id}-a#0", remaining=1500)
        await listed(svc, other, f"{other}-x#0")
        body = await svc.schedule(org_id)
        assert body["org_id"] == org_id
        assert [(i["kind"], i["ref_id"], i["remaining"], i["status"]) for i in body["items"]] == [
            ("maintenance", f"{org_id}-m#0", None, "scheduled"),
            ("licence", f"{org_id}:basic", None, "scheduled"),
            ("lot", f"{org_id}-a#0", 1500, "scheduled"),
            ("service", f"{org_id}-s#0", None, "scheduled"),
        ]
        lot = body["items"][2]
        assert datetime.fromisoformat(lot["due_at"]) - datetime.fromisoformat(lot["expires_at"]) == timedelta(
            seconds=settings.late_usage_grace_s
        )
        async with httpx.AsyncClient() as c:
            url = f"{svc.url}/v1/orgs/{org_id}/schedule"
            assert (await c.get(url)).status_code == 401
            forbidden = await c.get(url, headers=bearer(SECRET, other))
            assert forbidden.status_code == 404 and forbidden.json()["error"]["code"] == "NOT_FOUND"  # SPEC 7.4
            admin = await c.get(url, headers=bearer(SECRET))
            assert admin.status_code == 200 and len(admin.json()["items"]) == 4


async def test_bad_ledger_records_are_skipped_and_the_consumer_goes_on(settings, fresh_db, group, org_id, kafka):
    async with running(settings, fresh_db, group) as svc:
        lot = f"{org_id}-o1#0"
        good = lot_credited(org_id, lot, datetime.now(timezone.utc) + 100 * DAY)
        bad_schema = encode(good).replace(b'"quantity":1000', b'"quantity":"lots"')
        for raw in (b"not json", b'{"specversion":"1.0"}', bad_schema,
                    encode(ledger("usage_deducted", org_id, UsageDeductedData(
                        org_id=org_id, usage_id="u", resource="cloud_inspection", quantity=1,
                        occurred_at=datetime.now(timezone.utc),
                        allocations=[Allocation(lot_id="unknown#9", quantity=1)])))):
            await kafka.send_and_wait(topics.LEDGER, raw, key=org_id.encode())
        await publish(kafka, good, good)  # and a redelivered duplicate
        await publish(kafka, usage_deducted(org_id, lot, 10))
        await listed(svc, org_id, lot, remaining=990)
        assert len((await svc.schedule(org_id))["items"]) == 1
