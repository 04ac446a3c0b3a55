"""Entitlement serialises each ledger event once (issue 13): the ledger row's `data` is cut from
the outbox payload. Hypothesis: whatever the strings hold, the cut is exactly the data's JSON, and
the new event ids are version 4 UUIDs."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from contracts import events as ev
from contracts.events import encode, new_event, new_id, trusted
from services.entitlement.store import data_of

T0 = datetime(2026, 1, 1, 12, 0, 0, 123456, tzinfo=timezone.utc)
# any text JSON must escape: quotes, backslashes, the member separator itself, non-ASCII
TEXT = st.lists(st.sampled_from(['"', "\\", ",", ":", '"data"', "{", "}", "é", "💡", "a", " "]), max_size=12).map("".join)


def _deducted(usage_id: str, inspection: str, attributes: dict[str, str]) -> ev.UsageDeductedData:
    return trusted(
        ev.UsageDeductedData, org_id="org-1", usage_id=usage_id, resource="ai_review", quantity=3,
        occurred_at=T0, channel="online", inspection_id=inspection, site_id=None, attributes=attributes or None,
        allocations=[trusted(ev.Allocation, lot_id="o.1", quantity=3, retention_until=T0)],
        arrears_quantity=0, offline_licence=False,
    )


@settings(max_examples=300, deadline=None)
@given(usage_id=TEXT, inspection=TEXT, source=TEXT.filter(bool), attributes=st.dictionaries(TEXT, TEXT, max_size=3))
def test_data_cut_from_the_payload_is_the_data_json(usage_id: str, inspection: str, source: str,
                                                    attributes: dict[str, str]) -> None:
    data = _deducted(usage_id, inspection, attributes)
    event = new_event("org-1", data, source.replace("\\", "/"), time=T0)
    payload = encode(event)
    cut = data_of(event, payload)
    assert cut == data.model_dump_json().encode()
    assert json.loads(cut) == json.loads(payload)["data"]


def test_an_event_with_extension_attributes_is_serialised_again() -> None:
    data = trusted(ev.UsageRejectedLedgerData, org_id="org-1", usage_id="u", resource="cloud_inspection",
                   quantity=1, occurred_at=T0, channel="online", reason="INSUFFICIENT_BALANCE")
    event = ev.CloudEvent[ev.UsageRejectedLedgerData](
        specversion="1.0", id="e1", source="/s", type=data.TYPE, subject="org-1", time=T0, data=data,
        traceparent="00-abc",  # an extension attribute: serialised after `data`
    )
    payload = encode(event)
    assert payload.endswith(b'"traceparent":"00-abc"}')
    assert data_of(event, payload) == data.model_dump_json().encode()


def test_new_ids_are_random_version_4_uuids() -> None:
    ids = [new_id() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    for i in ids:
        u = uuid.UUID(i)
        assert (u.version, u.variant, str(u)) == (4, uuid.RFC_4122, i)
