"""Expiry rules, pure Python: the deadline each ledger event creates, moves or closes; when a
deadline is due for its command; which reminder (if any) an item gets now.

No I/O here: handlers load the items a batch touches, `apply` folds the batch's events into them,
and the store writes back what changed.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Literal

from contracts.events import (
    ArrearsOffsetData,
    EndLicenceData,
    EndMaintenanceData,
    EventData,
    ExpireLotData,
    ExpireServiceData,
    ExpiryUpcomingData,
    LicenceActivatedData,
    LicenceExpiredData,
    LotCreditedData,
    LotExpiredData,
    MaintenanceEndedData,
    ServiceAcceptedData,
    ServiceExpiredData,
    ServiceGrantedData,
    UsageDeductedData,
)

Kind = Literal["lot", "licence", "service", "maintenance"]
Key = tuple[str, str]  # (kind, ref_id)
Status = Literal["scheduled", "depleted", "commanded"]

Command = ExpireLotData | EndLicenceData | ExpireServiceData | EndMaintenanceData
_IDS = uuid.UUID("5b0c1f43-9a57-4bd6-9a1e-2f6a3c1d7e10")  # namespace of our deterministic event ids

# A commanded item whose terminal ledger event has not arrived is commanded again after this
# many sweep intervals (never sooner than MIN_RECOMMAND): entitlement ignores repeats.
RECOMMAND_INTERVALS = 10
MIN_RECOMMAND = timedelta(seconds=60)


@dataclass
class Item:
    """One deadline: a lot's expiry (+ grace), a licence's end, a service's acceptance deadline,
    a maintenance subscription's end."""

    kind: Kind
    ref_id: str
    org_id: str
    expires_at: datetime
    due_at: datetime
    quantity: int | None = None
    remaining: int | None = None
    commanded_at: datetime | None = None
    command_count: int = 0
    closed_at: datetime | None = None
    changed: bool = field(default=False, compare=False)

    @property
    def key(self) -> Key:
        return (self.kind, self.ref_id)

    @property
    def is_open(self) -> bool:
        return self.closed_at is None

    @property
    def depleted(self) -> bool:
        return self.kind == "lot" and self.remaining is not None and self.remaining <= 0

    @property
    def status(self) -> Status:
        if self.commanded_at is not None:
            return "commanded"
        return "depleted" if self.depleted else "scheduled"

    def close(self, now: datetime) -> None:
        if self.closed_at is None:
            self.closed_at = now
            self.changed = True


# ---------------------------------------------------------------- schedule from the ledger


def refs(data: EventData) -> list[Key]:
    """The items a ledger event may touch (so the handler can load them in one query)."""
    match data:
        case LotCreditedData() | ArrearsOffsetData() | LotExpiredData():
            return [("lot", data.lot_id)]
        case UsageDeductedData():
            return [("lot", a.lot_id) for a in data.allocations]
        case LicenceActivatedData() | LicenceExpiredData():
            return [("licence", data.licence_id)]
        case ServiceGrantedData():
            return [("service", data.service_id), ("maintenance", data.service_id)]
        case ServiceAcceptedData() | ServiceExpiredData():
            return [("service", data.service_id)]
        case MaintenanceEndedData():
            return [("maintenance", data.service_id)]
    return []


def apply(items: dict[Key, Item], data: EventData, now: datetime, grace: timedelta) -> list[str]:
    """Fold one ledger event (its data) into `items` (mutated; changed items get `changed=True`).

    Returns notes for the log and metrics ("unknown_lot", "stale_licence", ...); never raises for
    an event that merely does not fit what we know.
    """
    notes: list[str] = []

    def _lot(lot_id: str) -> Item | None:
        item = items.get(("lot", lot_id))
        if item is None:
            notes.append("unknown_lot")
        return item

    match data:
        case LotCreditedData():
            key = ("lot", data.lot_id)
            if key in items:
                notes.append("duplicate_lot")
            else:
                items[key] = Item(
                    "lot", data.lot_id, data.org_id, data.expires_at, data.expires_at + grace,
                    quantity=data.quantity, remaining=data.quantity, changed=True,
                )
        case UsageDeductedData():
            for a in data.allocations:
                if (item := _lot(a.lot_id)) is not None:
                    _draw(item, a.quantity, notes)
        case ArrearsOffsetData():
            if (item := _lot(data.lot_id)) is not None:
                _draw(item, data.quantity, notes)
        case LotExpiredData():
            _close(items, ("lot", data.lot_id), data.org_id, data.expires_at, data.expires_at + grace, now, notes)
        case LicenceActivatedData():
            if data.ends_at is not None:  # perpetual (ai_perpetual): no deadline
                _licence_period(items, data.licence_id, data.org_id, data.ends_at, notes)
        case LicenceExpiredData():
            item = items.get(("licence", data.licence_id))
            if item is not None and item.is_open and data.ended_at < item.expires_at:
                notes.append("stale_licence_expired")  # ended before a renewal we already know of
            else:
                _close(items, ("licence", data.licence_id), data.org_id, data.ended_at, data.ended_at, now, notes)
        case ServiceGrantedData():
            if data.accept_by is not None:
                _create(items, Item("service", data.service_id, data.org_id, data.accept_by, data.accept_by), notes)
            if data.ends_at is not None:
                _create(items, Item("maintenance", data.service_id, data.org_id, data.ends_at, data.ends_at), notes)
        case ServiceAcceptedData():
            _close(items, ("service", data.service_id), data.org_id, data.accepted_at, data.accepted_at, now, notes)
        case ServiceExpiredData():
            _close(items, ("service", data.service_id), data.org_id, data.expired_at, data.expired_at, now, notes)
        case MaintenanceEndedData():
            _close(items, ("maintenance", data.service_id), data.org_id, data.ended_at, data.ended_at, now, notes)
    return notes


