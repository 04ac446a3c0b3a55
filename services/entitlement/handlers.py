"""Kafka consumers: decode a batch, one transaction (inbox + state + ledger + outbox), done.

Bad input never raises: it becomes `aimis.entitlement.dead_letter` in the same transaction.
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from aiokafka import ConsumerRecord
from prometheus_client import Counter

from contracts import events as ev
from contracts import topics
from contracts.events import CloudEvent, EventError, parse_event
from services.entitlement import domain, store
from services.entitlement.domain import Book, Counters, Deducted, Use
from shared import inbox, outbox
from shared.kafka import record_text
from shared.service import Runtime

log = logging.getLogger(__name__)

DEAD_LETTERS = Counter(
    "aimis_entitlement_dead_letters_total", "Messages entitlement could not process", ["topic", "reason"]
)
DEDUCTIONS = Counter(
    "aimis_entitlement_deductions_total", "Uses applied", ["resource", "outcome"]
)

ORDER_PAID = "aimis.orders.order_paid"
DEDUCTION = "aimis.metering.deduction_requested"
ORDER_TYPES = {t for t, (topic, _) in ev.EVENT_TYPES.items() if topic == topics.ORDERS}
EXPIRY_TYPES = {t for t, (topic, _) in ev.EVENT_TYPES.items() if topic == topics.EXPIRY_COMMANDS}
_ORG = re.compile(ev.ORG_ID_PATTERN)


@dataclass(frozen=True)
class Dead:
    record: str  # topic:partition:offset
    event: CloudEvent[Any]


class Handlers:
    def __init__(self, rt: Runtime):
        self.rt = rt
        self.grace = timedelta(seconds=rt.settings.late_usage_grace_s)

    # ------------------------------------------------------------ common

    def _dead(self, r: ConsumerRecord, reason: str, detail: str) -> Dead:
        key = (r.key or b"").decode("utf-8", errors="replace")
        data = ev.DeadLetterData(
            reason=reason, detail=detail[:2000], topic=r.topic, partition=r.partition, offset=r.offset,
            received_at=self.rt.clock.now(), original=record_text(r),
        )
        event = self.rt.event("aimis.entitlement.dead_letter", key if _ORG.match(key) else "unknown", data)
        return Dead(f"{r.topic}:{r.partition}:{r.offset}", event)

    def _parse(self, r: ConsumerRecord, allowed: set[str], dead: list[Dead]) -> CloudEvent[Any] | None:
        try:
            return parse_event(r.value or b"", allowed=allowed)
        except EventError as e:
            dead.append(self._dead(r, e.reason, e.detail))
            return None

    async def _commit(self, conn: Any, ledger: list[CloudEvent[Any]], dead: list[Dead]) -> None:
        """Append the ledger and the outbox; a dead letter is sent once per record (inbox on
        topic:partition:offset), even when its batch is redelivered."""
        fresh = await inbox.claim(conn, "dead_letter", [d.record for d in dead])
        letters = [d.event for d in dead if d.record in fresh]
        for e in letters:
            DEAD_LETTERS.labels(e.data.topic, e.data.reason).inc()
            log.warning("dead letter from %s[%s]@%s: %s %s", e.data.topic, e.data.partition, e.data.offset,
                        e.data.reason, e.data.detail, extra={"topic": e.data.topic, "reason": e.data.reason})
        await store.append_ledger(conn, ledger)
        await outbox.add(conn, ledger + letters)

    # ------------------------------------------------------------ deductions

    async def deductions(self, records: list[ConsumerRecord]) -> None:
        dead: list[Dead] = []
        uses = [e.data for r in records if (e := self._parse(r, {DEDUCTION}, dead)) is not None]
        now = self.rt.clock.now()
        assert self.rt.pool is not None
        async with self.rt.pool.acquire() as conn, conn.transaction():
            await store.lock_balances(conn, {(u.org_id, u.resource) for u in uses})
            fresh = await inbox.claim(conn, "usage", [u.usage_id for u in uses])
            todo = []
            for u in uses:  # the first occurrence of each new usage id, in stream order
                if u.usage_id in fresh:
                    fresh.discard(u.usage_id)
                    todo.append(u)
            ledger = await self._deduct(conn, todo, now)
            await self._commit(conn, ledger, dead)

    async def _deduct(self, conn: Any, todo: list[ev.DeductionRequestedData], now: Any) -> list[CloudEvent[Any]]:
        if not todo:
            return []
        keys = {(u.org_id, u.resource) for u in todo}
        lots = await store.drawable_lots(conn, keys, now, self.grace)
        books = {k: store.book_of(k[1], lots[k]) for k in keys}
        offline_orgs = {u.org_id for u in todo if u.resource == domain.AI and u.channel == "offline"}
        perpetual = await store.orgs_with_perpetual(conn, sorted(offline_orgs)) if offline_orgs else set()
        outcomes = domain.deduct_batch(
            books, [(u.org_id, Use(u.usage_id, u.resource, u.quantity, u.occurred_at, u.channel)) for u in todo],
            now, self.grace, perpetual,
        )
        out = [self._usage_event(u, o) for u, o in zip(todo, outcomes)]
        changed = [b.lots[i] for b in books.values() for i in b.touched]
        await store.save_remaining(conn, changed)
        await store.insert_arrears(conn, [
            (u.usage_id, u.org_id, u.resource, u.occurred_at, e.data.arrears_quantity)
            for u, e in zip(todo, out) if e.type == "aimis.ledger.usage_deducted" and e.data.arrears_quantity
        ])
        await store.add_counters(conn, {k: b.counters for k, b in books.items()})
        return out

    def _usage_event(self, u: ev.DeductionRequestedData, outcome: domain.Outcome) -> CloudEvent[Any]:
        if isinstance(outcome, Deducted):
            DEDUCTIONS.labels(u.resource, "deducted").inc()
            data: Any = ev.UsageDeductedData(
                org_id=u.org_id, usage_id=u.usage_id, resource=u.resource, quantity=u.quantity,
                occurred_at=u.occurred_at, channel=u.channel, inspection_id=u.inspection_id,
                site_id=u.site_id, attributes=u.attributes,
                allocations=[ev.Allocation(lot_id=d.lot_id, quantity=d.quantity, retention_until=d.retention_until)
                             for d in outcome.allocations],
                arrears_quantity=outcome.arrears_quantity, offline_licence=outcome.offline_licence,
            )
            return self.rt.event("aimis.ledger.usage_deducted", u.org_id, data)
        DEDUCTIONS.labels(u.resource, "rejected").inc()
        data = ev.UsageRejectedLedgerData(
            org_id=u.org_id, usage_id=u.usage_id, resource=u.resource, quantity=u.quantity,
            occurred_at=u.occurred_at, channel=u.channel, reason=outcome.reason,
        )
        return self.rt.event("aimis.ledger.usage_rejected", u.org_id, data)

    # ------------------------------------------------------------ orders

    async def orders(self, records: list[ConsumerRecord]) -> None:
        dead: list[Dead] = []
        paid: list[ev.OrderPaidData] = []
        for r in records:
            e = self._parse(r, ORDER_TYPES, dead)
            if e is None or e.type != ORDER_PAID:
                continue  # agreements, placed and cancelled orders are not entitlement's business
            try:
                self._check_lines(e.data)
            except domain.UnknownOrderLine as err:
                dead.append(self._dead(r, "UNKNOWN_ORDER_LINE", str(err)))
                continue
            paid.append(e.data)
        now = self.rt.clock.now()
        assert self.rt.pool is not None
        async with self.rt.pool.acquire() as conn, conn.transaction():
            await store.lock_balances(conn, {
                (p.org_id, domain.LOT_SKUS[l.sku]) for p in paid for l in p.lines if l.sku in domain.LOT_SKUS
            })
            fresh = await inbox.claim(conn, "order_paid", [p.order_id for p in paid])
            deltas: dict[tuple[str, str], Counters] = defaultdict(Counters)
            ledger: list[CloudEvent[Any]] = []
            for p in paid:
                if p.order_id in fresh:
                    fresh.discard(p.order_id)
                    ledger += await self._credit_order(conn, p, now, deltas)
            await store.add_counters(conn, deltas)
            await self._commit(conn, ledger, dead)

    @staticmethod
    def _check_lines(p: ev.OrderPaidData) -> None:
        seen: set[int] = set()
        for l in p.lines:
            if l.line in seen:
                raise domain.UnknownOrderLine(l.line, "line index repeated")
            seen.add(l.line)
            domain.check_line(l.line, l.sku, quantity=l.quantity, storage_years=l.storage_years,
                              months=l.months, feature=l.feature, years=l.years)

    async def _credit_order(self, conn: Any, p: ev.OrderPaidData, now: Any,
                            deltas: dict[tuple[str, str], Counters]) -> list[CloudEvent[Any]]:
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
        out.append(self.rt.event("aimis.ledger.order_fulfilled", org,
                                 ev.OrderFulfilledData(org_id=org, order_id=p.order_id, fulfilled_at=now)))
        return out

    async def _credit_lot(self, conn: Any, p: ev.OrderPaidData, l: ev.OrderLineData, lot_id: str,
                          deltas: dict[tuple[str, str], Counters]) -> list[CloudEvent[Any]]:
        resource = domain.LOT_SKUS[l.sku]
        years = l.storage_years if resource == domain.CLOUD else None
        lot = domain.new_lot(lot_id, int(l.quantity or 0), years, p.paid_at)
        book = Book(resource, arrears=await store.open_arrears(conn, p.org_id, resource))
        before = {a.usage_id: a.outstanding for a in book.arrears}
        offsets = domain.credit(book, lot)
        if not await store.insert_lot(conn, p.org_id, resource, p.order_id, l.line, l.sku, lot):
            return []  # already credited (cannot happen behind the inbox; kept as a guard)
        await store.save_outstanding(conn, [(o.usage_id, before[o.usage_id] - o.quantity) for o in offsets])
        d = deltas[(p.org_id, resource)]
        d.purchased += book.counters.purchased
        d.arrears_offset += book.counters.arrears_offset
        out = [self.rt.event("aimis.ledger.lot_credited", p.org_id, ev.LotCreditedData(
            org_id=p.org_id, lot_id=lot_id, order_id=p.order_id, line=l.line, sku=l.sku, resource=resource,
            quantity=lot.quantity, storage_years=years, credited_at=lot.credited_at, expires_at=lot.expires_at,
        ))]
        if offsets:
            out.append(self.rt.event("aimis.ledger.arrears_offset", p.org_id, ev.ArrearsOffsetData(
                org_id=p.org_id, lot_id=lot_id, resource=resource, quantity=sum(o.quantity for o in offsets),
                offsets=[ev.ArrearsOffsetItem(usage_id=o.usage_id, quantity=o.quantity,
                                              retention_until=o.retention_until) for o in offsets],
            )))
        return out

    async def _activate_licence(self, conn: Any, p: ev.OrderPaidData, l: ev.OrderLineData) -> CloudEvent[Any]:
        feature = domain.licence_feature(l.sku, l.feature)
        lic_id = domain.licence_id(p.org_id, feature)
        row = await store.licence_for_update(conn, lic_id)
        if l.sku == domain.AI_PERPETUAL:
            starts = min(row["starts_at"], p.paid_at) if row else p.paid_at
            lic, start, end = domain.Licence(starts, None), p.paid_at, None
        else:
            current = domain.Licence(row["starts_at"], row["ends_at"]) if row else None
            lic, start, end = domain.renew(current, p.paid_at, int(l.months or 0))
        await store.upsert_licence(conn, lic_id, p.org_id, feature, lic)
        await store.insert_period(conn, p.order_id, l.line, lic_id, start, end)
        return self.rt.event("aimis.ledger.licence_activated", p.org_id, ev.LicenceActivatedData(
            org_id=p.org_id, licence_id=lic_id, order_id=p.order_id, line=l.line, sku=l.sku, feature=feature,
            period_start=start, period_end=end, ends_at=lic.ends_at,
        ))

    async def _grant_service(self, conn: Any, p: ev.OrderPaidData, l: ev.OrderLineData,
                             service_id: str) -> CloudEvent[Any]:
        from shared.clock import add_years

        maintenance = l.sku == domain.MAINTENANCE
        accept_by = None if maintenance else add_years(p.paid_at, 1)
        ends_at = add_years(p.paid_at, int(l.years or 0)) if maintenance else None
        await store.insert_service(
            conn, service_id=service_id, org_id=p.org_id, order_id=p.order_id, line=l.line, sku=l.sku,
            mode=l.mode, quantity=l.quantity, years=l.years, purchased_at=p.paid_at, accept_by=accept_by,
            ends_at=ends_at, status="active" if maintenance else "awaiting_acceptance",
        )
        return self.rt.event("aimis.ledger.service_granted", p.org_id, ev.ServiceGrantedData(
            org_id=p.org_id, service_id=service_id, order_id=p.order_id, line=l.line, sku=l.sku, mode=l.mode,
            quantity=l.quantity, years=l.years, purchased_at=p.paid_at, accept_by=accept_by, ends_at=ends_at,
        ))

    # ------------------------------------------------------------ expiry commands

    async def commands(self, records: list[ConsumerRecord]) -> None:
        dead: list[Dead] = []
        cmds = [e for r in records if (e := self._parse(r, EXPIRY_TYPES, dead)) is not None]
        now = self.rt.clock.now()
        assert self.rt.pool is not None
        async with self.rt.pool.acquire() as conn, conn.transaction():
            keys = await store.lot_keys(conn, [c.data.lot_id for c in cmds if c.type == "aimis.expiry.expire_lot"])
            await store.lock_balances(conn, keys.values())
            ledger: list[CloudEvent[Any]] = []
            deltas: dict[tuple[str, str], Counters] = defaultdict(Counters)
            for c in cmds:
                e = await self._command(conn, c, now, deltas)
                if e is None:
                    log.info("expiry command %s %s changed nothing (early, repeated or stale)", c.type, c.id)
                    continue
                # The inbox records only commands that took effect: an early command must not burn its id.
                if await inbox.claim_one(conn, "expiry", c.id):
                    ledger.append(e)
                else:
                    raise RuntimeError(f"command {c.id} took effect twice")  # the state checks prevent it
            await store.add_counters(conn, deltas)
            await self._commit(conn, ledger, dead)

    async def _command(self, conn: Any, c: CloudEvent[Any], now: Any,
                       deltas: dict[tuple[str, str], Counters]) -> CloudEvent[Any] | None:
        d = c.data
        if c.type == "aimis.expiry.expire_lot":
            row = await store.lot_for_expiry(conn, d.lot_id)
            if row is None or row["org_id"] != d.org_id:
                return None
            book = Book(row["resource"], {row["lot_id"]: store._lot(row)})
            forfeited = domain.expire(book, d.lot_id, now, self.grace)
            if forfeited is None:
                return None
            await store.mark_expired(conn, d.lot_id, forfeited, now)
            deltas[(row["org_id"], row["resource"])].forfeited += forfeited
            return self.rt.event("aimis.ledger.lot_expired", d.org_id, ev.LotExpiredData(
                org_id=d.org_id, lot_id=d.lot_id, resource=row["resource"], forfeited=forfeited,
                expires_at=row["expires_at"], expired_at=now,
            ))
        if c.type == "aimis.expiry.end_licence":
            lic = await store.licence_for_update(conn, d.licence_id)
            if (lic is None or lic["org_id"] != d.org_id or lic["status"] != "active" or lic["ends_at"] is None
                    or lic["ends_at"] > now or lic["ends_at"] > d.ends_at):
                return None
            await store.end_licence(conn, d.licence_id, lic["ends_at"])
            return self.rt.event("aimis.ledger.licence_expired", d.org_id, ev.LicenceExpiredData(
                org_id=d.org_id, licence_id=d.licence_id, feature=lic["feature"], ended_at=lic["ends_at"],
            ))
        svc = await store.service_for_update(conn, d.service_id)
        if svc is None or svc["org_id"] != d.org_id:
            return None
        if c.type == "aimis.expiry.expire_service":
            if (svc["sku"] not in domain.ONE_TIME_SERVICES or svc["status"] != "awaiting_acceptance"
                    or svc["accept_by"] > now):
                return None
            await store.set_service_status(conn, d.service_id, "expired", svc["accept_by"])
            return self.rt.event("aimis.ledger.service_expired", d.org_id, ev.ServiceExpiredData(
                org_id=d.org_id, service_id=d.service_id, expired_at=svc["accept_by"]))
        # end_maintenance
        if svc["sku"] != domain.MAINTENANCE or svc["status"] != "active" or svc["ends_at"] > now:
            return None
        await store.set_service_status(conn, d.service_id, "ended", svc["ends_at"])
        return self.rt.event("aimis.ledger.maintenance_ended", d.org_id, ev.MaintenanceEndedData(
            org_id=d.org_id, service_id=d.service_id, ended_at=svc["ends_at"]))
