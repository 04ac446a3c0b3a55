"""When expiry commands take effect, service terms, the perpetual licence and the balance view:
pure rules over the domain dataclasses (no database)."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone

from services.entitlement import domain
from services.entitlement.domain import Counters, Licence, Service, StoredLicence
from shared.clock import add_years

T0 = datetime(2025, 1, 1, tzinfo=timezone.utc)
DAY = timedelta(days=1)
GRACE = timedelta(seconds=300)


def svc(sku: str = "SVC-DELIVERY", **kw: object) -> Service:
    terms = domain.service_terms(sku, T0, kw.pop("years", 2))  # type: ignore[arg-type]
    base = Service("o.0", "org-a", "o", 0, sku, None, None, None, T0, terms.accept_by, terms.ends_at, terms.status)
    return replace(base, **kw)  # type: ignore[arg-type]


def test_service_terms_one_time_awaits_acceptance_a_year_and_maintenance_runs_its_years():
    assert domain.service_terms("SVC-SCHEDULED", T0, None) == domain.ServiceTerms(
        add_years(T0, 1), None, "awaiting_acceptance")
    assert domain.service_terms("SVC-MAINTENANCE", T0, 3) == domain.ServiceTerms(None, add_years(T0, 3), "active")


def test_expire_service_takes_effect_only_after_the_deadline_for_a_service_still_awaiting_acceptance():
    s = svc()
    deadline = add_years(T0, 1)
    assert domain.service_expiry(s, "org-a", deadline - DAY) is None
    assert domain.service_expiry(s, "org-a", deadline) == deadline
    assert domain.service_expiry(s, "org-b", deadline) is None  # another org's service
    assert domain.service_expiry(replace(s, status="accepted"), "org-a", deadline) is None
    assert domain.service_expiry(svc("SVC-MAINTENANCE"), "org-a", deadline) is None


def test_end_maintenance_takes_effect_once_its_end_has_passed():
    s = svc("SVC-MAINTENANCE", years=2)
    end = add_years(T0, 2)
    assert domain.maintenance_end(s, "org-a", end - DAY) is None
    assert domain.maintenance_end(s, "org-a", end) == end
    assert domain.maintenance_end(replace(s, status="ended"), "org-a", end + DAY) is None


def test_end_licence_ignores_a_licence_renewed_past_the_commanded_end():
    end = T0 + 30 * DAY
    lic = StoredLicence("org-a:basic", "org-a", "basic", Licence(T0, end), active=True)
    assert domain.licence_end(lic, "org-a", end, end - DAY) is None  # not yet
    assert domain.licence_end(lic, "org-a", end, end) == end
    renewed = replace(lic, licence=Licence(T0, end + 30 * DAY))
    assert domain.licence_end(renewed, "org-a", end, end + DAY) is None
    assert domain.licence_end(replace(lic, active=False), "org-a", end, end) is None
    perpetual = replace(lic, licence=Licence(T0, None))
    assert domain.licence_end(perpetual, "org-a", end, end + 999 * DAY) is None


def test_a_perpetual_licence_keeps_its_earliest_start_and_never_ends():
    lic, start, end = domain.perpetual_licence(Licence(T0, None), T0 + DAY)
    assert (lic, start, end) == (Licence(T0, None), T0 + DAY, None)
    assert domain.perpetual_licence(None, T0)[0] == Licence(T0, None)


def test_expire_lot_waits_for_the_grace_and_for_its_own_org():
    lot = replace(domain.new_lot("o.0", 1000, 2, T0), org_id="org-a", resource="cloud_inspection", remaining=400)
    due = lot.expires_at + GRACE
    assert domain.lot_expiry(lot, "org-a", due - timedelta(seconds=1), GRACE) is None
    assert domain.lot_expiry(replace(lot), "org-b", due, GRACE) is None
    assert domain.lot_expiry(lot, "org-a", due, GRACE) == 400
    assert domain.lot_expiry(lot, "org-a", due, GRACE) is None  # already expired


def test_balance_keeps_an_expired_lot_available_until_it_is_forfeited():
    lot = replace(domain.new_lot("o.0", 1000, 2, T0), remaining=600)
    after_expiry = lot.expires_at + DAY
    c = Counters(purchased=1000, drawn_by_usage=400, arrears_recorded=50, arrears_offset=20)
    b = domain.balance(c, [lot])
    assert (b.purchased, b.available, b.used, b.arrears, b.forfeited) == (1000, 600, 450, 30, 0)
    assert domain.lot_status(lot, after_expiry) == "expired"
    assert domain.available_now([lot], after_expiry) == 0  # not drawable now
    assert domain.balance(None, []) == domain.BalanceFigures(0, 0, 0, 0, 0)
