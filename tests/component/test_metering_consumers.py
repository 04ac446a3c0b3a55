"""Metering's usage and orders consumers against PostgreSQL only."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest

from contracts import topics
from contracts.events import AgreementRecordedData, OrderCancelledData, encode, new_event
from services.metering import store
from services.metering.app import MIGRATIONS
from services.metering.handlers import orders, usage
from tests.component.conftest import NOW, Feed, runtime


class KnownOrgs:
    """Stands in for the orders catch-up: what is in known_orgs is all there is (no Kafka)."""

    async def settled_known_orgs(self, pool: Any, orgs: set[str], wait_s: float, *,
                                 remembered: bool = True) -> set[str]:
        return await store.known_orgs(pool, orgs)


@pytest.fixture
async def rt(database, clock) -> AsyncIterator[Any]:  # type: ignore[no-untyped-def]
    rt = await runtime("metering", MIGRATIONS, database, clock)
    await store.add_known_orgs(rt.pool, [("org-a", NOW), ("org-b", NOW)])
    yield rt
    await rt.close_database()


@pytest.fixture
def feed(rt) -> Feed:  # type: ignore[no-untyped-def]
    return Feed(rt, usage(rt, KnownOrgs()))  # type: ignore[arg-type]


def use(org: str, uid: str, **data: Any) -> dict[str, Any]:
    return {"specversion": "1.0", "id": uid, "source": "/platform", "type": "aimis.usage.cloud_inspection",
            "subject": org, "time": (NOW - timedelta(minutes=1)).isoformat(),
            "data": {"inspection_id": f"ins-{uid}", **data}}


async def test_the_same_usage_id_from_two_orgs_is_two_uses_and_from_one_org_is_one(feed):
    a, b = use("org-a", "u-1"), use("org-b", "u-1")
    await feed(feed.record(a, "org-a"), feed.record(b, "org-b"), feed.record(a, "org-a"))  # a repeat in the batch
    await feed(feed.record(a, "org-a"), feed.record(b, "org-b"))  # and redelivered later
    got = await feed.outbox(topics.DEDUCTIONS)
    assert sorted((e["subject"], e["data"]["usage_id"]) for e in got) == [("org-a", "u-1"), ("org-b", "u-1")]
    report = await store.usage_report(feed.rt.pool, "org-a", resource=None, start=None, end=None, granularity="day")
    assert [(r["accepted"], r["rejected"]) for r in report] == [(1, 0)]


async def test_a_batch_mixing_processed_and_new_uses_forwards_and_counts_the_new_ones_only(feed):
    """The deduction requests are built while the inbox claim runs (claim="overlap"), assuming every
    use is new: a use processed before is neither forwarded again nor counted again."""
    await feed(feed.record(use("org-a", "u-1", quantity=2), "org-a"))
    await feed(feed.record(use("org-a", "u-2", quantity=3), "org-a"), feed.record(use("org-a", "u-1", quantity=2), "org-a"),
               feed.record(use("org-b", "u-3", quantity=4), "org-b"))
    got = await feed.outbox(topics.DEDUCTIONS)
    assert sorted((e["data"]["usage_id"], e["data"]["quantity"]) for e in got) == [("u-1", 2), ("u-2", 3), ("u-3", 4)]
    report = await store.usage_report(feed.rt.pool, "org-a", resource=None, start=None, end=None, granularity="day")
    assert [r["accepted"] for r in report] == [5]


async def test_bad_usage_is_rejected_once_per_record_even_when_redelivered(feed):
    unknown_org = feed.record(use("org-z", "u-2"), "org-z")
    bad_quantity = feed.record(use("org-a", "u-3", quantity=0), "org-a")
    garbage = feed.record(b"\x00 not json", "org-a")
    await feed(unknown_org, bad_quantity, garbage)
    await feed(unknown_org, bad_quantity, garbage)  # the same records again (a rewound batch)
    got = await feed.outbox(topics.USAGE_REJECTED)
    assert [(e["subject"], e["data"]["reason"]) for e in got] == [
        ("org-z", "UNKNOWN_ORG"), ("org-a", "INVALID_QUANTITY"), ("org-a", "MALFORMED")]
    assert await feed.outbox(topics.DEDUCTIONS) == []


async def test_a_use_refused_for_its_org_is_accepted_once_the_agreement_is_known(feed):
    early = use("org-new", "u-4")
    await feed(feed.record(early, "org-new"))
    await store.add_known_orgs(feed.rt.pool, [("org-new", NOW)])
    await feed(feed.record(early, "org-new"))  # sent again after the agreement: not burnt by the refusal
    assert [e["data"]["usage_id"] for e in await feed.outbox(topics.DEDUCTIONS)] == ["u-4"]


async def test_orders_consumer_learns_agreements_ignores_other_order_events_and_dead_letters_bad_ones(rt):
    feed = Feed(rt, orders(rt))
    agreement = new_event("org-c", AgreementRecordedData(org_id="org-c", agreement_ref="A-1", signed_at=NOW,
                                                         recorded_at=NOW), "/aimis/order")
    cancelled = new_event("org-c", OrderCancelledData(order_id="o-1", org_id="org-c", cancelled_at=NOW), "/aimis/order")
    await feed(feed.record(encode(agreement), "org-c"), feed.record(encode(cancelled), "org-c"),
               feed.record(b"{", "org-c"))
    assert await store.known_orgs(rt.pool, {"org-c"}) == {"org-c"}
    dead = await feed.outbox(topics.METERING_DLQ)
    assert [(e["type"], e["subject"], e["data"]["reason"]) for e in dead] == [
        ("aimis.metering.dead_letter", "org-c", "MALFORMED")]
