"""Entitlement rules in pure Python: examples, then hypothesis properties (1,000 examples each)."""

from __future__ import annotations

import copy
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.entitlement import domain
from services.entitlement.domain import (
    AI,
    CLOUD,
    Account,
    Arrear,
    Book,
    Deducted,
    Licence,
    Lot,
    Rejected,
    Use,
)

T0 = datetime(2025, 1, 1, tzinfo=timezone.utc)
GRACE = timedelta(seconds=300)
PROPS = settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def lot(lot_id: str, qty: int, credited_days: float = 0, years: int | None = 1) -> Lot:
    return domain.new_lot(lot_id, qty, years, T0 + timedelta(days=credited_days))


def use(uid: str, qty: int, days: float = 1, resource: str = CLOUD, channel: str = "online") -> Use:
    return Use(uid, resource, qty, T0 + timedelta(days=days), channel)


# ---------------------------------------------------------------- examples


def test_lot_is_valid_one_calendar_year_and_feb29_plus_one_year_is_feb28():
    leap = datetime(2024, 2, 29, 10, tzinfo=timezone.utc)
    assert domain.new_lot("a#0", 5, 1, leap).expires_at == datetime(2025, 2, 28, 10, tzinfo=timezone.utc)
    assert lot("b#0", 5).expires_at == datetime(2026, 1, 1, tzinfo=timezone.utc)


def test_use_draws_the_lot_expiring_first_and_spans_lots():
    book = Book(CLOUD)
    domain.credit(book, lot("0-late", 10, credited_days=30, years=5))
    domain.credit(book, lot("a-early", 3, credited_days=0, years=2))
    out = domain.deduct(book, use("u1", 5, days=40), T0 + timedelta(days=40), GRACE)
    assert isinstance(out, Deducted)
    assert [(d.lot_id, d.quantity) for d in out.allocations] == [("a-early", 3), ("0-late", 2)]
    assert out.allocations[0].retention_until == datetime(2027, 2, 10, tzinfo=timezone.utc)  # 2 years
    assert out.allocations[1].retention_until == datetime(2030, 2, 10, tzinfo=timezone.utc)  # 5 years


def test_ties_go_to_credited_first_then_smaller_lot_id():
    book = Book(CLOUD)
    a = Lot("b", 1, 1, 1, T0, T0 + timedelta(days=100))
    b = Lot("a", 1, 1, 1, T0, T0 + timedelta(days=100))
    c = Lot("c", 1, 1, 1, T0 - timedelta(days=1), T0 + timedelta(days=100))
    book.lots = {x.lot_id: x for x in (a, b, c)}
    out = domain.deduct(book, use("u", 3, days=1), T0 + timedelta(days=1), GRACE)
    assert [d.lot_id for d in out.allocations] == ["c", "a", "b"]


def test_cloud_inspection_beyond_balance_becomes_arrears():
    book = Book(CLOUD)
    domain.credit(book, lot("l", 2))
    out = domain.deduct(book, use("u", 5), T0 + timedelta(days=1), GRACE)
    assert out.arrears_quantity == 3 and book.outstanding() == 3 and book.lots["l"].remaining == 0


def test_ai_review_beyond_balance_is_rejected_whole_and_nothing_deducted():
    book = Book(AI)
    domain.credit(book, lot("l", 2, years=None))
    out = domain.deduct(book, use("u", 3, resource=AI), T0 + timedelta(days=1), GRACE)
    assert out == Rejected("u", "INSUFFICIENT_BALANCE")
    assert book.lots["l"].remaining == 2 and book.counters.drawn_by_usage == 0


def test_offline_ai_review_counts_under_perpetual_licence_else_rejected():
    book = Book(AI)
    domain.credit(book, lot("l", 2, years=None))
    held = domain.deduct(book, use("u1", 1, resource=AI, channel="offline"), T0, GRACE, offline_licence=True)
    assert held == Deducted("u1", (), 0, offline_licence=True)
    assert book.lots["l"].remaining == 2
    missing = domain.deduct(book, use("u2", 1, resource=AI, channel="offline"), T0, GRACE)
    assert missing == Rejected("u2", "NO_OFFLINE_LICENCE")


def test_online_ai_review_never_uses_the_perpetual_licence():
    book = Book(AI)
    out = domain.deduct(book, use("u", 1, resource=AI), T0, GRACE, offline_licence=True)
    assert out == Rejected("u", "INSUFFICIENT_BALANCE")


