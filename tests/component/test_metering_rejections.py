"""One test per usage rejection reason (moved from tests/integration/test_metering.py): raw records
into metering's usage consumer, the rejection read back from its outbox."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from contracts import topics
from tests.component.conftest import NOW, Feed
from tests.component.test_metering_consumers import feed, rt, use  # noqa: F401 - fixtures

KNOWN = "org-a"


async def assert_rejected(feed: Feed, subject: str, reason: str, original: Any) -> dict[str, Any]:
    """Exactly one rejection of `original` under `subject`, with `reason` and a detail."""
    [ev] = [e for e in await feed.outbox(topics.USAGE_REJECTED)
            if e["subject"] == subject and e["data"]["original"] == original]
    assert (ev["type"], ev["data"]["reason"], bool(ev["data"]["detail"])) == ("aimis.usage.rejected", reason, True)
    return ev


async def test_non_json_record_is_rejected_malformed_with_its_raw_text(feed):
    raw = b"this is {not json"
    await feed(feed.record(raw, KNOWN))
    ev = await assert_rejected(feed, KNOWN, "MALFORMED", raw.decode())
    assert ev["id"] == f"rejected:{topics.USAGE}:0:0"


async def test_schema_violation_is_rejected_malformed_with_the_original_event(feed):
    bad = use(KNOWN, "u-1")
    del bad["data"]["inspection_id"]
    await feed(feed.record(bad, KNOWN))
    await assert_rejected(feed, KNOWN, "MALFORMED", bad)


async def test_unknown_type_is_rejected_unknown_type(feed):
    bad = {**use(KNOWN, "u-1"), "type": "aimis.usage.teleportation"}
    await feed(feed.record(bad, KNOWN))
    await assert_rejected(feed, KNOWN, "UNKNOWN_TYPE", bad)


async def test_quantity_out_of_range_is_rejected_invalid_quantity(feed):
    too_big, zero = use(KNOWN, "u-1", quantity=10_001), use(KNOWN, "u-2", quantity=0)
    await feed(feed.record(too_big, KNOWN), feed.record(zero, KNOWN))
    await assert_rejected(feed, KNOWN, "INVALID_QUANTITY", too_big)
    await assert_rejected(feed, KNOWN, "INVALID_QUANTITY", zero)


async def test_time_more_than_five_minutes_ahead_is_rejected_time_in_future(feed):
    bad = {**use(KNOWN, "u-1"), "time": (NOW + timedelta(minutes=10)).isoformat()}
    await feed(feed.record(bad, KNOWN))
    await assert_rejected(feed, KNOWN, "TIME_IN_FUTURE", bad)


async def test_org_without_agreement_is_rejected_unknown_org(feed):
    bad = use("org-without-agreement", "u-1")
    await feed(feed.record(bad, "org-without-agreement"))
    await assert_rejected(feed, "org-without-agreement", "UNKNOWN_ORG", bad)
    assert await feed.outbox(topics.DEDUCTIONS) == []


async def test_record_without_org_or_key_is_rejected_under_subject_unknown(feed):
    raw = b"garbage-1"
    await feed(feed.record(raw, None))
    await assert_rejected(feed, "unknown", "MALFORMED", raw.decode())
