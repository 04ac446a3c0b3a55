"""Expiry rules without I/O: schedule from ledger events, due selection, reminder selection."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from contracts.events import (
    Allocation,
    ArrearsOffsetData,
    LicenceActivatedData,
    LicenceExpiredData,
    LotCreditedData,
    LotExpiredData,
    ServiceAcceptedData,
    ServiceGrantedData,
    UsageDeductedData,
)
from services.expiry import domain
from services.expiry.domain import Item, plan_reminders
from shared.clock import FixedClock

T0 = datetime(2026, 3, 1, 12, tzinfo=timezone.utc)
GRACE = timedelta(seconds=300)
ORG = "hosp-1"
DAY = timedelta(days=1)


def _fold(events, items=None, now=T0):
    items = {} if items is None else items
    notes = []
    for _kind, data in events:
        notes += domain.apply(items, data, now, GRACE)
    return items, notes


def _lot(lot_id="o1#0", quantity=1000, expires_at=T0 + 10 * DAY):
    return ("lot_credited", LotCreditedData(
        org_id=ORG, lot_id=lot_id, order_id="o1", line=0, sku="CI-QTY", resource="cloud_inspection",
        quantity=quantity, storage_years=1, credited_at=expires_at - 365 * DAY, expires_at=expires_at,
    ))


def _deducted(*allocs):
    return ("usage_deducted", UsageDeductedData(
        org_id=ORG, usage_id="u1", resource="cloud_inspection", quantity=sum(q for _, q in allocs),
        occurred_at=T0, allocations=[Allocation(lot_id=lot, quantity=q) for lot, q in allocs],
    ))


def _licence(ends_at, licence_id=f"{ORG}:basic"):
    return ("licence_activated", LicenceActivatedData(
        org_id=ORG, licence_id=licence_id, order_id="o2", line=0, sku="SW-BASIC", feature="basic",
        period_start=T0, period_end=ends_at, ends_at=ends_at,
    ))


# ---------------------------------------------------------------- schedule from the ledger


def test_lot_is_due_at_its_expiry_plus_grace_with_its_quantity_remaining():
    items, _ = _fold([_lot(expires_at=T0 + DAY)])
    lot = items[("lot", "o1#0")]
    assert (lot.expires_at, lot.due_at, lot.remaining, lot.status) == (T0 + DAY, T0 + DAY + GRACE, 1000, "scheduled")


def test_deductions_and_arrears_offsets_draw_the_lot_down_to_depleted():
    items, _ = _fold([
        _lot("a#0", 1000), _lot("b#0", 1000),
        _deducted(("a#0", 600), ("b#0", 100)),
        ("arrears_offset",
         ArrearsOffsetData(org_id=ORG, lot_id="a#0", resource="cloud_inspection", quantity=400, offsets=[])),
    ])
    assert items[("lot", "a#0")].remaining == 0
    assert items[("lot", "a#0")].status == "depleted"
    assert items[("lot", "a#0")].is_open  # a depleted lot still expires
    assert items[("lot", "b#0")].remaining == 900


def test_deduction_from_an_unknown_lot_is_noted_not_raised():
    items, notes = _fold([_deducted(("nope#0", 5))])
    assert items == {} and notes == ["unknown_lot"]


def test_lot_expired_closes_the_lot():
    items, _ = _fold([_lot(), ("lot_expired", LotExpiredData(
        org_id=ORG, lot_id="o1#0", resource="cloud_inspection", forfeited=1000,
        expires_at=T0 + 10 * DAY, expired_at=T0 + 10 * DAY,
    ))])
    assert not items[("lot", "o1#0")].is_open


def test_repeated_lot_credit_after_expiry_does_not_reopen_the_lot():
    items, _ = _fold([_lot(), ("lot_expired", LotExpiredData(
        org_id=ORG, lot_id="o1#0", resource="cloud_inspection", forfeited=0,
        expires_at=T0 + 10 * DAY, expired_at=T0 + 10 * DAY,
    ))])
    items, notes = _fold([_lot()], items)
    assert not items[("lot", "o1#0")].is_open and notes == ["duplicate_lot"]


def test_licence_renewal_moves_the_deadline_and_rearms_the_command():
    items, _ = _fold([_licence(T0 + DAY)])
    lic = items[("licence", f"{ORG}:basic")]
    lic.commanded_at, lic.command_count = T0 + DAY, 1
    _fold([_licence(T0 + 30 * DAY)], items)
    assert (lic.due_at, lic.commanded_at, lic.command_count) == (T0 + 30 * DAY, None, 0)


def test_licence_renewed_after_it_ended_is_scheduled_again():
    items, _ = _fold([
        _licence(T0 + DAY),
        ("licence_expired",
         LicenceExpiredData(org_id=ORG, licence_id=f"{ORG}:basic", feature="basic", ended_at=T0 + DAY)),
    ])
    assert not items[("licence", f"{ORG}:basic")].is_open
    _fold([_licence(T0 + 40 * DAY)], items)
    assert items[("licence", f"{ORG}:basic")].is_open
    assert items[("licence", f"{ORG}:basic")].due_at == T0 + 40 * DAY


def test_perpetual_licence_has_no_deadline():
    items, _ = _fold([("licence_activated", LicenceActivatedData(
        org_id=ORG, licence_id=f"{ORG}:ai_perpetual", order_id="o", line=0, sku="AI-PERPETUAL",
        feature="ai_perpetual", period_start=T0,
    ))])
    assert items == {}


def test_service_acceptance_deadline_and_maintenance_end_are_scheduled_and_acceptance_closes():
    items, _ = _fold([
        ("service_granted", ServiceGrantedData(
            org_id=ORG, service_id="s#0", order_id="s", line=0, sku="SVC-DELIVERY", mode="local",
            purchased_at=T0, accept_by=T0 + 365 * DAY)),
        ("service_granted", ServiceGrantedData(
            org_id=ORG, service_id="s#1", order_id="s", line=1, sku="SVC-MAINTENANCE", years=2,
            purchased_at=T0, ends_at=T0 + 730 * DAY)),
        ("service_accepted", ServiceAcceptedData(org_id=ORG, service_id="s#0", accepted_at=T0 + DAY)),
    ])
    assert not items[("service", "s#0")].is_open
    assert items[("maintenance", "s#1")].due_at == T0 + 730 * DAY


def test_acceptance_seen_before_the_grant_keeps_the_service_closed():
    items, notes = _fold([
        ("service_accepted", ServiceAcceptedData(org_id=ORG, service_id="s#0", accepted_at=T0)),
        ("service_granted", ServiceGrantedData(
            org_id=ORG, service_id="s#0", order_id="s", line=0, sku="SVC-DELIVERY", mode="local",
            purchased_at=T0, accept_by=T0 + DAY)),
    ])
    assert not items[("service", "s#0")].is_open
    assert notes == ["unknown_service", "duplicate_service"]


# ---------------------------------------------------------------- due selection


def _item(due_at, commanded_at=None, closed_at=None):
    return Item("lot", "x", ORG, due_at - GRACE, due_at, commanded_at=commanded_at, closed_at=closed_at)


def test_item_is_not_due_before_its_due_time():
    clock = FixedClock(T0)
    item = _item(T0 + timedelta(seconds=1))
    assert not domain.is_due(item, clock.now(), domain.recommand_after(30))
    clock.advance(timedelta(seconds=1))
    assert domain.is_due(item, clock.now(), domain.recommand_after(30))


def test_commanded_item_is_commanded_again_only_after_the_recommand_period():
    again = domain.recommand_after(30)
    assert again == timedelta(seconds=300)  # 10 x interval
    item = _item(T0, commanded_at=T0)
    assert not domain.is_due(item, T0 + again - timedelta(seconds=1), again)
    assert domain.is_due(item, T0 + again, again)


def test_recommand_period_has_a_floor_for_short_intervals():
    assert domain.recommand_after(0.5) == timedelta(seconds=60)


def test_closed_item_is_never_due():
    assert not domain.is_due(_item(T0, closed_at=T0), T0 + 365 * DAY, domain.recommand_after(30))


def test_command_carries_the_deadline_not_the_due_time():
    item = Item("lot", "o1#0", ORG, T0, T0 + GRACE, command_count=1)
    data = domain.command(item)
    assert data.TYPE == "aimis.expiry.expire_lot"
    assert data.model_dump() == {"org_id": ORG, "lot_id": "o1#0", "expires_at": T0}


def test_each_command_attempt_has_its_own_id():
    a = Item("lot", "o1#0", ORG, T0, T0, command_count=1)
    b = Item("lot", "o1#0", ORG, T0, T0, command_count=2)
    assert domain.command_id(a) != domain.command_id(b)
    assert domain.command_id(a) == domain.command_id(Item("lot", "o1#0", ORG, T0, T0, command_count=1))


# ---------------------------------------------------------------- reminder selection

THRESHOLDS = [30, 7, 1]


def test_no_reminder_before_the_largest_threshold():
    assert plan_reminders(T0 + 31 * DAY, T0, THRESHOLDS, []) == domain.ReminderPlan(None, ())


def test_each_threshold_reminds_once_as_time_passes():
    expires = T0 + 40 * DAY
    clock = FixedClock(T0)
    decided: list[int] = []
    sent = []
    for _ in range(40 * 24):
        plan = plan_reminders(expires, clock.now(), THRESHOLDS, decided)
        if plan.send is not None:
            sent.append((plan.send, expires - clock.now()))
            decided.append(plan.send)
        decided += plan.skip
        clock.advance(timedelta(hours=1))
    assert [d for d, _ in sent] == [30, 7, 1]
    assert all(timedelta(days=d - 1) < left <= timedelta(days=d) for d, left in sent)


def test_item_created_inside_several_thresholds_gets_only_the_smallest_passed():
    plan = plan_reminders(T0 + 3 * DAY, T0, THRESHOLDS, [])
    assert plan == domain.ReminderPlan(7, (30,))


def test_depleted_lot_gets_no_reminder_and_its_thresholds_are_skipped():
    plan = plan_reminders(T0 + 3 * DAY, T0, THRESHOLDS, [], depleted=True)
    assert plan == domain.ReminderPlan(None, (7, 30))


def test_no_reminder_after_the_deadline_passed():
    plan = plan_reminders(T0 - DAY, T0, THRESHOLDS, [30])
    assert plan == domain.ReminderPlan(None, (1, 7))


def test_zero_day_threshold_reminds_at_the_deadline():
    assert plan_reminders(T0, T0, [7, 0], [7]) == domain.ReminderPlan(0, ())


def test_threshold_added_later_above_a_decided_one_is_skipped():
    assert plan_reminders(T0 + 5 * DAY, T0, [30, 14, 7], [7]) == domain.ReminderPlan(None, (14, 30))


@given(
    offsets=st.lists(st.integers(min_value=0, max_value=60 * 24), min_size=1, max_size=30).map(sorted),
    thresholds=st.sets(st.integers(min_value=0, max_value=40), min_size=1, max_size=5),
)
def test_reminders_are_never_repeated_and_never_more_than_one_per_sweep(offsets, thresholds):
    expires = T0 + 30 * DAY
    decided: set[int] = set()
    for minutes in offsets:
        now = T0 + timedelta(hours=minutes)
        plan = plan_reminders(expires, now, thresholds, decided)
        new = ({plan.send} if plan.send is not None else set()) | set(plan.skip)
        assert not new & decided
        assert len(set(plan.skip)) == len(plan.skip)
        decided |= new
    assert decided <= thresholds