def test_late_use_draws_expired_lot_within_grace_but_not_after():
    book = Book(CLOUD)
    domain.credit(book, lot("l", 5))
    expiry = book.lots["l"].expires_at
    late = Use("u1", CLOUD, 1, expiry - timedelta(seconds=1))
    assert domain.deduct(book, late, expiry + GRACE - timedelta(seconds=1), GRACE).allocations[0].lot_id == "l"
    after = domain.deduct(book, Use("u2", CLOUD, 1, expiry - timedelta(seconds=1)), expiry + GRACE, GRACE)
    assert after.allocations == () and after.arrears_quantity == 1
    used_after_expiry = domain.deduct(book, Use("u3", CLOUD, 1, expiry), expiry, GRACE)
    assert used_after_expiry.arrears_quantity == 1


def test_expire_forfeits_only_once_due_and_only_once():
    book = Book(CLOUD)
    domain.credit(book, lot("l", 5))
    exp = book.lots["l"].expires_at
    assert domain.expire(book, "l", exp + GRACE - timedelta(microseconds=1), GRACE) is None
    assert domain.expire(book, "l", exp + GRACE, GRACE) == 5
    assert domain.expire(book, "l", exp + GRACE * 2, GRACE) is None
    assert book.counters.forfeited == 5


def test_new_lot_offsets_arrears_oldest_first_with_its_storage_years():
    book = Book(CLOUD, arrears=[Arrear("b", T0 + timedelta(days=2), 4), Arrear("a", T0 + timedelta(days=1), 3)])
    offsets = domain.credit(book, lot("l", 5, credited_days=3, years=10))
    assert [(o.usage_id, o.quantity) for o in offsets] == [("a", 3), ("b", 2)]
    assert offsets[0].retention_until == datetime(2035, 1, 2, tzinfo=timezone.utc)
    assert book.lots["l"].remaining == 0 and book.outstanding() == 2


def test_licence_renewals_stack_from_the_current_end():
    first, s1, e1 = domain.renew(None, T0, 12)
    assert (s1, e1) == (T0, datetime(2026, 1, 1, tzinfo=timezone.utc))
    second, s2, e2 = domain.renew(first, T0 + timedelta(days=100), 6)
    assert (s2, e2) == (e1, datetime(2026, 7, 1, tzinfo=timezone.utc))
    assert second.starts_at == T0
    lapsed, s3, _ = domain.renew(second, datetime(2027, 1, 1, tzinfo=timezone.utc), 1)
    assert s3 == datetime(2027, 1, 1, tzinfo=timezone.utc) and lapsed.starts_at == s3


def test_optional_feature_enabled_only_while_basic_active_until_the_earlier_end():
    now = T0 + timedelta(days=10)
    basic = Licence(T0, T0 + timedelta(days=30))
    viewer = Licence(T0, T0 + timedelta(days=60))
    assert domain.feature_state({"advanced_viewer": viewer}, "advanced_viewer", now).enabled is False
    s = domain.feature_state({"basic": basic, "advanced_viewer": viewer}, "advanced_viewer", now)
    assert s == domain.FeatureState(True, T0 + timedelta(days=30))
    assert domain.feature_state({"basic": basic}, "basic", now) == domain.FeatureState(True, basic.ends_at)
    assert domain.feature_state({"basic": basic, "advanced_viewer": viewer}, "advanced_viewer",
                                T0 + timedelta(days=31)).enabled is False


def test_service_status_follows_its_deadlines():
    acc_by = T0 + timedelta(days=365)
    assert domain.service_status("SVC-DELIVERY", "awaiting_acceptance", acc_by, None, T0) == "awaiting_acceptance"
    assert domain.service_status("SVC-DELIVERY", "awaiting_acceptance", acc_by, None, acc_by) == "expired"
    assert domain.service_status("SVC-MAINTENANCE", "active", None, acc_by, acc_by) == "ended"
    assert not domain.acceptable("SVC-MAINTENANCE", "active", None, T0)


@pytest.mark.parametrize(
    "sku,kw",
    [("NOPE", {}), ("CI-QTY", {"quantity": 1000}), ("AI-QTY", {}), ("SW-OPT", {"months": 1, "feature": "x"}),
     ("SW-BASIC", {}), ("SVC-MAINTENANCE", {})],
)
def test_line_that_cannot_be_credited_is_an_unknown_order_line(sku, kw):
    args = {"quantity": None, "storage_years": None, "months": None, "feature": None, "years": None, **kw}
    with pytest.raises(domain.UnknownOrderLine):
        domain.check_line(0, sku, **args)


# ---------------------------------------------------------------- properties

lot_ids = st.sampled_from([f"L{i}" for i in range(9)])


