"""The hot paths serialise their events from plain values (`contracts.events.encoded`, issue 13):
metering's deduction_requested and entitlement's usage ledger entries. Hypothesis: whatever the
values, the bytes are exactly those of the same event built as models and encoded, so consumers,
the ledger table and the JSON Schemas see no difference; a field list that is not the model's is
refused."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts import events as ev
from contracts.events import Encoded, encode, encoded, new_event, parse_event, trusted
from services.entitlement import domain as ent
from services.entitlement.handlers import Handlers
from services.metering import domain as met
from shared.clock import FixedClock
from shared.config import Settings
from shared.service import Runtime

T0 = datetime(2026, 1, 1, 12, 0, 0, 123456, tzinfo=timezone.utc)
# what JSON must escape or keeps as UTF-8: quotes, backslashes, separators, non-ASCII
TEXT = st.lists(st.sampled_from(['"', "\\", ",", ":", '"data"', "{", "}", "é", "💡", "a", " ", "/"]),
                min_size=1, max_size=12).map("".join)
ORG = st.from_regex(ev.ORG_ID_PATTERN, fullmatch=True)
TIMES = st.builds(  # microseconds none, some or all: JSON writes them only when there are some
    lambda minutes, offset, micro: (T0 - timedelta(minutes=minutes)).astimezone(
        timezone(timedelta(minutes=offset))).replace(microsecond=micro),
    st.integers(0, 10_000), st.sampled_from([0, 60, -300, 330, 345, -720]), st.sampled_from([0, 1000, 123456, 999999]),
)
ATTRIBUTES = st.none() | st.dictionaries(TEXT, TEXT, max_size=3)
DRAWS = st.lists(st.builds(ent.Draw, TEXT, st.integers(1, 10_000), st.none() | TIMES), max_size=3)


def _request(org: str, usage_id: str, resource: str, quantity: int, occurred: datetime, channel: str,
             inspection: str, site: str | None, attributes: dict[str, str] | None) -> ev.DeductionRequestedData:
    return ev.DeductionRequestedData.model_validate({
        "usage_id": usage_id, "org_id": org, "resource": resource, "quantity": quantity, "occurred_at": occurred,
        "received_at": T0, "channel": channel, "inspection_id": inspection, "site_id": site, "attributes": attributes,
    })


REQUESTS = st.builds(_request, ORG, TEXT, st.sampled_from(["cloud_inspection", "ai_review"]), st.integers(1, 10_000),
                     TIMES, st.sampled_from(["online", "offline"]), TEXT, st.none() | TEXT, ATTRIBUTES)


@pytest.fixture(scope="module")
def handlers() -> Handlers:
    return Handlers(Runtime("entitlement", Path("services/entitlement/migrations"), settings=Settings(),
                            clock=FixedClock(T0)))


def _as_models(e: Encoded, data: ev.EventData) -> bytes:
    """The same event, built the way every other event is."""
    return encode(new_event(e.subject, data, "/aimis/entitlement" if e.type.startswith("aimis.ledger")
                            else "/aimis/metering", id=e.id, time=e.time))


@settings(max_examples=200, deadline=None)
@given(u=REQUESTS, draws=DRAWS, arrears=st.integers(0, 10_000), offline=st.booleans())
def test_a_usage_deducted_entry_is_byte_for_byte_the_model_s(handlers: Handlers, u: ev.DeductionRequestedData,
                                                             draws: list[ent.Draw], arrears: int, offline: bool) -> None:
    e = handlers._usage_event(u, ent.Deducted(u.usage_id, tuple(draws), arrears, offline), T0)
    model = trusted(
        ev.UsageDeductedData, org_id=u.org_id, usage_id=u.usage_id, resource=u.resource, quantity=u.quantity,
        occurred_at=u.occurred_at, channel=u.channel, inspection_id=u.inspection_id, site_id=u.site_id,
        attributes=u.attributes,
        allocations=[trusted(ev.Allocation, lot_id=d.lot_id, quantity=d.quantity, retention_until=d.retention_until)
                     for d in draws],
        arrears_quantity=arrears, offline_licence=offline,
    )
    assert e.payload == _as_models(e, model)
    assert (e.type, e.subject, e.time) == (ev.UsageDeductedData.TYPE, u.org_id, T0)
    parsed = parse_event(e.payload)  # and it is a valid ledger event
    assert isinstance(parsed.data, ev.UsageDeductedData) and parsed.data.usage_id == u.usage_id


@settings(max_examples=100, deadline=None)
@given(u=REQUESTS, reason=st.sampled_from(["INSUFFICIENT_BALANCE", "NO_OFFLINE_LICENCE"]))
def test_a_usage_rejected_entry_is_byte_for_byte_the_model_s(handlers: Handlers, u: ev.DeductionRequestedData,
                                                             reason: str) -> None:
    e = handlers._usage_event(u, ent.Rejected(u.usage_id, reason), T0)  # type: ignore[arg-type]
    model = ev.UsageRejectedLedgerData(org_id=u.org_id, usage_id=u.usage_id, resource=u.resource,
                                       quantity=u.quantity, occurred_at=u.occurred_at, channel=u.channel,
                                       reason=reason)  # type: ignore[arg-type]
    assert e.payload == _as_models(e, model)


@settings(max_examples=200, deadline=None)
@given(u=REQUESTS)
def test_a_deduction_request_is_byte_for_byte_the_model_s(u: ev.DeductionRequestedData) -> None:
    usage = {"specversion": "1.0", "id": u.usage_id, "source": "/platform", "subject": u.org_id,
             "type": f"aimis.usage.{u.resource}", "time": u.occurred_at.isoformat(),
             "data": {"quantity": u.quantity, "inspection_id": u.inspection_id, "site_id": u.site_id,
                      "channel": u.channel, "attributes": u.attributes}}
    r = met.validate(json.dumps(usage).encode(), T0 + timedelta(days=30))
    assert isinstance(r, met.Usage), r
    e = r.deduction_event("/aimis/metering", T0)
    assert (e.id, e.subject, e.time) == (u.usage_id, u.org_id, T0)
    assert e.payload == _as_models(e, u)  # u was received at T0 too


def test_a_field_list_other_than_the_model_s_is_refused() -> None:
    values = {"org_id": "o", "usage_id": "u", "resource": "ai_review", "quantity": 1, "occurred_at": T0,
              "channel": "online", "reason": "INSUFFICIENT_BALANCE"}
    assert isinstance(encoded(ev.UsageRejectedLedgerData, "o", values, "/s"), Encoded)
    missing = {k: v for k, v in values.items() if k != "channel"}
    reordered = {"usage_id": "u", **{k: v for k, v in values.items() if k != "usage_id"}}
    for wrong in (missing, reordered, {**values, "extra": 1}):
        with pytest.raises(TypeError, match="UsageRejectedLedgerData has fields"):
            encoded(ev.UsageRejectedLedgerData, "o", wrong, "/s")
    with pytest.raises(TypeError, match="shared by several types"):
        encoded(ev.DeadLetterData, "o", {}, "/s")


@settings(max_examples=50, deadline=None)
@given(u=REQUESTS, at=TIMES)
def test_an_event_at_any_time_is_byte_for_byte_the_model_s(u: ev.DeductionRequestedData, at: datetime) -> None:
    e = encoded(ev.DeductionRequestedData, u.org_id, dict(u), "/aimis/metering", id=u.usage_id, time=at)
    assert e.payload == _as_models(e, u)
