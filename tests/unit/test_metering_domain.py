"""Metering classification rules (pure domain, no I/O)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from contracts.events import DeductionRequestedData, encode, parse_event
from services.metering import domain
from services.metering.domain import Rejection, Usage

NOW = datetime(2025, 3, 10, 12, 30, tzinfo=timezone.utc)


def usage(**over: Any) -> dict[str, Any]:
    ev: dict[str, Any] = {
        "specversion": "1.0", "id": "u-1", "source": "/platform", "type": "aimis.usage.cloud_inspection",
        "subject": "org-a", "time": "2025-03-10T12:00:00Z",
        "data": {"quantity": 3, "inspection_id": "insp-1"},
    }
    data = over.pop("data", None)
    ev.update(over)
    if data is not None:
        ev["data"] = {**ev["data"], **data}
    return ev


def reason_of(raw: Any, now: datetime = NOW) -> str | None:
    r = domain.validate(raw, now)
    return r.reason if isinstance(r, Rejection) else None


def test_valid_usage_is_accepted_with_its_resource_and_defaults():
    r = domain.validate(json.dumps(usage(data={"quantity": 7})).encode(), NOW)
    assert isinstance(r, Usage)
    assert (r.id, r.org_id, r.resource, r.quantity, r.data.channel) == ("u-1", "org-a", "cloud_inspection", 7, "online")
    assert r.occurred_at == datetime(2025, 3, 10, 12, tzinfo=timezone.utc)


def test_quantity_defaults_to_one():
    ev = usage()
    del ev["data"]["quantity"]
    r = domain.validate(ev, NOW)
    assert isinstance(r, Usage) and r.quantity == 1


def test_ai_review_type_maps_to_ai_review_resource():
    r = domain.validate(usage(type="aimis.usage.ai_review"), NOW)
    assert isinstance(r, Usage) and r.resource == "ai_review"


@pytest.mark.parametrize(
    "raw", [b"not json {", b"\xff\xfe", "[1, 2]", '"a string"', "42", None, b"", b"[" * 100_000]
)
def test_non_json_or_non_object_is_malformed(raw):
    assert reason_of(raw) == "MALFORMED"


@pytest.mark.parametrize("field", ["specversion", "id", "source", "type", "subject", "time", "data"])
def test_missing_envelope_attribute_is_malformed(field):
    ev = usage()
    del ev[field]
    assert reason_of(ev) == "MALFORMED"


@pytest.mark.parametrize(
    "over",
    [{"specversion": "0.3"}, {"subject": "bad org!"}, {"time": "2025-03-10T12:00:00"}, {"id": "x" * 129},
     {"data": "not an object"}],
)
def test_bad_envelope_values_are_malformed(over):
    ev = usage()
    ev.update(over)
    assert reason_of(ev) == "MALFORMED"


def test_data_schema_violation_other_than_quantity_is_malformed():
    ev = usage()
    del ev["data"]["inspection_id"]
    assert reason_of(ev) == "MALFORMED"
    assert reason_of(usage(data={"channel": "carrier-pigeon"})) == "MALFORMED"


@pytest.mark.parametrize("t", ["aimis.usage.storage", "aimis.orders.order_paid", "whatever"])
def test_other_types_are_unknown_type(t):
    assert reason_of(usage(type=t)) == "UNKNOWN_TYPE"


@pytest.mark.parametrize("q", [0, -1, 10_001, 2.5, "3", True, None, [1]])
def test_quantity_not_an_int_in_1_to_10000_is_invalid_quantity(q):
    assert reason_of(usage(data={"quantity": q})) == "INVALID_QUANTITY"


@pytest.mark.parametrize("q", [1, 10_000])
def test_quantity_bounds_are_inclusive(q):
    assert reason_of(usage(data={"quantity": q})) is None


def test_invalid_quantity_wins_over_other_data_errors():
    ev = usage(data={"quantity": 0})
    del ev["data"]["inspection_id"]
    assert reason_of(ev) == "INVALID_QUANTITY"


def test_time_more_than_five_minutes_ahead_is_in_future():
    at = NOW + timedelta(minutes=5, seconds=1)
    assert reason_of(usage(time=at.isoformat())) == "TIME_IN_FUTURE"


def test_time_up_to_five_minutes_ahead_is_accepted():
    at = NOW + timedelta(minutes=5)
    assert reason_of(usage(time=at.isoformat())) is None


def test_the_records_limit_follows_each_now_in_any_time_zone(monkeypatch):
    """Records (bytes) take the fast path, which keeps the latest time allowed for the last (now,
    tzinfo) asked: an earlier now after a later one does not inherit its limit, in UTC and in
    another offset alike; the edge stays in."""
    edge, past = NOW + timedelta(minutes=5), NOW + timedelta(minutes=5, seconds=1)
    for tz in (timezone.utc, timezone(timedelta(hours=2))):
        monkeypatch.setattr(domain, "_LATEST", None)
        raw = json.dumps(usage(time=past.astimezone(tz).isoformat())).encode()
        assert reason_of(raw, NOW + timedelta(seconds=1)) is None
        assert reason_of(raw) == "TIME_IN_FUTURE"
        assert isinstance(domain.validate(json.dumps(usage(time=edge.astimezone(tz).isoformat())).encode(), NOW), Usage)


def test_late_usage_is_accepted():
    assert reason_of(usage(time="2024-01-01T00:00:00+02:00")) is None


def test_unknown_org_only_when_not_in_known_orgs():
    r = domain.validate(usage(), NOW)
    assert domain.check_org(r, {"org-a"}) is r
    rej = domain.check_org(r, {"org-b"})
    assert isinstance(rej, Rejection) and rej.reason == "UNKNOWN_ORG"
    assert (rej.org_id, rej.resource, rej.event_id, rej.quantity) == ("org-a", "cloud_inspection", "u-1", 3)


def test_check_org_leaves_rejections_as_they_are():
    r = domain.validate(usage(type="x"), NOW)
    assert domain.check_org(r, set()) is r


def test_rejection_keeps_what_could_be_read_for_routing_and_reports():
    r = domain.validate(usage(data={"quantity": 0}), NOW)
    assert isinstance(r, Rejection)
    assert (r.event_id, r.org_id, r.resource, r.quantity) == ("u-1", "org-a", "cloud_inspection", None)
    assert r.counted_quantity == 1


def test_rejection_subject_prefers_org_then_record_key_then_unknown():
    with_org = Rejection("MALFORMED", "x", org_id="org-a")
    without = Rejection("MALFORMED", "x")
    assert domain.rejection_subject(with_org, b"org-k") == "org-a"
    assert domain.rejection_subject(without, b"org-k") == "org-k"
    assert domain.rejection_subject(without, b"bad key!") == "unknown"
    assert domain.rejection_subject(without, None) == "unknown"


def test_rejection_id_is_deterministic_per_record():
    assert domain.rejection_id("t", 1, 5) == domain.rejection_id("t", 1, 5) != domain.rejection_id("t", 1, 6)


def test_future_rejection_is_counted_in_the_hour_received():
    at = NOW + timedelta(hours=2)
    r = domain.validate(usage(time=at.isoformat()), NOW)
    assert isinstance(r, Rejection) and r.bucket_time(NOW) == NOW
    past = domain.check_org(domain.validate(usage(), NOW), set())
    assert isinstance(past, Rejection) and past.bucket_time(NOW) == datetime(2025, 3, 10, 12, tzinfo=timezone.utc)


def test_deduction_carries_the_usage_id_time_and_data():
    r = domain.validate(usage(data={"site_id": "s1", "attributes": {"k": "v"}, "channel": "offline"}), NOW)
    assert isinstance(r, Usage)
    d = parse_event(encode(r.deduction_event("/aimis/metering", NOW))).data
    assert isinstance(d, DeductionRequestedData)
    assert (d.usage_id, d.org_id, d.resource, d.quantity) == ("u-1", "org-a", "cloud_inspection", 3)
    assert (d.occurred_at, d.received_at, d.channel, d.site_id, d.attributes) == (
        r.occurred_at, NOW, "offline", "s1", {"k": "v"})


def test_normalized_event_keeps_extensions_and_fills_defaults():
    ev = usage(myext="x")
    del ev["data"]["quantity"]
    r = domain.validate(ev, NOW)
    assert isinstance(r, Usage)
    out = json.loads(r.normalized().model_dump_json())
    assert out["myext"] == "x" and out["data"]["quantity"] == 1 and out["id"] == "u-1"


def test_deduction_event_is_a_valid_deduction_requested_with_the_usage_id():
    r = domain.validate(json.dumps(usage(data={"site_id": "s1"})).encode(), NOW)
    assert isinstance(r, Usage)
    ev = parse_event(encode(r.deduction_event("/aimis/metering", NOW)))
    assert ev.type == "aimis.metering.deduction_requested" and ev.id == "u-1" and ev.subject == "org-a"
    assert isinstance(ev.data, DeductionRequestedData)
    assert (ev.data.usage_id, ev.data.quantity, ev.data.occurred_at, ev.data.received_at) == (
        "u-1", 3, r.occurred_at, NOW)


SAMPLES = [
    usage(), usage(type="aimis.usage.ai_review"), usage(type="nope"), usage(data={"quantity": "3"}),
    usage(data={"quantity": 5.0}), usage(data={"quantity": True}), usage(data={"quantity": 0}),
    usage(data={"channel": "x"}), usage(subject="bad org"), usage(time="2030-01-01T00:00:00Z"),
    usage(time="2025-03-10T12:35:00Z"), usage(time="2025-03-10T12:35:01Z"), usage(extra_attr={"a": 1}),
    usage(data={"attributes": {"k": 1}}), usage(specversion="1.1"), usage(data={"unknown_field": 1}),
]


@pytest.mark.parametrize("ev", SAMPLES)
def test_fast_path_on_bytes_agrees_with_the_full_classification(ev):
    fast = domain.validate(json.dumps(ev).encode(), NOW)
    full = domain.validate(ev, NOW)  # a dict always takes the full path
    assert type(fast) is type(full)
    if isinstance(full, Rejection):
        assert fast.reason == full.reason
    else:
        assert (fast.id, fast.quantity, fast.resource) == (full.id, full.quantity, full.resource)