@st.composite
def credits(draw, resource: str = CLOUD):
    i = draw(st.integers(0, 8))
    years = draw(st.sampled_from([1, 2, 3, 5, 10, 15])) if resource == CLOUD else None
    return ("credit", domain.new_lot(f"L{i}", draw(st.integers(1, 40)), years,
                                     T0 + timedelta(days=draw(st.integers(0, 700)))))


@st.composite
def uses(draw, resource: str = CLOUD):
    return Use(f"U{draw(st.integers(0, 60))}", resource, draw(st.integers(1, 30)),
               T0 + timedelta(days=draw(st.integers(0, 900)), seconds=draw(st.integers(0, 3))),
               draw(st.sampled_from(["online", "online", "offline"])) if resource == AI else "online")


@st.composite
def histories(draw, resource: str = CLOUD):
    """(message, now) pairs with a non-decreasing clock."""
    msgs = draw(st.lists(st.one_of(credits(resource), uses(resource), uses(resource),
                                   st.tuples(st.just("expire"), lot_ids)), max_size=30))
    steps = draw(st.lists(st.integers(0, 60 * 86_400), min_size=len(msgs), max_size=len(msgs)))
    now, out = T0, []
    for m, dt in zip(msgs, steps, strict=False):
        now += timedelta(seconds=dt)
        out.append((m, now))
    return out


def run(history, resource=CLOUD, offline=False) -> Account:
    acc = Account(resource, GRACE, offline_licence=offline)
    for msg, now in history:
        acc.apply(msg, now)
    return acc


def check_conservation(acc: Account) -> None:
    b, c = acc.book, acc.book.counters
    lots = b.lots.values()
    drawn_in_ledger = sum(d.quantity for k, o in acc.ledger if k == "use" and isinstance(o, Deducted)
                          for d in o.allocations)
    offset_in_ledger = sum(o.quantity for k, (_, offs) in ((k, v) for k, v in acc.ledger if k == "credit")
                           for o in offs)
    offset_in_ledger += sum(d.quantity for k, o in acc.ledger if k == "use" and isinstance(o, Deducted)
                            for d in o.offsets)  # arrears offset at once by a lot credited after the use
    purchased = sum(l.quantity for l in lots)
    assert c.purchased == purchased
    assert c.purchased == b.remaining() + c.drawn_by_usage + c.arrears_offset + c.forfeited
    assert c.drawn_by_usage == drawn_in_ledger and c.arrears_offset == offset_in_ledger
    assert c.forfeited == sum(l.forfeited for l in lots)
    used = sum(u.quantity for (k, o), u in _uses_with_outcomes(acc)
               if isinstance(o, Deducted) and not o.offline_licence)
    assert used == c.drawn_by_usage + c.arrears_recorded
    assert b.outstanding() == c.arrears_recorded - c.arrears_offset >= 0


def _uses_with_outcomes(acc: RecordingAccount):
    by_id = {u.usage_id: u for u in acc.uses}
    return [((k, o), by_id[o.usage_id]) for k, o in acc.ledger if k == "use"]


class RecordingAccount(Account):
    """An Account that remembers the first occurrence of each use (to check `used`)."""

    uses: list[Use]

    def apply(self, msg, now):  # type: ignore[no-untyped-def]
        if isinstance(msg, Use) and msg.usage_id not in self.seen:
            self.__dict__.setdefault("uses", []).append(msg)
        super().apply(msg, now)


@PROPS
@given(histories(), st.sampled_from([CLOUD, AI]))
def test_property_conservation_per_org_and_resource(history, resource):
    history = [((m if not isinstance(m, Use) else Use(m.usage_id, resource, m.quantity, m.occurred_at,
                                                       m.channel)), now) for m, now in history]
    acc = RecordingAccount(resource, GRACE, offline_licence=True)
    acc.uses = []
    for msg, now in history:
        acc.apply(msg, now)
        check_conservation(acc)


@PROPS
@given(histories())
def test_property_remaining_never_negative(history):
    acc = Account(CLOUD, GRACE)
    for msg, now in history:
        acc.apply(msg, now)
        for l in acc.book.lots.values():
            assert 0 <= l.remaining <= l.quantity
            assert l.remaining == 0 or not l.expired


