"""Entry points of the expiry service: the ledger consumer and the periodic sweep.

Ledger: the one consumer shape (shared/consumer.py) with a policy that loads the touched items,
folds the events into them and writes them back. Sweep: one transaction claims the due items, writes one
command each to the outbox and marks them commanded; another decides and writes reminders.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg
from prometheus_client import Counter

from contracts import topics
from contracts.events import CloudEvent, models_on
from services.expiry import domain, store
from shared import outbox
from shared.consumer import DeadLetters, Subscription
from shared.service import Runtime

log = logging.getLogger(__name__)

SWEEP_BATCH = 500

NOTES = Counter("aimis_expiry_ledger_notes_total", "Ledger events that did not fit the schedule", ["note"])
APPLY_ERRORS = Counter("aimis_expiry_ledger_apply_errors_total",
                       "Ledger events a schedule rule failed on (each dead-lettered once isolated)")
COMMANDS = Counter("aimis_expiry_commands_total", "Expiry commands written to the outbox", ["kind"])
REMINDERS = Counter("aimis_expiry_reminders_total", "Reminders decided", ["status"])


class Unappliable(ValueError):
    """A ledger event a schedule rule failed on (a ValueError: retrying will not cure it)."""


def ledger(rt: Runtime) -> Subscription:
    """Every ledger kind feeds the schedule; bad records go to `aimis.expiry.dlq.v1`."""
    grace = timedelta(seconds=rt.settings.late_usage_grace_s)

    async def schedule(conn: asyncpg.Connection, events: list[CloudEvent[Any]], now: datetime) -> list[CloudEvent[Any]]:
        """Policy: load the items the events touch, fold the events into them, write back."""
        keys = [k for e in events for k in domain.refs(e.data)]
        items = await store.load_for_update(conn, keys)
        notes: list[str] = []
        for e in events:
            try:
                notes += domain.apply(items, e.data, now, grace)
            except Exception as err:  # noqa: BLE001 - apply never raises for a fitting event: this one is poison
                APPLY_ERRORS.inc()
                # not skipped silently: the consumer base isolates it and dead-letters it UNPROCESSABLE
                # (aimis.expiry.dlq.v1), replayable once the rule is fixed; the others take effect
                raise Unappliable(f"ledger event {e.id} ({e.type}) breaks a schedule rule: {err!r}") from err
        await store.save(conn, [i for i in items.values() if i.changed], now)
        for n in notes:
            NOTES.labels(n).inc()
            log.info("ledger event did not fit the schedule: %s", n)
        return []

    return Subscription(
        topic=topics.LEDGER, accepts=models_on(topics.LEDGER), stream="ledger", policy=schedule,
        rejects=DeadLetters(rt),
    )


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
    async with rt.pool.acquire() as conn:
        while True:
            now = rt.clock.now()
            async with conn.transaction():
                due = await store.claim_due(conn, now, now - again_after, batch)
                events = []
                for item in due:
                    events.append(rt.event(item.org_id, domain.command(item), id=domain.command_id(item)))
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
                    rt.event(item.org_id, domain.reminder(item, d), id=domain.reminder_id(item, d))
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
