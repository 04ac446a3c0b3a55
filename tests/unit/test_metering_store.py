"""Metering sums a batch's quantities per (org, resource, UTC hour) before they reach PostgreSQL
(issue 13): the hour is the UTC hour whatever the offset the time was given in."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from services.metering.store import per_hour

UTC = timezone.utc


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def test_quantities_are_summed_per_org_resource_and_utc_hour() -> None:
    rows = per_hour(
        ["a", "a", "a", "b", "a", "a"],
        ["cloud_inspection", "cloud_inspection", "ai_review", "cloud_inspection", "cloud_inspection",
         "cloud_inspection"],
        [at("2026-03-10T10:00:00+00:00"), at("2026-03-10T10:59:59.999999+00:00"), at("2026-03-10T10:30:00+00:00"),
         at("2026-03-10T10:30:00+00:00"), at("2026-03-10T11:00:00+00:00"), at("2026-03-10T16:29:59+05:30")],
        [1, 2, 3, 4, 5, 0],
        [0, 0, 0, 0, 0, 7],
    )
    got = sorted(zip(*rows, strict=True))
    assert got == sorted([
        ("a", "cloud_inspection", at("2026-03-10T10:00:00+00:00"), 3, 7),  # 16:29:59+05:30 is 10:59:59Z
        ("a", "ai_review", at("2026-03-10T10:00:00+00:00"), 3, 0),
        ("b", "cloud_inspection", at("2026-03-10T10:00:00+00:00"), 4, 0),
        ("a", "cloud_inspection", at("2026-03-10T11:00:00+00:00"), 5, 0),
    ])
    assert all(h.utcoffset() == timedelta(0) for h in rows[2])


def test_offsets_that_cross_a_day_or_half_an_hour_fall_in_their_utc_hour() -> None:
    times = [at("2026-12-31T23:30:00-03:00"), at("2026-01-01T00:15:00+05:45"), at("2026-06-01T00:00:00+14:00")]
    _, _, hours, _, _ = per_hour(["o"] * 3, ["cloud_inspection"] * 3, times, [1, 1, 1], [0, 0, 0])
    assert hours == [datetime(2027, 1, 1, 2, tzinfo=UTC), datetime(2025, 12, 31, 18, tzinfo=UTC),
                     datetime(2026, 5, 31, 10, tzinfo=UTC)]


@settings(max_examples=500)
@given(st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2999, 12, 31, 23, 59, 59, 999999),
                    timezones=st.builds(lambda m: timezone(timedelta(minutes=m)), st.integers(-14 * 60, 14 * 60))))
def test_the_hour_is_the_utc_hour_truncated_for_any_instant_and_offset(t: datetime) -> None:
    _, _, [hour], _, _ = per_hour(["o"], ["cloud_inspection"], [t], [1], [0])
    assert hour == t.astimezone(UTC).replace(minute=0, second=0, microsecond=0) and hour.utcoffset() == timedelta(0)


def test_an_empty_batch_gives_no_rows() -> None:
    assert per_hour([], [], [], [], []) == ([], [], [], [], [])