@PROPS
@given(histories(), uses())
def test_property_use_draws_expiring_first(history, u):
    acc = run(history)
    now = history[-1][1] if history else T0
    before = copy.deepcopy(acc.book.lots)
    out = domain.deduct(acc.book, u, now, GRACE)
    eligible = sorted((l for l in before.values() if l.drawable(u.occurred_at, now, GRACE)),
                      key=lambda l: (l.expires_at, l.credited_at, l.lot_id))
    drawn = [d.lot_id for d in out.allocations]
    assert drawn == [l.lot_id for l in eligible[: len(drawn)]]  # a prefix in expiring-first order
    for d, l in zip(out.allocations[:-1], eligible, strict=False):
        assert d.quantity == l.remaining  # every lot but the last is emptied before the next is touched
    assert sum(d.quantity for d in out.allocations) + out.arrears_quantity == u.quantity
    if out.arrears_quantity:
        assert sum(l.remaining for l in eligible) == sum(d.quantity for d in out.allocations)


@PROPS
@given(st.lists(st.tuples(st.integers(0, 500), st.integers(1, 20)), max_size=15), st.integers(1, 120))
def test_property_arrears_offset_oldest_first(arrears, qty):
    arrs = [Arrear(f"U{i}", T0 + timedelta(days=d), q) for i, (d, q) in enumerate(arrears)]
    book = Book(CLOUD, arrears=copy.deepcopy(arrs))
    offsets = domain.credit(book, domain.new_lot("new", qty, 3, T0 + timedelta(days=600)))
    oldest = sorted(arrs, key=lambda a: (a.occurred_at, a.usage_id))
    assert [o.usage_id for o in offsets] == [a.usage_id for a in oldest[: len(offsets)]]
    for o, a in zip(offsets[:-1], oldest, strict=False):
        assert o.quantity == a.outstanding
    assert sum(o.quantity for o in offsets) == min(qty, sum(a.outstanding for a in arrs))
    assert book.lots["new"].remaining == qty - sum(o.quantity for o in offsets)
    for o, a in zip(offsets, oldest, strict=False):
        assert o.retention_until == a.occurred_at.replace(year=a.occurred_at.year + 3)


@PROPS
@given(histories(), st.data())
def test_property_same_message_twice_equals_once(history, data):
    twice = []
    for m, now in history:
        twice.append((m, now))
        if data.draw(st.booleans()):
            twice.append((m, now))  # redelivered at once
    redelivered_later = twice + [(m, history[-1][1]) for m, _ in history if isinstance(m, Use)] if history else twice
    once, dup = run(history), run(redelivered_later)
    assert once.ledger == dup.ledger
    assert once.book.lots == dup.book.lots and once.book.counters == dup.book.counters
    assert once.book.arrears == dup.book.arrears


@PROPS
@given(
    st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), credits()), max_size=8),
    st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.sampled_from([CLOUD, AI]), uses()), max_size=25),
    st.integers(0, 800),
    st.sets(st.sampled_from(["a", "b", "c"])),
)
def test_property_batch_result_equals_one_by_one(lots_by_org, use_list, now_days, perpetual):
    now = T0 + timedelta(days=now_days)
    books: dict[tuple[str, str], Book] = {}
    for org, (_, l) in lots_by_org:
        for res in (CLOUD, AI):
            books.setdefault((org, res), Book(res))
        res = CLOUD if l.storage_years else AI
        domain.credit(books[(org, res)], copy.deepcopy(l))
    msgs = [(org, Use(u.usage_id + org, res, u.quantity, u.occurred_at, u.channel if res == AI else "online"))
            for org, res, u in use_list]
    for org, u in msgs:
        books.setdefault((org, u.resource), Book(u.resource))
    batch_books = copy.deepcopy(books)
    since = dict.fromkeys(perpetual, T0 - timedelta(days=3650))
    batch = domain.deduct_batch(batch_books, msgs, now, GRACE, since)
    single_books, single = copy.deepcopy(books), []
    for org, u in msgs:  # one transaction each: load (copy), apply, store
        key = (org, u.resource)
        loaded = {key: copy.deepcopy(single_books[key])}
        single += domain.deduct_batch(loaded, [(org, u)], now, GRACE, since)
        single_books[key] = loaded[key]
    assert batch == single
    for k in books:
        assert batch_books[k].lots == single_books[k].lots
        assert batch_books[k].arrears == single_books[k].arrears


def test_a_lot_keeps_its_order_key_and_follows_a_changed_expiry():
    a, b = lot("o.2", 5), lot("o.10", 5)  # same expiry and credit: line 2 before line 10
    assert sorted([b, a], key=Lot.order_key) == [a, b]
    assert a.order_key() is a.order_key()  # computed once
    b.expires_at = a.expires_at - timedelta(days=1)  # now b expires first
    assert sorted([a, b], key=Lot.order_key) == [b, a]
