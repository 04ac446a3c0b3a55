from __future__ import annotations

from datetime import datetime, timezone

import pytest

from shared import auth
from shared.clock import add_months, add_years
from shared.errors import ApiError


def test_leap_day_plus_one_year_is_feb_28():
    leap = datetime(2024, 2, 29, 12, tzinfo=timezone.utc)
    assert add_years(leap, 1) == datetime(2025, 2, 28, 12, tzinfo=timezone.utc)
    assert add_years(datetime(2025, 3, 1, tzinfo=timezone.utc), 1) == datetime(2026, 3, 1, tzinfo=timezone.utc)


def test_add_months_clamps_to_month_end():
    assert add_months(datetime(2026, 1, 31, tzinfo=timezone.utc), 1) == datetime(2026, 2, 28, tzinfo=timezone.utc)
    assert add_months(datetime(2026, 11, 15, tzinfo=timezone.utc), 14) == datetime(2028, 1, 15, tzinfo=timezone.utc)


def test_org_token_is_scoped_to_its_org():
    p = auth.decode("s", auth.mint("s", "org", "hosp-1"))
    p.require_org("hosp-1")
    with pytest.raises(ApiError) as e:
        p.require_org("hosp-2")
    assert e.value.status == 403
    with pytest.raises(ApiError):
        p.require_admin()


def test_token_signed_with_another_secret_is_401():
    with pytest.raises(ApiError) as e:
        auth.decode("s", auth.mint("other", "admin"))
    assert e.value.status == 401
