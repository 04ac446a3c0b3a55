"""Transactional outbox.

`add(conn, events)` appends rows inside the caller's transaction (with a NOTIFY delivered at
commit). The outbox is a log in commit order: the writer holds a transaction lock of the schema's
outbox from the moment its rows get their `seq` until it commits, so a committed row never appears
below a `seq` the relay has already read. `Relay` publishes the rows in `seq` order, keyed by the
event subject (org_id), and then moves `outbox_cursor.sent_upto` past them: one row changed per
published batch (shared/sql/006_outbox_cursor.sql). One relay per schema is active at a time (a
session advisory lock), so order is kept across instances; a crash between publish and the
cursor's move publishes again, and consumers' inboxes make the repeat a no-op.

A writer of the relay's own process may hand its committed rows over (`Relay.offer`; the consumer
base does, for every batch): when they continue the log from the cursor, they are published as
they were written, without waiting for the NOTIFY or reading them back; otherwise the log sends
them, as it sends every other writer's rows.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import logging
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal, NamedTuple

import asyncpg
from aiokafka import errors as kafka_errors
from prometheus_client import Counter

from contracts.events import Outgoing, encode, topic_of
from shared import observability as obs

log = logging.getLogger(__name__)

# Publishes (topic, key, value) rows in order; returns when Kafka acknowledged them all.
Publish = Callable[[Sequence[tuple[str, bytes, bytes]]], Awaitable[None]]


async def add(conn: asyncpg.Connection, events: Sequence[Outgoing], *, offering: str = "") -> Appended | None:
    """Write events to the outbox; call inside the transaction that made them true."""
    return await add_rows(conn, [(e.id, topic_of(e.type), e.subject, encode(e)) for e in events], offering=offering)


Row = tuple[str, str, str, bytes]  # (event id, topic, key, payload): an event already encoded


class Appended(NamedTuple):
    """What one transaction appended: its rows hold the consecutive seqs from `first` (the append
    lock is held from before the first seq is drawn to commit), as the relay publishes them."""

    first: int
    rows: list[tuple[str, bytes, bytes]]  # (topic, key, payload)


async def add_rows(conn: asyncpg.Connection, rows: Sequence[Row], *, offering: str = "") -> Appended | None:
    """`add` for events the caller encoded itself. Call it last in the transaction: from here to
    commit, the schema's other writers of the outbox wait (that is what keeps the log in commit
    order, which entitlement's ledger cursor relies on too).

    Two steps: one statement takes the schema's append lock (held to commit), reserves the rows'
    consecutive seqs and sends a NOTIFY (delivered at commit) on the schema's channel; then the rows
    go in by COPY. COPY writes a page of rows at a time (one WAL record a page) where an INSERT of
    many rows writes each on its own: a third less of PostgreSQL's time a row, half the client's
    (docs/benchmarks.md, twelfth pass). Returns what was appended, which the caller may hand to the
    relay once the transaction committed (`Relay.offer`); None when nothing was. A caller that will
    offer the rows passes its relay's `offering` token: the NOTIFY carries it, and that relay does
    not read the log for a commit whose rows it is about to be handed."""
    if not rows:
        return None
    last = await conn.fetchval(_RESERVE, offering, len(rows))
    first = last - len(rows) + 1
    await conn.copy_records_to_table("outbox", records=[(first + i, *row) for i, row in enumerate(rows)],
                                     columns=_COLUMNS)
    return Appended(first, [(t, k.encode(), v) for _, t, k, v in rows])


# The lock is a transaction lock per schema, taken before the seqs are drawn: appends therefore
# happen in commit order (tests/component/test_outbox_log.py). Every writer of the outbox appends
# here, so no one draws a seq between this statement's nextval and setval: the seqs first..last are
# the transaction's alone (a rolled-back transaction leaves a gap, as a rolled-back insert did).
_RESERVE = """WITH lock AS MATERIALIZED (SELECT pg_advisory_xact_lock(hashtext('outbox-append:' || current_schema())))
SELECT setval('outbox_seq_seq', nextval('outbox_seq_seq') + $2 - 1), pg_notify('outbox_' || current_schema(), $1::text)
FROM lock"""
_COLUMNS = ("seq", "event_id", "topic", "key", "payload")


REPUBLISHED = "republish"  # the NOTIFY payload of a re-published row: the relay reads those first

PARKED = Counter(
    "aimis_outbox_parked", "Outbox rows parked: refused by the broker for good (SPEC 7.2)", ["service"]
)
RESOLVED = Counter(
    "aimis_outbox_parked_resolved", "Parked outbox rows an admin re-published or discarded", ["service", "action"]
)
# Broker (or client-side) refusals that no retry cures: the record itself is the problem.
_UNPUBLISHABLE = (
    kafka_errors.MessageSizeTooLargeError, kafka_errors.RecordTooLargeError, kafka_errors.RecordListTooLargeError,
    kafka_errors.CorruptRecordException, kafka_errors.InvalidTimestampError, kafka_errors.InvalidTopicError,
)

# The rows to send: after the cursor, in seq order; rows sent out of that order (sent_at) and parked
# rows are skipped. Re-published parked rows (below the cursor) are read first, on their own.
_UNSENT = ("SELECT seq, topic, key, payload FROM outbox WHERE seq > $1 AND sent_at IS NULL AND parked_at IS NULL"
           " ORDER BY seq LIMIT $2")  # $1: the cursor, which the leading relay alone moves and so holds
_MARK_SENT = "UPDATE outbox_cursor SET sent_upto = $1 WHERE sent_upto < $1"
# The cursor's move after a send rides on the next read (one round trip fewer a relay batch; a
# data-modifying CTE runs whether or not the query reads it).
_MARK_AND_READ = f"WITH mark AS ({_MARK_SENT}) {_UNSENT}"
_REPUBLISHED = ("SELECT o.seq, o.topic, o.key, o.payload FROM outbox_republish r"
                " CROSS JOIN LATERAL (SELECT * FROM outbox WHERE seq = r.seq OFFSET 0) o ORDER BY r.seq LIMIT $1")
_MARK_REPUBLISHED = """WITH done AS (DELETE FROM outbox_republish WHERE seq = ANY($1::bigint[]))
                       UPDATE outbox SET sent_at = now() WHERE seq = ANY($1::bigint[])"""


# The relay's statements all find rows by key, and the right plan for each is a loop of key lookups.
# Planned from the statistics of a young table (a fresh database filled faster than autovacuum
# analyses it), they were sequential scans and hash or merge joins over the whole outbox, 40-90 ms a
# relay read at 1,000 events/s, 180 ms a mark of 1,000 rows (issue 13); so the relay's own
# connection plans without them.
# Without sequential scans, a statement on the one-row cursor table costs "disabled" and crossed the
# JIT threshold: 200 ms of compilation a statement. Nothing the relay runs gains from JIT, and a
# bitmap scan of the log sorted every unsent row to return the first batch: an index scan in seq
# order stops after the batch.
_BY_KEY = {"enable_seqscan": "off", "enable_hashjoin": "off", "enable_mergejoin": "off",
           "enable_bitmapscan": "off", "jit": "off"}
# What the relay writes (the cursor, a re-published row's sent_at, a parking) only saves sending
# again: lost in a server crash, the rows go out again and consumers' inboxes make that a no-op. So
# its commits do not wait for the WAL flush (4-9 ms each under load, on every relay batch: issue 13).
# A later durable commit of anyone flushes them anyway (the WAL is one sequence), so nothing durable,
# such as a purge of rows behind the cursor, can rest on a cursor the crash took back.
_RELAY_SETTINGS = {**_BY_KEY, "synchronous_commit": "off"}


MAX_OFFERED_ROWS = 20_000  # offered rows the relay keeps at most (memory stays bounded when it falls behind)


def _lock_key(schema: str) -> int:
    return int.from_bytes(hashlib.sha256(f"outbox:{schema}".encode()).digest()[:8], "big", signed=True)


class Relay:
    """Publishes unsent outbox rows in order. `after_publish` is a fault-injection hook for tests."""

    def __init__(
        self,
        dsn: str,
        schema: str,
        publish: Publish,
        *,
        batch_size: int = 1000,
        poll_s: float = 0.5,
        after_publish: Callable[[list[int]], Awaitable[None]] | None = None,
    ):
        self.dsn, self.schema, self.publish = dsn, schema, publish
        self.batch_size, self.poll_s = batch_size, poll_s
        self.after_publish = after_publish
        self._wake = asyncio.Event()
        self._republished = True  # whether re-published parked rows may be waiting (read first)
        self._cursor = 0  # outbox_cursor.sent_upto, read when this relay takes the lead
        self._unmarked = False  # the cursor moved past sent rows; the next read stores it
        self._log_full = False  # the last read of the log returned a full batch (more may follow)
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self.is_leader = False
        self._offers: collections.deque[Appended] = collections.deque()  # committed here, not yet sent
        self._offered_rows = 0
        # The NOTIFY payload of the commits whose rows this relay is handed (`add_rows(offering=)`).
        self.offering = f"offer:{os.urandom(8).hex()}"
        self._log_due = True  # the log may hold rows no offer brings: read it in the next round
        self._last_read = 0.0  # monotonic time of the last read of the log

    def start(self) -> asyncio.Task[None]:
        self._stopping = False
        self._task = asyncio.create_task(self._run_forever(), name=f"outbox-relay-{self.schema}")
        return self._task

    async def stop(self, within_s: float = 5.0) -> None:
        """Finish the round in progress and store the cursor (so a restart does not send again
        what was sent, which a notification's reader would see twice); cancelled after `within_s`."""
        if self._task:
            self._stopping = True
            self._wake.set()
            if not (await asyncio.wait([self._task], timeout=within_s))[0]:
                self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass

    async def _run_forever(self) -> None:
        while not self._stopping:
            try:
                await self._run_once_connected()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - reconnect after any failure
                self.is_leader = False
                log.warning("outbox relay (%s) failed: %r; restarting", self.schema, e)
                await asyncio.sleep(1.0)

    async def _run_once_connected(self) -> None:
        conn = await asyncpg.connect(self.dsn, server_settings={"search_path": self.schema, **_RELAY_SETTINGS})
        try:
            # Leadership: only one relay per schema publishes, so rows leave in seq order.
            while not await conn.fetchval("SELECT pg_try_advisory_lock($1)", _lock_key(self.schema)):
                if self._stopping:
                    return
                await asyncio.sleep(self.poll_s * 2)
            self.is_leader = True
            self._republished = True  # rows may have been re-published while no relay led
            self._cursor = int(await conn.fetchval("SELECT sent_upto FROM outbox_cursor"))
            self._unmarked = False
            self._drop_offers()  # offered before this relay led: the log has them
            await conn.add_listener(f"outbox_{self.schema}", self._notified)
            while not self._stopping:
                self._wake.clear()  # a wake from here on (a commit, an offer) means another round
                if self._republished:  # re-published rows go before younger unsent ones (`resolve`)
                    drained = await self._drain(conn)
                    sent = await self._send_offered()  # what the log just sent is skipped
                else:
                    sent = await self._send_offered()
                    drained = await self._drain(conn) if self._read_due() else 0
                if sent + drained and (self._log_full or self._republished or self._wake.is_set()):
                    continue  # more in the log or among the re-published rows, or woken meanwhile
                # Nothing in the log but what was offered since it was last read to its end: wait for
                # the next commit or offer. The cursor's move rides on the next read (within poll_s).
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout=self.poll_s)
                except TimeoutError:
                    self._republished = True  # a missed notification costs one poll at most
            if self._unmarked:
                await conn.execute(_MARK_SENT, self._cursor)
        finally:
            self.is_leader = False
            self._drop_offers()
            await conn.close()

    # -- rows handed over by this process's own writers -------------------------------------

    def offer(self, appended: Appended | None) -> None:
        """Rows a transaction of this process appended and committed, handed over as they were
        written: when they follow the rows already sent, the relay publishes them as given and does
        not read them back from the log (issue 13: the read, and the wait for the commit's NOTIFY,
        were on every event's path). Anything else (rows of other writers in between, an offer made
        while another instance leads, a backlog of offers) is left to the log, which has them all."""
        if appended is None or not self.is_leader:
            return
        if self._offered_rows + len(appended.rows) > MAX_OFFERED_ROWS:
            self._drop_offers()  # the relay is behind: the log catches up, in order
            self._wake.set()
            return
        self._offers.append(appended)
        self._offered_rows += len(appended.rows)
        self._wake.set()

    def _drop_offers(self) -> None:
        """Forget the offers: the log has their rows, and is read in the next round."""
        self._offers.clear()
        self._offered_rows = 0
        self._log_due = True

    def _read_due(self) -> bool:
        """Whether this round reads the log: a commit was notified that no offer brings (another
        writer's), offers were dropped, the last read came back full, or poll_s passed since the
        last read (which also stores the cursor the offers moved)."""
        return self._log_due or self._log_full or time.monotonic() - self._last_read >= self.poll_s

    async def _send_offered(self) -> int:
        """Publish the offers that continue the log from the cursor, in seq order; those already
        sent are skipped; at the first gap the rest are dropped (the log has them). A publish that
        fails drops them all and leaves the rows to the log (its retries, its parking)."""
        sent = 0
        while self._offers:
            first, rows = self._offers.popleft()
            self._offered_rows -= len(rows)
            last = first + len(rows) - 1
            if last <= self._cursor:
                continue
            if first != self._cursor + 1:
                self._drop_offers()
                break
            try:
                await self.publish(rows)
            except Exception as e:  # noqa: BLE001 - the log sends them again, with its own handling
                log.info("outbox relay (%s): offered rows %d-%d not published (%r); from the log", self.schema,
                         first, last, e)
                self._drop_offers()
                break
            if self.after_publish is not None:
                await self.after_publish(list(range(first, last + 1)))
            self._cursor, self._unmarked = last, True  # stored by the next read, as for rows of the log
            obs.OUTBOX_PUBLISHED.labels(self.schema).inc(len(rows))
            sent += len(rows)
        return sent

    def _notified(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        if payload == self.offering:
            return  # this process committed the rows and hands them over next (`offer`)
        if payload == REPUBLISHED:
            self._republished = True
        self._log_due = True
        self._wake.set()

    async def _drain(self, conn: asyncpg.Connection) -> int:
        """One batch: the re-published rows first (when there may be some), then the log."""
        sent = 0
        if self._republished:
            sent = await self._send(conn, await conn.fetch(_REPUBLISHED, self.batch_size), in_log=False)
            self._republished = sent == self.batch_size  # more of them, or none left
        self._log_due, self._last_read = False, time.monotonic()  # a notification during the read: again
        rows = await conn.fetch(_MARK_AND_READ if self._unmarked else _UNSENT, self._cursor, self.batch_size)
        self._unmarked = False
        self._log_full = len(rows) == self.batch_size
        return sent + await self._send(conn, rows, in_log=True)

    async def _send(self, conn: asyncpg.Connection, rows: Sequence[asyncpg.Record], *, in_log: bool) -> int:
        """Publish `rows` (of the log, or re-published ones), then mark them sent. When the broker
        refuses a row for good, the batch again one row at a time, parking each refused row so the
        rows behind it leave."""
        if not rows:
            return 0
        try:
            await self.publish([(r["topic"], r["key"].encode(), r["payload"]) for r in rows])
        except Exception as e:
            if not unpublishable(e):
                raise  # transient: the relay reconnects and retries
            return await self._publish_parking(conn, rows, in_log=in_log)
        seqs = [r["seq"] for r in rows]
        if self.after_publish is not None:
            await self.after_publish(seqs)
        await self._mark(conn, seqs, in_log=in_log)
        obs.OUTBOX_PUBLISHED.labels(self.schema).inc(len(rows))
        return len(rows)

    async def _mark(self, conn: asyncpg.Connection, seqs: list[int], *, in_log: bool) -> None:
        """Rows of the log: the cursor moves to the last (they were read in seq order), stored by the
        next read, which follows at once (rows lost with the connection before it are sent again: the
        consumers' inboxes make that a no-op); re-published rows: each marked by its seq now."""
        if in_log:
            self._cursor = max(self._cursor, seqs[-1])
            self._unmarked = True
        else:
            await conn.execute(_MARK_REPUBLISHED, seqs)

    # -- SPEC 7.2: parking rows the broker refuses for good -------------------------------------

    async def _publish_one(self, r: asyncpg.Record) -> None:
        """One row, returning once Kafka acknowledged it."""
        await self.publish([(r["topic"], r["key"].encode(), r["payload"])])

    async def _publish_parking(self, conn: asyncpg.Connection, rows: Sequence[asyncpg.Record], *, in_log: bool) -> int:
        """Publish `rows` one at a time, in order, parking each the broker refuses for good
        (SPEC 7.2). Rows published before the refusal go again; consumers' inboxes make that a no-op."""
        for r in rows:
            try:
                await self._publish_one(r)
            except Exception as e:
                if not unpublishable(e):
                    raise
                await park(conn, r["seq"], f"{type(e).__name__}: {e}"[:1000])
                if in_log:  # park moved the cursor past it
                    self._cursor = max(self._cursor, r["seq"])
                PARKED.labels(self.schema).inc()
                log.error("outbox row %s (%s, %d bytes) refused by the broker for good: %r; parked",
                          r["seq"], r["topic"], len(r["payload"]), e, extra={"topic": r["topic"]})
                continue
            await self._mark(conn, [r["seq"]], in_log=in_log)
            obs.OUTBOX_PUBLISHED.labels(self.schema).inc()
        return len(rows)


def unpublishable(e: BaseException) -> bool:
    """True when the broker (or the producer, before sending) refuses a record for good."""
    return isinstance(e, _UNPUBLISHABLE)


async def park(conn: asyncpg.Connection, seq: int, reason: str) -> None:
    """Park row `seq`: the cursor passes it (a row of the log) or it leaves the re-published rows."""
    await conn.execute(
        """WITH log AS (UPDATE outbox_cursor SET sent_upto = $1 WHERE sent_upto < $1),
                again AS (DELETE FROM outbox_republish WHERE seq = $1)
           UPDATE outbox SET parked_at = now(), park_reason = $2 WHERE seq = $1""", seq, reason)


async def parked(conn: asyncpg.Connection, limit: int = 1000) -> list[dict[str, Any]]:
    """Parked rows not discarded, oldest first (GET /v1/admin/outbox/parked)."""
    rows = await conn.fetch(
        """SELECT seq, event_id, topic, key, octet_length(payload) AS size, created_at, parked_at, park_reason
           FROM outbox WHERE parked_at IS NOT NULL AND discarded_at IS NULL ORDER BY seq LIMIT $1""",
        limit,
    )
    return [dict(r) for r in rows]


async def parked_count(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM outbox WHERE parked_at IS NOT NULL AND discarded_at IS NULL"))


Resolution = Literal["republish", "discard"]
_RESOLVE = {
    # back in the queue: the relay publishes it again, in seq order (before every younger row)
    "republish": "SET parked_at = NULL, park_reason = NULL",
    # kept (with its payload) but never published; no longer listed
    "discard": "SET discarded_at = now()",
}


async def resolve(conn: asyncpg.Connection, seq: int, action: Resolution, actor: str, reason: str,
                  service: str) -> dict[str, Any] | None:
    """Re-publish or discard parked row `seq` (SPEC 7.2), recorded in `outbox_resolutions` in the
    same transaction. None when `seq` is not a parked row now: never parked, already re-published
    (it cannot go twice this way) or discarded. Two concurrent calls: the row lock lets one win."""
    async with conn.transaction():
        row = await conn.fetchrow(
            f"""WITH old AS (SELECT seq, park_reason FROM outbox WHERE seq = $1 AND parked_at IS NOT NULL
                               AND discarded_at IS NULL AND sent_at IS NULL FOR UPDATE)
               UPDATE outbox o {_RESOLVE[action]} FROM old WHERE o.seq = old.seq
               RETURNING o.seq, o.event_id, o.topic, old.park_reason""",
            seq,
        )
        if row is None:
            return None
        done = await conn.fetchrow(
            """INSERT INTO outbox_resolutions (seq, event_id, topic, action, actor, reason, park_reason)
               VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING seq, event_id, topic, action, actor, reason, at""",
            row["seq"], row["event_id"], row["topic"], action, actor, reason, row["park_reason"],
        )
        if action == "republish":  # among the rows the relay sends first, and wake it
            await conn.execute("INSERT INTO outbox_republish VALUES ($1) ON CONFLICT DO NOTHING", row["seq"])
            await conn.execute("SELECT pg_notify('outbox_' || current_schema(), $1)", REPUBLISHED)
    RESOLVED.labels(service, action).inc()
    log.warning("outbox row %s (%s, %s) %s by %s: %s", seq, row["event_id"], row["topic"],
                "re-published" if action == "republish" else "discarded", actor, reason,
                extra={"topic": row["topic"]})
    return dict(done)


async def oldest_unsent_s(conn: asyncpg.Connection) -> float:
    """Age in seconds of the oldest row neither sent nor parked (0 when there is none): the first
    row of the log after the cursor, or a re-published row. (A parked row is behind the cursor;
    a row after it with `sent_at` exists only from before migration 006.) The first row by key
    only: a filter on the row would let the planner guess it rare and sort every unsent row."""
    age = await conn.fetchval(
        """SELECT extract(epoch FROM now() - min(created_at)) FROM (
               (SELECT o.created_at FROM outbox_cursor c CROSS JOIN LATERAL
                  (SELECT created_at FROM outbox WHERE seq > c.sent_upto ORDER BY seq LIMIT 1) o)
               UNION ALL
               (SELECT o.created_at FROM outbox_republish r
                  CROSS JOIN LATERAL (SELECT created_at FROM outbox WHERE seq = r.seq OFFSET 0) o)) t"""
        # by key, whatever the statistics say (OFFSET 0 keeps the planner from making it a join)
    )
    return max(0.0, float(age or 0.0))


async def purge_sent(conn: asyncpg.Connection, older_than_s: int = 86_400) -> int:
    """Delete rows sent long ago (housekeeping): sent out of order before the cutoff, or in the log
    below the cursor and written before it. Parked and discarded rows stay, and the rows the
    service keeps as its record (`outbox_kept`: entitlement's ledger)."""
    res = await conn.execute(
        """DELETE FROM outbox o WHERE (o.sent_at < now() - make_interval(secs => $1)
              OR (o.sent_at IS NULL AND o.parked_at IS NULL AND o.created_at < now() - make_interval(secs => $1)
                  AND o.seq <= (SELECT sent_upto FROM outbox_cursor)
                  AND NOT EXISTS (SELECT 1 FROM outbox_republish r WHERE r.seq = o.seq)))
              AND NOT EXISTS (SELECT 1 FROM outbox_kept k WHERE k.topic = o.topic AND o.seq > k.after_seq)""",
        older_than_s,
    )
    return int(res.split()[-1])
