"""Entry points of the expiry service: the ledger consumer and the periodic sweep.

Ledger batch: decode, one transaction (inbox claim on the CloudEvent id, load the touched items,
fold the events into them, write back). Sweep: one transaction claims the due items, writes one
command each to the outbox and marks them commanded; another decides and writes reminders.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta

from aiokafka import ConsumerRecord
from prometheus_client import Counter

from contracts.events import EVENT_TYPES, CloudEvent, EventError, parse_event
from services.expiry import domain, store
from shared import inbox, outbox
from shared.service import Runtime

log = logging.getLogger(__name__)

STREAM = "ledger"
LEDGER_TYPES = {t for t in EVENT_TYPES if t.startswith(domain.LEDGER)}
SWEEP_BATCH = 500

SKIPPED = Counter("aimis_expiry_ledger_skipped_total", "Ledger records not applied", ["reason"])
NOTES = Counter("aimis_expiry_ledger_notes_total", "Ledger events that did not fit the schedule", ["note"])
COMMANDS = Counter("aimis_expiry_commands_total", "Expiry commands written to the outbox", ["kind"])
REMINDERS = Counter("aimis_expiry_reminders_total", "Reminders decided", ["status"])


def ledger_handler(rt: Runtime) -> Callable[[list[ConsumerRecord]], Awaitable[None]]:
    grace = timedelta(seconds=rt.settings.late_usage_grace_s)

    async def handle(records: list[ConsumerRecord]) -> None:
        events = [ev for r in records if (ev := _decode(r)) is not None]
        if not events:
            return
        notes: list[str] = []
        async with rt.pool.acquire() as conn, conn.transaction():  # type: ignore[union-attr]
            new = await inbox.claim(conn, STREAM, [e.id for e in events])
            fresh: list[CloudEvent] = []
            for e in events:
                if e.id in new:
                    new.discard(e.id)  # a repeat inside the batch is applied once
                    fresh.append(e)
            keys = [k for e in fresh for k in domain.refs(e.type, e.data)]
            items = await store.load_for_update(conn, keys)
            now = rt.clock.now()
            for e in fresh:
                try:
                    notes += domain.apply(items, e.type, e.data, now, grace)
                except Exception:  # noqa: BLE001 - a record that breaks a rule must not block the partition
                    log.exception("ledger event %s (%s) could not be applied; skipped", e.id, e.type)
                    SKIPPED.labels("APPLY_ERROR").inc()
            await store.save(conn, [i for i in items.values() if i.changed], now)
        for n in notes:
            NOTES.labels(n).inc()
            log.info("ledger event did not fit the schedule: %s", n)

    return handle


def _decode(record: ConsumerRecord) -> CloudEvent | None:
    try:
        return parse_event(record.value or b"", allowed=LEDGER_TYPES)
    except EventError as e:
        reason, detail = e.reason, e.detail
    except Exception as e:  # noqa: BLE001 - never raise for bad input
        reason, detail = "MALFORMED", repr(e)
    SKIPPED.labels(reason).inc()
    log.warning(
        "skipping ledger record %s[%s]@%s: %s %s", record.topic, record.partition, record.offset, reason, detail,
        extra={"reason": reason, "topic": record.topic},
    )
    return None


# ---------------------------------------------------------------- the sweep


@dataclass
class SweepResult:
    commands: int = 0
    reminders: int = 0


async def sweep_once(rt: Runtime, batch: int = SWEEP_BATCH) -> SweepResult:
    """Command every due item once and send the reminders now due."""
    result = SweepResult()
    again_after = domain.recommand_after(rt.settings.expiry_interval_s)
    thresholds = rt.settings.reminder_day_list
    async with rt.pool.acquire() as conn:  # type: ignore[union-attr]
        while True:
            now = rt.clock.now()
            async with conn.transaction():
                due = await store.claim_due(conn, now, now - again_after, batch)
                events = []
                for item in due:
                    event_type, data = domain.command(item)
                    events.append(rt.event(event_type, item.org_id, data, id=domain.command_id(item)))
                    COMMANDS.labels(item.kind).inc()
                await outbox.add(conn, events)
            result.commands += len(due)
            if len(due) < batch:
                break
        while True:
            now = rt.clock.now()
            async with conn.transaction():
                candidates = await store.reminder_candidates(conn, now, thresholds, batch)
                decisions = []
                for item, decided in candidates:
                    plan = domain.plan_reminders(item.expires_at, now, thresholds, decided, depleted=item.depleted)
                    if plan.send is not None:
                        decisions.append((item.kind, item.ref_id, item.expires_at, plan.send, "sent"))
                    decisions += [(item.kind, item.ref_id, item.expires_at, d, "skipped") for d in plan.skip]
                sent = await store.record_reminders(conn, decisions, now)
                by_key = {item.key: item for item, _ in candidates}
                events = [
                    rt.event(domain.REMINDER_TYPE, item.org_id, domain.reminder(item, d), id=domain.reminder_id(item, d))
                    for (kind, ref, d) in sorted(sent)
                    if (item := by_key[(kind, ref)])
                ]
                await outbox.add(conn, events)
            REMINDERS.labels("sent").inc(len(events))
            REMINDERS.labels("skipped").inc(sum(1 for d in decisions if d[4] == "skipped"))
            result.reminders += len(events)
            if len(candidates) < batch:
                break
    return result


def sweeper(rt: Runtime) -> Callable[[], Awaitable[None]]:
    async def run() -> None:
        interval = rt.settings.expiry_interval_s
        while True:
            try:
                r = await sweep_once(rt)
                if r.commands or r.reminders:
                    log.info("sweep: %d commands, %d reminders", r.commands, r.reminders)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the next tick retries; nothing was committed
                log.exception("expiry sweep failed; retrying next interval")
            await asyncio.sleep(interval)

    return run
