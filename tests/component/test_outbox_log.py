"""The outbox is a log in commit order (shared/sql/006_outbox_cursor.sql): the relay reads it after
its cursor, so a row that committed after the relay read past its seq would never be sent. These
tests hold the writers to the rule that prevents it (PostgreSQL only; the relay's publish is a
function that collects what it would send)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

import asyncpg

from shared import db, migrate, outbox
from tests.support.kafka import wait_until

SCHEMA = "outbox_log"


async def _migrated(database) -> str:  # type: ignore[no-untyped-def]
    dsn = await database.create_empty()
    conn = await asyncpg.connect(dsn)
    try:
        await migrate.migrate(conn, SCHEMA, Path("/nonexistent"))  # the shared migrations only
    finally:
        await conn.close()
    return dsn


async def _connect(dsn: str) -> asyncpg.Connection:
    return await asyncpg.connect(dsn, server_settings={"search_path": SCHEMA})


async def _all_sent(dsn: str) -> int:
    """Wait until the relay moved past every row of the log; the number of rows."""
    conn = await _connect(dsn)
    try:
        await wait_until(lambda: conn.fetchval("SELECT count(*) = 0 FROM outbox_state WHERE state <> 'sent'"),
                         timeout=30, interval=0.05)
        return int(await conn.fetchval("SELECT count(*) FROM outbox"))
    finally:
        await conn.close()


def _row(event_id: str, key: str = "org-a") -> outbox.Row:
    return (event_id, "aimis.notifications.v1", key, b'{"id": "%s"}' % event_id.encode())


async def test_a_writer_takes_its_seq_only_after_the_writer_before_it_committed(database):
    dsn = await _migrated(database)
    first, second = await _connect(dsn), await _connect(dsn)
    try:
        tx = first.transaction()
        await tx.start()
        await outbox.add_rows(first, [_row("first")])
        pid = await second.fetchval("SELECT pg_backend_pid()")
        blocked = asyncio.create_task(_add_in_transaction(second, [_row("second")]))
        watcher = await _connect(dsn)
        try:  # the second writer waits for the first's append lock, not for anything else
            await wait_until(lambda: watcher.fetchval(
                "SELECT wait_event_type = 'Lock' AND wait_event = 'advisory' FROM pg_stat_activity WHERE pid = $1",
                pid), timeout=10, interval=0.02)
            # and it has taken no seq yet (a sequence is not transactional: a seq taken shows at once)
            first_seq = await first.fetchval("SELECT seq FROM outbox WHERE event_id = 'first'")
            assert await watcher.fetchval("SELECT last_value FROM outbox_seq_seq") == first_seq
        finally:
            await watcher.close()
        assert not blocked.done()
        await tx.commit()
        await asyncio.wait_for(blocked, timeout=10)
        seqs = {r["event_id"]: r["seq"] for r in await first.fetch("SELECT event_id, seq FROM outbox")}
        assert seqs["first"] < seqs["second"]
    finally:
        await first.close()
        await second.close()


async def test_a_writer_gone_quiet_in_its_transaction_does_not_stop_the_others(database, monkeypatch):
    """A writer that appended and then went quiet (a frozen process, a partition) would hold the
    schema's append lock for ever: the server ends a transaction idle that long (30 s in service;
    1 s here), its rows never commit, and the next writer appends."""
    dsn = await _migrated(database)
    monkeypatch.setattr(db, "IDLE_IN_TRANSACTION", "1s")
    pool = await db.create_pool(dsn, SCHEMA, min_size=2, max_size=2)
    try:
        quiet = await pool.acquire()
        tx = quiet.transaction()
        await tx.start()
        await outbox.add_rows(quiet, [_row("quiet")])
        async with pool.acquire() as other:
            await asyncio.wait_for(_add_in_transaction(other, [_row("other")]), timeout=15)
            assert [r["event_id"] for r in await other.fetch("SELECT event_id FROM outbox")] == ["other"]
        try:
            await tx.commit()
            raise AssertionError("the quiet transaction committed")
        except (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError, ConnectionError):
            pass  # ended by the server (InternalClientError: its FATAL read, its end of stream not yet)
        await pool.release(quiet)
    finally:
        pool.terminate()


async def _add_in_transaction(conn: asyncpg.Connection, rows: Sequence[outbox.Row]) -> None:
    async with conn.transaction():
        await outbox.add_rows(conn, rows)


async def test_the_relay_sends_every_row_of_concurrent_writers_in_each_keys_commit_order(database):
    """Writers commit at random moments while the relay reads: every row is sent, and each key's
    rows leave in the order their transactions committed (each writer commits its key's rows in
    turn). Without the append lock, a row could commit below the cursor and never leave."""
    dsn = await _migrated(database)
    sent: list[tuple[str, bytes]] = []  # (key, payload) in publish order

    async def publish(rows: Sequence[tuple[str, bytes, bytes]]) -> None:
        sent.extend((key.decode(), payload) for _, key, payload in rows)

    relay = outbox.Relay(dsn, SCHEMA, publish, batch_size=7, poll_s=0.02)
    relay.start()
    rng = random.Random(13)
    writers, per_writer = 6, 25

    async def writer(w: int) -> None:
        conn = await _connect(dsn)
        try:
            for i in range(per_writer):
                async with conn.transaction():
                    await outbox.add_rows(conn, [_row(f"w{w}-{i}-{j}", key=f"org-{w}") for j in range(rng.randint(1, 3))])
                    await asyncio.sleep(rng.random() * 0.003)  # commit later, while others write
        finally:
            await conn.close()

    try:
        await asyncio.gather(*(writer(w) for w in range(writers)))
        total = await _all_sent(dsn)
        await wait_until(lambda: len({p for _, p in sent}) == total, timeout=10, interval=0.02)
    finally:
        await relay.stop()
    for w in range(writers):
        firsts: list[str] = []
        for key, payload in sent:
            event_id = payload.split(b'"')[3].decode()
            if key == f"org-{w}" and event_id not in firsts:
                firsts.append(event_id)
        order = [(int(e.split("-")[1]), int(e.split("-")[2])) for e in firsts]
        assert order == sorted(order), f"org-{w}'s rows left out of commit order: {firsts}"


async def test_the_upgrade_to_the_log_sends_what_was_pending_and_nothing_already_sent(database, tmp_path, monkeypatch):
    """A schema from before migration 006: rows sent (sent_at), rows still pending (their keys in
    outbox_pending), a parked row, and a row sent out of order after a pending one. After the
    migration the relay sends exactly the pending rows."""
    dsn = await database.create_empty()
    before = tmp_path / "sql"
    before.mkdir()
    for f in sorted(migrate.SHARED_SQL.glob("*.sql")):
        if int(f.name[:3]) < 6:
            (before / f.name).write_text(f.read_text())
    conn = await asyncpg.connect(dsn)
    try:
        monkeypatch.setattr(migrate, "SHARED_SQL", before)
        await migrate.migrate(conn, SCHEMA, Path("/nonexistent"))
        await conn.execute(f"SET search_path TO {SCHEMA}")
        for event_id, state in [("sent-1", "sent"), ("pending-1", "pending"), ("parked-1", "parked"),
                                ("sent-2", "sent"), ("pending-2", "pending")]:
            seq = await conn.fetchval(
                "INSERT INTO outbox (event_id, topic, key, payload) VALUES ($1, 't', 'org-a', $2) RETURNING seq",
                event_id, b'{"id": "%s"}' % event_id.encode())
            if state == "sent":
                await conn.execute("UPDATE outbox SET sent_at = now() WHERE seq = $1", seq)
            elif state == "parked":
                await conn.execute("UPDATE outbox SET parked_at = now(), park_reason = 'too large' WHERE seq = $1", seq)
            else:
                await conn.execute("INSERT INTO outbox_pending VALUES ($1)", seq)
        monkeypatch.undo()
        assert await migrate.migrate(conn, SCHEMA, Path("/nonexistent")) == [
            "shared/006_outbox_cursor.sql", "shared/007_outbox_kept.sql", "shared/008_log_tables_vacuumed_young.sql"]
        states = {r["event_id"]: r["state"] for r in await conn.fetch("SELECT event_id, state FROM outbox_state")}
        assert states == {"sent-1": "sent", "pending-1": "unsent", "parked-1": "parked", "sent-2": "sent",
                          "pending-2": "unsent"}
        sent: list[bytes] = []

        async def publish(rows: Sequence[tuple[str, bytes, bytes]]) -> None:
            sent.extend(payload for _, _, payload in rows)

        relay = outbox.Relay(dsn, SCHEMA, publish, poll_s=0.02)
        relay.start()
        try:
            await wait_until(lambda: conn.fetchval("SELECT count(*) = 0 FROM outbox_state WHERE state = 'unsent'"),
                             timeout=10, interval=0.02)
        finally:
            await relay.stop()
        assert sent == [b'{"id": "pending-1"}', b'{"id": "pending-2"}']
        assert await outbox.oldest_unsent_s(conn) == 0.0
    finally:
        await conn.close()


async def test_entitlement_ledger_rows_take_their_seq_in_commit_order(database):
    """The ledger's seq (its outbox row's) is the `GET /v1/orgs/{org}/ledger?after=` cursor: a row
    committing below a seq a reader already paged past would never be read. Entitlement's second
    writer takes no seq while the first is uncommitted (sequences are not transactional, so a seq
    taken early shows in `last_value` at once)."""
    from contracts import events as ev
    from contracts.events import encoded

    dsn = await database.create("entitlement", Path("services/entitlement/migrations"))
    conns = [await asyncpg.connect(dsn, server_settings={"search_path": "entitlement"}) for _ in range(3)]
    first, second, watcher = conns

    def use(usage_id: str) -> ev.Encoded:
        return encoded(ev.UsageRejectedLedgerData, "org-a", {
            "org_id": "org-a", "usage_id": usage_id, "resource": "ai_review", "quantity": 1,
            "occurred_at": datetime(2026, 1, 1, tzinfo=timezone.utc), "channel": "online",
            "reason": "INSUFFICIENT_BALANCE"}, "/aimis/entitlement")

    async def emit_in_transaction(conn: asyncpg.Connection, usage_id: str) -> None:
        async with conn.transaction():
            await outbox.add(conn, [use(usage_id)])

    try:
        tx = first.transaction()
        await tx.start()
        await outbox.add(first, [use("u-first")])
        first_seq = await first.fetchval("SELECT seq FROM ledger WHERE data->>'usage_id' = 'u-first'")
        pid = await second.fetchval("SELECT pg_backend_pid()")
        blocked = asyncio.create_task(emit_in_transaction(second, "u-second"))
        await wait_until(lambda: watcher.fetchval(
            "SELECT wait_event_type = 'Lock' AND wait_event = 'advisory' FROM pg_stat_activity WHERE pid = $1",
            pid), timeout=10, interval=0.02)
        assert await watcher.fetchval("SELECT last_value FROM outbox_seq_seq") == first_seq
        await tx.commit()
        await asyncio.wait_for(blocked, timeout=10)
        rows = await watcher.fetch("SELECT data->>'usage_id' AS u FROM ledger ORDER BY seq")
        assert [r["u"] for r in rows] == ["u-first", "u-second"]
    finally:
        for c in conns:
            await c.close()


async def test_rows_offered_after_commit_are_sent_as_handed_over_once_each_in_commit_order(database):
    """Writers hand their committed rows to the relay (`Relay.offer`, as the consumer base does),
    some do not (as an HTTP endpoint's): every row is sent once, each key's rows in commit order,
    and offered rows go out as handed over (the very payload objects), not read back from the log."""
    dsn = await _migrated(database)
    sent: list[tuple[str, bytes]] = []

    async def publish(rows: Sequence[tuple[str, bytes, bytes]]) -> None:
        sent.extend((key.decode(), payload) for _, key, payload in rows)

    relay = outbox.Relay(dsn, SCHEMA, publish, batch_size=7, poll_s=0.02)
    relay.start()
    await wait_until(lambda: relay.is_leader, timeout=10, interval=0.01)
    rng = random.Random(7)
    handed: dict[bytes, bytes] = {}  # payload -> the object offered

    async def writer(w: int, offers: bool) -> None:
        conn = await _connect(dsn)
        try:
            for i in range(25):
                rows = [_row(f"w{w}-{i}-{j}", key=f"org-{w}") for j in range(rng.randint(1, 3))]
                async with conn.transaction():
                    appended = await outbox.add_rows(conn, rows, offering=relay.offering if offers else "")
                    await asyncio.sleep(rng.random() * 0.003)
                if offers:
                    assert appended is not None and [p for _, _, p in appended.rows] == [r[3] for r in rows]
                    handed.update((r[3], r[3]) for r in rows)
                    relay.offer(appended)
        finally:
            await conn.close()

    try:
        await asyncio.gather(*(writer(w, offers=w != 0) for w in range(4)))
        total = await _all_sent(dsn)
        await wait_until(lambda: len(sent) >= total, timeout=10, interval=0.02)
    finally:
        await relay.stop()
    assert len(sent) == total and len({p for _, p in sent}) == total, "a row was sent twice or not at all"
    for w in range(4):
        mine = [(int(p.split(b"-")[1]), int(p.split(b"-")[2].split(b'"')[0])) for k, p in sent if k == f"org-{w}"]
        assert mine == sorted(mine), f"org-{w}'s rows left out of commit order"
    as_handed = sum(1 for _, p in sent if p in handed and handed[p] is p)
    assert as_handed > 0, "no offered row was published as handed over"


async def test_a_lone_writer_that_offers_its_rows_is_never_read_back_from_the_log(database):
    """One writer that hands every commit over (the consumer base's case, one batch at a time): its
    commit's NOTIFY carries the relay's `offering` token, so the relay waits for the offer instead
    of reading the rows back from the log. Every row goes out as handed over; the log is read only
    when the relay takes the lead (and on its poll, longer than this test)."""
    dsn = await _migrated(database)
    sent: list[bytes] = []

    async def publish(rows: Sequence[tuple[str, bytes, bytes]]) -> None:
        sent.extend(payload for _, _, payload in rows)

    relay = outbox.Relay(dsn, SCHEMA, publish, poll_s=30)
    reads = done = 0
    drain = relay._drain

    async def counted(conn: asyncpg.Connection) -> int:
        nonlocal reads, done
        reads += 1
        try:
            return await drain(conn)
        finally:
            done += 1

    relay._drain = counted  # type: ignore[method-assign]
    relay.start()
    await wait_until(lambda: relay.is_leader and done >= 1, timeout=10, interval=0.01)  # its first read, ended
    reads_at_start = reads
    handed: list[bytes] = []
    conn = await _connect(dsn)
    try:
        for i in range(40):
            rows = [_row(f"lone-{i}-{j}") for j in range(1 + i % 3)]
            async with conn.transaction():
                appended = await outbox.add_rows(conn, rows, offering=relay.offering)
            handed.extend(r[3] for r in rows)
            relay.offer(appended)
            want = len(handed)
            await wait_until(lambda: len(sent) == want, timeout=10, interval=0.005)  # noqa: B023 - awaited here
    finally:
        await conn.close()
        await relay.stop()
    assert sent == handed and all(a is b for a, b in zip(sent, handed, strict=True)), "a row was read back"
    assert reads == reads_at_start, f"the log was read {reads - reads_at_start} times for offered rows"
