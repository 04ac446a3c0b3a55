"""Kafka consumers of entitlement, in the one shape of shared/consumer.py: deductions, paid orders,
expiry commands. Each policy changes state through the store and returns the ledger events; the
consumer base appends them to the outbox, whose rows on aimis.ledger.v1 are also the ledger
(migrations/005_ledger_in_outbox.sql). Bad input goes to `aimis.entitlement.dlq.v1`.
"""

from __future__ import annotations

import collections
import logging
from collections import defaultdict
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import asyncpg
from prometheus_client import Counter

from contracts import events as ev
from contracts import topics
from contracts.events import CloudEvent, models_on
from services.entitlement import domain, store
from services.entitlement.domain import Book, Counters, Deducted
from shared.consumer import Claim, DeadLetters, Subscription
from shared.service import Runtime

log = logging.getLogger(__name__)

DEDUCTIONS = Counter(
    "aimis_entitlement_deductions_total", "Uses applied", ["resource", "outcome"]
)

Deltas = dict[tuple[str, str], Counters]


def subscriptions(rt: Runtime) -> list[Subscription]:
    h = Handlers(rt)
    dead = DeadLetters(rt)
    return [
        Subscription(
            topic=topics.DEDUCTIONS, accepts=(ev.DeductionRequestedData,), stream="usage", claim="overlap",
            key=usage_key, lock=h.lock_uses, policy=h.deductions, rejects=dead,
        ),
        Subscription(
            topic=topics.ORDERS, accepts=(ev.OrderPaidData,),
            ignores=tuple(m for m in models_on(topics.ORDERS) if m is not ev.OrderPaidData),
            stream="order_paid", key=lambda e: e.data.order_id, check=check_order,
            lock=h.lock_lots_of_orders, policy=h.orders, rejects=dead,
        ),
        Subscription(
            topic=topics.EXPIRY_COMMANDS, accepts=models_on(topics.EXPIRY_COMMANDS), stream="expiry",
            claim="on_effect", lock=h.lock_expiring_lots, policy=h.command, rejects=dead,
        ),
    ]


def usage_key(e: CloudEvent[Any]) -> str:
    """A use is one per (org, usage id) (SPEC 7.3); an org id has no ':'."""
    return f"{e.data.org_id}:{e.data.usage_id}"


def check_order(e: CloudEvent[Any]) -> tuple[str, str] | None:
    """A paid order with a line that cannot be credited is bad as a whole (nothing of it is credited)."""
    seen: set[int] = set()
    try:
        for line in e.data.lines:
            if line.line in seen:
                raise domain.UnknownOrderLine(line.line, "line index repeated")
            seen.add(line.line)
            domain.check_line(line.line, line.sku, quantity=line.quantity, storage_years=line.storage_years,
                              months=line.months, feature=line.feature, years=line.years)
    except domain.UnknownOrderLine as err:
        return "UNKNOWN_ORDER_LINE", str(err)
    return None


