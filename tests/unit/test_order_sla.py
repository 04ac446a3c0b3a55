"""The fulfilment SLA rule of the order view (services/order/sla.py), without I/O."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from services.order.sla import view_fields

PAID = datetime(2026, 11, 2, 9, 0, tzinfo=timezone.utc)
SLA = timedelta(hours=1)


@pytest.mark.parametrize(("status", "after", "overdue"), [
    ("paid", timedelta(0), False),
    ("paid", SLA, False),                               # due at exactly paid_at + SLA: still on time
    ("paid", SLA + timedelta(microseconds=1), True),
    ("fulfilled", SLA * 30, False),                     # fulfilled late is no longer waiting
])
def test_a_paid_order_is_overdue_only_after_its_deadline(status: str, after: timedelta, overdue: bool) -> None:
    got = view_fields(status, PAID, PAID + after, SLA)
    assert got == {"fulfilment_due_by": PAID + SLA, "fulfilment_overdue": overdue}


@pytest.mark.parametrize("status", ["placed", "cancelled"])
def test_an_unpaid_order_has_no_deadline(status: str) -> None:
    assert view_fields(status, None, PAID + SLA * 99, SLA) == {"fulfilment_due_by": None, "fulfilment_overdue": False}