def _draw(item: Item, quantity: int, notes: list[str]) -> None:
    before = item.remaining or 0
    if quantity > before:
        notes.append("overdrawn_lot")
    item.remaining = max(0, before - quantity)
    item.changed = True


def _create(items: dict[Key, Item], item: Item, notes: list[str]) -> None:
    if item.key in items:  # a repeat, or a tombstone of an item already closed
        notes.append(f"duplicate_{item.kind}")
        return
    item.changed = True
    items[item.key] = item


def _close(
    items: dict[Key, Item], key: Key, org_id: str, expires_at: datetime, due_at: datetime,
    now: datetime, notes: list[str],
) -> None:
    item = items.get(key)
    if item is None:
        # A terminal event for an item we never saw: keep a closed tombstone so a late creation
        # event cannot schedule it.
        notes.append(f"unknown_{key[0]}")
        item = items[key] = Item(key[0], key[1], org_id, expires_at, due_at)  # type: ignore[arg-type]
    item.close(now)


def _licence_period(items: dict[Key, Item], licence_id: str, org_id: str, ends_at: datetime, notes: list[str]) -> None:
    key = ("licence", licence_id)
    item = items.get(key)
    if item is None:
        items[key] = Item("licence", licence_id, org_id, ends_at, ends_at, changed=True)
        return
    if ends_at <= item.expires_at:
        notes.append("stale_licence_activated")
        return
    # A renewal: the licence now ends later. Move the deadline, re-arm the command (and, because
    # reminders are keyed by expires_at, the reminders); reopen it if it had ended in between.
    item.expires_at = item.due_at = ends_at
    item.commanded_at = None
    item.command_count = 0
    item.closed_at = None
    item.changed = True


# ---------------------------------------------------------------- the sweep


def recommand_after(interval_s: float) -> timedelta:
    return max(MIN_RECOMMAND, timedelta(seconds=RECOMMAND_INTERVALS * interval_s))


def is_due(item: Item, now: datetime, again_after: timedelta) -> bool:
    """Open, past its due time, and not commanded (or commanded long enough ago to repeat).
    store.claim_due selects exactly these rows."""
    if not item.is_open or now < item.due_at:
        return False
    return item.commanded_at is None or now >= item.commanded_at + again_after


def command(item: Item) -> Command:
    """The command (its data; the model names the event type) for a due item."""
    if item.kind == "lot":
        return ExpireLotData(org_id=item.org_id, lot_id=item.ref_id, expires_at=item.expires_at)
    if item.kind == "licence":
        return EndLicenceData(org_id=item.org_id, licence_id=item.ref_id, ends_at=item.expires_at)
    if item.kind == "service":
        return ExpireServiceData(org_id=item.org_id, service_id=item.ref_id, accept_by=item.expires_at)
    return EndMaintenanceData(org_id=item.org_id, service_id=item.ref_id, ends_at=item.expires_at)


def command_id(item: Item) -> str:
    """Deterministic per item, deadline and attempt: a repeat attempt is a new message."""
    return str(uuid.uuid5(_IDS, f"cmd|{item.kind}|{item.ref_id}|{_iso(item.expires_at)}|{item.command_count}"))


# ---------------------------------------------------------------- reminders


@dataclass(frozen=True)
class ReminderPlan:
    send: int | None  # the threshold (days before) to remind for now, if any
    skip: tuple[int, ...]  # thresholds passed that will never be sent


def plan_reminders(
    expires_at: datetime, now: datetime, thresholds: Iterable[int], decided: Iterable[int], *, depleted: bool = False
) -> ReminderPlan:
    """Which reminder an item gets at `now`.

    A threshold d has passed when now >= expires_at - d days. Of the passed, undecided thresholds
    only the smallest is sent (an item created inside several thresholds gets one reminder, not a
    burst); the larger ones are skipped. Thresholds larger than one already decided are skipped
    (e.g. added to the configuration later). Nothing is sent once the deadline itself has passed
    (except a 0-day threshold, which means "at the deadline"), nor for a depleted lot.
    """
    decided = set(decided)
    floor = min(decided) if decided else None
    passed = sorted(
        d for d in set(thresholds) if d not in decided and now >= expires_at - timedelta(days=d)
    )
    if not passed:
        return ReminderPlan(None, ())
    eligible = [
        d for d in passed
        if not depleted and (floor is None or d < floor) and (now < expires_at or d == 0)
    ]
    send = eligible[0] if eligible else None
    return ReminderPlan(send, tuple(d for d in passed if d != send))


def reminder(item: Item, days_before: int) -> ExpiryUpcomingData:
    return ExpiryUpcomingData(
        org_id=item.org_id, kind=item.kind, ref_id=item.ref_id, expires_at=item.expires_at,
        days_before=days_before, remaining=item.remaining if item.kind == "lot" else None,
    )


def reminder_id(item: Item, days_before: int) -> str:
    return str(uuid.uuid5(_IDS, f"rem|{item.kind}|{item.ref_id}|{_iso(item.expires_at)}|{days_before}"))


def _iso(at: datetime) -> str:
    return at.astimezone(timezone.utc).isoformat()
