from __future__ import annotations

import json
from datetime import datetime, timezone
from decimal import Decimal

import pytest

from contracts import export
from contracts.events import (
    EVENT_TYPES,
    USAGE_AI_REVIEW,
    EventError,
    OrderLineData,
    UsageData,
    encode,
    new_event,
    parse_event,
)


def test_committed_schemas_and_documents_match_the_models():
    """JSON Schemas, the AsyncAPI document and every service's OpenAPI document (contracts/openapi)."""
    assert export.drift() == [], "run `python -m contracts.export`"


def test_every_event_type_is_its_topic_stem_plus_kind():
    for t, (topic, _) in EVENT_TYPES.items():
        stem = topic.rsplit(".v", 1)[0]
        if topic == "aimis.usage.rejected.v1":
            assert t == "aimis.usage.rejected"
        elif topic == "aimis.metering.deductions.v1":
            assert t.startswith("aimis.metering.")
        elif topic == "aimis.expiry.commands.v1":
            assert t.startswith("aimis.expiry.")
        elif topic.endswith(".dlq.v1"):  # aimis.<service>.dlq.v1 carries aimis.<service>.dead_letter
            assert t == topic.removesuffix(".dlq.v1") + ".dead_letter", (t, topic)
        else:
            assert t.startswith(stem + "."), (t, topic)


def _usage(**data):
    return {
        "specversion": "1.0", "id": "u-1", "source": "/platform", "type": "aimis.usage.cloud_inspection",
        "subject": "hosp-1", "time": "2026-11-01T10:00:00Z", "data": {"inspection_id": "i-1", **data},
    }


def test_usage_event_round_trips_with_defaults():
    ev = parse_event(json.dumps(_usage()).encode())
    assert isinstance(ev.data, UsageData)
    assert (ev.data.quantity, ev.data.channel) == (1, "online")
    again = parse_event(encode(ev))
    assert again.data == ev.data and again.subject == "hosp-1"


@pytest.mark.parametrize(
    "raw, reason",
    [
        (b"not json", "MALFORMED"),
        (json.dumps({**_usage(), "specversion": "0.3"}).encode(), "MALFORMED"),
        (json.dumps({**_usage(), "subject": "bad org!"}).encode(), "MALFORMED"),
        (json.dumps({**_usage(), "time": "2026-11-01T10:00:00"}).encode(), "MALFORMED"),
        (json.dumps({**_usage(), "type": "aimis.usage.teleport"}).encode(), "UNKNOWN_TYPE"),
        (json.dumps(_usage(quantity=0)).encode(), "SCHEMA_VIOLATION"),
    ],
)
def test_parse_event_classifies_bad_input(raw, reason):
    with pytest.raises(EventError) as e:
        parse_event(raw)
    assert e.value.reason == reason


def test_money_serializes_as_two_place_string():
    line = OrderLineData(line=0, sku="SW-BASIC", months=12, price=Decimal("1200"))
    assert json.loads(line.model_dump_json())["price"] == "1200.00"


def test_new_event_rejects_a_type_that_is_not_the_models():
    with pytest.raises(KeyError):
        new_event("o", UsageData(inspection_id="x"), "/t", type="aimis.nope", time=datetime.now(timezone.utc))
    with pytest.raises(KeyError):
        new_event("o", UsageData(inspection_id="x"), "/t", type="aimis.ledger.order_fulfilled")


def test_a_shared_data_model_needs_its_type_named():
    with pytest.raises(ValueError):
        new_event("o", UsageData(inspection_id="x"), "/t")
    ev = new_event("o", UsageData(inspection_id="x"), "/t", type=USAGE_AI_REVIEW)
    assert ev.type == USAGE_AI_REVIEW


def test_every_event_type_is_derived_from_its_model():
    for t, (topic, model) in EVENT_TYPES.items():
        assert model.event_types()[t] == topic
        assert model.TYPE in ("", t)
