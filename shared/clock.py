"""An injectable clock: services ask it for the time, tests replace it."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone


class Clock:
    def now(self) -> datetime:
        return datetime.now(timezone.utc)


class FixedClock(Clock):
    """A clock that stands still until moved (tests)."""

    def __init__(self, at: datetime):
        if at.tzinfo is None:
            raise ValueError("FixedClock needs a timezone-aware datetime")
        self._at = at

    def now(self) -> datetime:
        return self._at

    def advance(self, delta: timedelta) -> None:
        self._at += delta

    def set(self, at: datetime) -> None:
        self._at = at


def add_years(at: datetime, years: int) -> datetime:
    """Calendar years; Feb 29 + 1 y = Feb 28."""
    try:
        return at.replace(year=at.year + years)
    except ValueError:  # Feb 29 in a non-leap target year
        return at.replace(year=at.year + years, day=28)


def add_months(at: datetime, months: int) -> datetime:
    """Calendar months, clamped to the last day of the target month (Jan 31 + 1 m = Feb 28/29)."""
    import calendar

    m = at.month - 1 + months
    year, month = at.year + m // 12, m % 12 + 1
    day = min(at.day, calendar.monthrange(year, month)[1])
    return at.replace(year=year, month=month, day=day)


__all__ = ["Clock", "FixedClock", "add_years", "add_months", "timedelta"]