class Handlers:
    def __init__(self, rt: Runtime):
        self.rt = rt
        self.grace = timedelta(seconds=rt.settings.late_usage_grace_s)

    # ------------------------------------------------------------ deductions

    async def lock_uses(self, conn: asyncpg.Connection, events: list[CloudEvent[Any]]) -> None:
        await store.lock_balances(conn, {(e.data.org_id, e.data.resource) for e in events})

    async def deductions(self, conn: asyncpg.Connection, events: list[CloudEvent[Any]],
                         now: datetime, claim: Claim | None = None) -> list[ev.Outgoing]:
        """Deduct the uses. With `claim` (the consumer's claim="overlap"), `events` are the batch's
        first occurrences and not yet claimed: the inbox claim runs in PostgreSQL while the
        deduction runs here, on copies of the lots; when some turn out processed before, the
        deduction is made again for the new ones only."""
        todo: list[ev.DeductionRequestedData] = [e.data for e in events]
        keys: set[tuple[str, str]] = {(u.org_id, u.resource) for u in todo}
        lots = await store.drawable_lots(conn, keys, now, self.grace)
        offline_orgs = {u.org_id for u in todo if u.resource == domain.AI and u.channel == "offline"}
        perpetual = await store.perpetual_since(conn, sorted(offline_orgs)) if offline_orgs else {}
        if claim is not None:
            await claim.send()
        books, outcomes, out = self._deduct(todo, lots, now, perpetual)
        if claim is not None and len(new := await claim.new()) < len(events):
            todo = [e.data for e in new]
            books, outcomes, out = self._deduct(todo, lots, now, perpetual)
        for (resource, outcome), n in collections.Counter(
                (u.resource, "deducted" if isinstance(o, Deducted) else "rejected")
                for u, o in zip(todo, outcomes, strict=True)).items():
            DEDUCTIONS.labels(resource, outcome).inc(n)  # once per batch, not per use
        changed = [b.lots[i] for b in books.values() for i in b.touched]
        await store.save_deductions(conn, changed, [
            (u.usage_id, u.org_id, u.resource, u.occurred_at, o.arrears_quantity,
             o.arrears_quantity - sum(d.quantity for d in o.offsets))
            for u, o in zip(todo, outcomes, strict=True) if isinstance(o, Deducted) and o.arrears_quantity
        ], {k: b.counters for k, b in books.items()})
        return out

    def _deduct(self, todo: list[ev.DeductionRequestedData], lots: dict[tuple[str, str], list[domain.Lot]],
                now: datetime, perpetual: dict[str, datetime],
                ) -> tuple[dict[tuple[str, str], Book], list[domain.Outcome], list[ev.Outgoing]]:
        """The uses against books of copies of `lots` (which stay as read), and their ledger events."""
        keys: set[tuple[str, str]] = {(u.org_id, u.resource) for u in todo}
        books = {k: store.book_of(k[1], [replace(lot) for lot in lots[k]]) for k in keys}
        # the requests are the uses (domain.UseLike): no copy of each into a Use
        uses = [(u.org_id, u) for u in todo]
        outcomes = domain.deduct_batch(books, uses, now, self.grace, perpetual)
        events: list[ev.Outgoing] = []
        for u, o in zip(todo, outcomes, strict=True):
            events.append(self._usage_event(u, o, now))
            if isinstance(o, Deducted) and o.offsets:
                # then one arrears_offset per lot credited after the use occurred that offset its
                # arrears at once (docs/decisions/arrival-order.md)
                events += [self._offset_event(u.org_id, d.lot_id, u.resource,
                                              [domain.Offset(u.usage_id, d.quantity, d.retention_until)])
                           for d in o.offsets]
        return books, outcomes, events

    def _offset_event(self, org: str, lot_id: str, resource: str, offsets: list[domain.Offset]) -> CloudEvent[Any]:
        return self.rt.event(org, ev.ArrearsOffsetData(
            org_id=org, lot_id=lot_id, resource=resource, quantity=sum(o.quantity for o in offsets),
            offsets=[ev.ArrearsOffsetItem(usage_id=o.usage_id, quantity=o.quantity,
                                          retention_until=o.retention_until) for o in offsets],
        ))

    def _usage_event(self, u: ev.DeductionRequestedData, outcome: domain.Outcome, now: datetime) -> ev.Encoded:
        """The ledger entry of one use, serialised from plain values (`encoded`: no model built, one
        per use on the hot path): every value comes from the validated deduction request or from
        the deduction rules (lot ids, quantities, tz-aware retention dates). Its time is the
        batch's `now`, the time the deduction rules were applied at."""
        if isinstance(outcome, Deducted):
            return self.rt.encoded(ev.UsageDeductedData, u.org_id, {
                "org_id": u.org_id, "usage_id": u.usage_id, "resource": u.resource, "quantity": u.quantity,
                "occurred_at": u.occurred_at, "channel": u.channel, "inspection_id": u.inspection_id,
                "site_id": u.site_id, "attributes": u.attributes,
                "allocations": [{"lot_id": d.lot_id, "quantity": d.quantity, "retention_until": d.retention_until}
                                for d in outcome.allocations],
                "arrears_quantity": outcome.arrears_quantity, "offline_licence": outcome.offline_licence,
            }, time=now)
        return self.rt.encoded(ev.UsageRejectedLedgerData, u.org_id, {
            "org_id": u.org_id, "usage_id": u.usage_id, "resource": u.resource, "quantity": u.quantity,
            "occurred_at": u.occurred_at, "channel": u.channel, "reason": outcome.reason,
        }, time=now)

    # ------------------------------------------------------------ orders

    async def lock_lots_of_orders(self, conn: asyncpg.Connection, events: list[CloudEvent[Any]]) -> None:
        await store.lock_balances(conn, {
            (e.data.org_id, domain.LOT_SKUS[l.sku]) for e in events for l in e.data.lines if l.sku in domain.LOT_SKUS
        })

    async def orders(self, conn: asyncpg.Connection, events: list[CloudEvent[Any]],
                     now: datetime) -> list[CloudEvent[Any]]:
        deltas: Deltas = defaultdict(Counters)
        ledger: list[CloudEvent[Any]] = []
        for e in events:
            ledger += await self._credit_order(conn, e.data, now, deltas)
        await store.add_counters(conn, deltas)
        return ledger

    async def _credit_order(self, conn: asyncpg.Connection, p: ev.OrderPaidData, now: datetime,
                            deltas: Deltas) -> list[CloudEvent[Any]]:
        out: list[CloudEvent[Any]] = []
        org = p.org_id
        for l in sorted(p.lines, key=lambda l: l.line):
            kind, ref = domain.line_kind(l.sku), f"{p.order_id}.{l.line}"
            if kind == "lot":
                out += await self._credit_lot(conn, p, l, ref, deltas)
            elif kind in ("licence", "perpetual"):
                out.append(await self._activate_licence(conn, p, l))
            else:
                out.append(await self._grant_service(conn, p, l, ref))
        await store.mark_fulfilled(conn, p.order_id, org, len(p.lines), p.paid_at, now)
        out.append(self.rt.event(org, ev.OrderFulfilledData(org_id=org, order_id=p.order_id, fulfilled_at=now)))
        return out

    async def _credit_lot(self, conn: asyncpg.Connection, p: ev.OrderPaidData, l: ev.OrderLineData, lot_id: str,
                          deltas: Deltas) -> list[CloudEvent[Any]]:
        resource = domain.LOT_SKUS[l.sku]
        years = l.storage_years if resource == domain.CLOUD else None
        lot = domain.new_lot(lot_id, int(l.quantity or 0), years, p.paid_at)
        book = Book(resource, arrears=await store.open_arrears(conn, p.org_id, resource))
        before = {a.usage_id: a.outstanding for a in book.arrears}
        offsets = domain.credit(book, lot)
        if not await store.insert_lot(conn, p.org_id, resource, p.order_id, l.line, l.sku, lot):
            return []  # already credited (cannot happen behind the inbox; kept as a guard)
        await store.save_outstanding(conn, p.org_id, [(o.usage_id, before[o.usage_id] - o.quantity) for o in offsets])
        d = deltas[(p.org_id, resource)]
        d.purchased += book.counters.purchased
        d.arrears_offset += book.counters.arrears_offset
        out = [self.rt.event(p.org_id, ev.LotCreditedData(
            org_id=p.org_id, lot_id=lot_id, order_id=p.order_id, line=l.line, sku=l.sku, resource=resource,
            quantity=lot.quantity, storage_years=years, credited_at=lot.credited_at, expires_at=lot.expires_at,
        ))]
        if offsets:
            out.append(self._offset_event(p.org_id, lot_id, resource, offsets))
        return out

    async def _activate_licence(self, conn: asyncpg.Connection, p: ev.OrderPaidData,
                                l: ev.OrderLineData) -> CloudEvent[Any]:
        feature = domain.licence_feature(l.sku, l.feature)
        lic_id = domain.licence_id(p.org_id, feature)
        stored = await store.licence_for_update(conn, lic_id)
        current = stored.licence if stored is not None else None
        if l.sku == domain.AI_PERPETUAL:
            lic, start, end = domain.perpetual_licence(current, p.paid_at)
        else:
            lic, start, end = domain.renew(current, p.paid_at, int(l.months or 0))
        await store.upsert_licence(conn, lic_id, p.org_id, feature, lic)
        await store.insert_period(conn, p.order_id, l.line, lic_id, start, end)
        return self.rt.event(p.org_id, ev.LicenceActivatedData(
            org_id=p.org_id, licence_id=lic_id, order_id=p.order_id, line=l.line, sku=l.sku, feature=feature,
            period_start=start, period_end=end, ends_at=lic.ends_at,
        ))

    async def _grant_service(self, conn: asyncpg.Connection, p: ev.OrderPaidData, l: ev.OrderLineData,
                             service_id: str) -> CloudEvent[Any]:
        terms = domain.service_terms(l.sku, p.paid_at, l.years)
        await store.insert_service(
            conn, service_id=service_id, org_id=p.org_id, order_id=p.order_id, line=l.line, sku=l.sku,
            mode=l.mode, quantity=l.quantity, years=l.years, purchased_at=p.paid_at, accept_by=terms.accept_by,
            ends_at=terms.ends_at, status=terms.status,
        )
        return self.rt.event(p.org_id, ev.ServiceGrantedData(
            org_id=p.org_id, service_id=service_id, order_id=p.order_id, line=l.line, sku=l.sku, mode=l.mode,
            quantity=l.quantity, years=l.years, purchased_at=p.paid_at, accept_by=terms.accept_by,
            ends_at=terms.ends_at,
        ))

    # ------------------------------------------------------------ expiry commands

    async def lock_expiring_lots(self, conn: asyncpg.Connection, events: list[CloudEvent[Any]]) -> None:
        keys = await store.lot_keys(conn, [e.data.lot_id for e in events if isinstance(e.data, ev.ExpireLotData)])
        await store.lock_balances(conn, keys.values())

    async def command(self, conn: asyncpg.Connection, events: list[CloudEvent[Any]],
                      now: datetime) -> list[CloudEvent[Any]]:
        """One command at a time (claim on effect): the ledger event it causes, or nothing when it
        is early, repeated or stale."""
        out = [e for c in events if (e := await self._command(conn, c.data, now)) is not None]
        if not out:
            log.info("expiry command %s changed nothing (early, repeated or stale)", [c.id for c in events])
        return out

    async def _command(self, conn: asyncpg.Connection, d: ev.EventData, now: datetime) -> CloudEvent[Any] | None:
        match d:
            case ev.ExpireLotData():
                lot = await store.lot_for_expiry(conn, d.lot_id)
                forfeited = domain.lot_expiry(lot, d.org_id, now, self.grace)
                if lot is None or forfeited is None:
                    return None
                await store.mark_expired(conn, d.lot_id, forfeited, now)
                await store.add_counters(conn, {(lot.org_id, lot.resource): Counters(forfeited=forfeited)})
                return self.rt.event(d.org_id, ev.LotExpiredData(
                    org_id=d.org_id, lot_id=d.lot_id, resource=lot.resource, forfeited=forfeited,
                    expires_at=lot.expires_at, expired_at=now,
                ))
            case ev.EndLicenceData():
                lic = await store.licence_for_update(conn, d.licence_id)
                ended = domain.licence_end(lic, d.org_id, d.ends_at, now)
                if lic is None or ended is None:
                    return None
                await store.end_licence(conn, d.licence_id, ended)
                return self.rt.event(d.org_id, ev.LicenceExpiredData(
                    org_id=d.org_id, licence_id=d.licence_id, feature=lic.feature, ended_at=ended,
                ))
            case ev.ExpireServiceData() | ev.EndMaintenanceData():
                svc = await store.service_for_update(conn, d.service_id)
                expiring = isinstance(d, ev.ExpireServiceData)
                at = (domain.service_expiry if expiring else domain.maintenance_end)(svc, d.org_id, now)
                if at is None:
                    return None
                await store.set_service_status(conn, d.service_id, "expired" if expiring else "ended", at)
                data: ev.EventData = (
                    ev.ServiceExpiredData(org_id=d.org_id, service_id=d.service_id, expired_at=at) if expiring
                    else ev.MaintenanceEndedData(org_id=d.org_id, service_id=d.service_id, ended_at=at))
                return self.rt.event(d.org_id, data)
        return None
