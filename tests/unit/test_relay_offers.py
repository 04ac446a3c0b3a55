"""The relay's offers (shared/outbox.py, `Relay.offer`): rows a transaction of this process
committed, published as handed over when they continue the log from the cursor, and otherwise left
to the log, which has every row. No database here: the relay's state is set as leading, and its
publish is a function that collects what it would send."""

from __future__ import annotations

import time
from collections.abc import Sequence

from shared import outbox


def _relay(fail: bool = False) -> tuple[outbox.Relay, list[list[bytes]]]:
    published: list[list[bytes]] = []

    async def publish(rows: Sequence[tuple[str, bytes, bytes]]) -> None:
        if fail:
            raise RuntimeError("broker unreachable")
        published.append([payload for _, _, payload in rows])

    relay = outbox.Relay("postgresql://unused", "s", publish)
    relay.is_leader, relay._cursor = True, 10
    return relay, published


def _offer(first: int, n: int) -> outbox.Appended:
    return outbox.Appended(first, [("aimis.ledger.v1", b"org-a", b"%d" % (first + i)) for i in range(n)])


async def test_offers_that_continue_the_log_are_published_in_order_and_move_the_cursor():
    relay, published = _relay()
    relay.offer(_offer(11, 3))
    relay.offer(_offer(14, 2))
    assert await relay._send_offered() == 5
    assert published == [[b"11", b"12", b"13"], [b"14", b"15"]]
    assert relay._cursor == 15 and relay._unmarked  # stored by the next read of the log


async def test_an_offer_already_sent_through_the_log_is_skipped():
    relay, published = _relay()
    relay._cursor = 20  # the log was read past it first
    relay.offer(_offer(11, 3))
    relay.offer(_offer(21, 1))
    assert await relay._send_offered() == 1
    assert published == [[b"21"]]


async def test_at_a_gap_the_offers_are_dropped_and_the_log_sends_the_rows():
    relay, published = _relay()
    relay.offer(_offer(13, 2))  # rows 11-12 are another writer's: not offered here
    relay.offer(_offer(15, 1))
    assert await relay._send_offered() == 0
    assert published == [] and relay._cursor == 10 and not relay._offers


async def test_a_failed_publish_leaves_the_offered_rows_to_the_log():
    relay, published = _relay(fail=True)
    relay.offer(_offer(11, 2))
    relay.offer(_offer(13, 2))
    assert await relay._send_offered() == 0
    assert relay._cursor == 10 and not relay._offers and relay._offered_rows == 0


async def test_offers_are_ignored_unless_this_relay_leads_and_are_bounded():
    relay, published = _relay()
    relay.is_leader = False
    relay.offer(_offer(11, 1))
    assert not relay._offers
    relay.is_leader = True
    relay.offer(_offer(11, outbox.MAX_OFFERED_ROWS))
    assert relay._offered_rows == outbox.MAX_OFFERED_ROWS
    relay.offer(_offer(11 + outbox.MAX_OFFERED_ROWS, 1))  # one row too many: the log catches up
    assert not relay._offers and relay._offered_rows == 0
    assert await relay._send_offered() == 0 and published == []


async def test_nothing_appended_is_no_offer():
    relay, _ = _relay()
    relay.offer(None)
    assert not relay._offers


def test_a_commit_notified_with_the_relays_offering_token_waits_for_its_offer():
    relay, _ = _relay()
    relay._log_due, relay._last_read = False, time.monotonic()
    relay._notified(None, 1, "outbox_s", relay.offering)
    assert not relay._wake.is_set() and not relay._read_due()
    relay._notified(None, 1, "outbox_s", "offer:another-process")  # another writer's rows: read the log
    assert relay._wake.is_set() and relay._read_due()


def test_dropped_offers_make_the_next_round_read_the_log():
    relay, _ = _relay()
    relay._log_due, relay._last_read = False, time.monotonic()
    relay.offer(_offer(13, 1))  # a gap
    assert not relay._read_due()
    relay._drop_offers()
    assert relay._read_due()
