"""CloudEvents binary content mode (Kafka binding 3.2): the decode every consumer runs when a record
has a `ce_specversion` header (shared.consumer.binary_mode / binary_event / kept_headers), and the
format rule both bindings share (contracts.events.from_binary)."""

from __future__ import annotations

import base64
import json

import pytest
from aiokafka import ConsumerRecord

from contracts.events import EventError, from_binary, is_json_media_type
from contracts.limits import MAX_USAGE_RECORD_BYTES
from shared.consumer import binary_event, binary_mode, kept_headers

HEADERS = [
    ("ce_specversion", b"1.0"), ("ce_id", b"u-1"), ("ce_source", b"/platform"),
    ("ce_type", b"aimis.usage.cloud_inspection"), ("ce_subject", b"org-a"),
    ("ce_time", b"2026-11-20T11:59:00Z"), ("content-type", b"application/json"),
]
DATA = b'{"inspection_id": "ins-1", "quantity": 2}'


def test_binary_mode_is_a_ce_specversion_header_without_a_structured_content_type():
    assert binary_mode(HEADERS)
    assert not binary_mode([("content-type", b"application/cloudevents+json")])
    assert not binary_mode([("ce_specversion", b"1.0"), ("content-type", b"application/cloudevents+json")])
    assert not binary_mode([("traceparent", b"00-ab")])


def test_a_binary_record_becomes_the_structured_event_it_stands_for():
    doc = json.loads(binary_event(HEADERS, DATA))
    assert doc == {"specversion": "1.0", "id": "u-1", "source": "/platform", "type": "aimis.usage.cloud_inspection",
                   "subject": "org-a", "time": "2026-11-20T11:59:00Z", "datacontenttype": "application/json",
                   "data": {"inspection_id": "ins-1", "quantity": 2}}


def test_extension_attributes_pass_and_other_headers_are_not_attributes():
    doc = json.loads(binary_event([*HEADERS, ("ce_partitionkey", b"org-a"), ("traceparent", b"00-x")], DATA))
    assert doc["partitionkey"] == "org-a" and "traceparent" not in doc


def test_without_a_content_type_the_data_is_json():
    doc = json.loads(binary_event([h for h in HEADERS if h[0] != "content-type"], DATA))
    assert "datacontenttype" not in doc and doc["data"]["quantity"] == 2


@pytest.mark.parametrize("headers, value, says", [
    ([*HEADERS[:1], ("ce_id", b"\xff\xfe"), *HEADERS[2:]], DATA, "'ce_id' is not UTF-8"),
    ([*HEADERS, ("ce_id", b"u-2")], DATA, "'ce_id' appears twice"),
    ([*HEADERS, ("content-type", b"application/json")], DATA, "'content-type' appears twice"),
    ([*HEADERS[:-1], ("content-type", b"text/plain")], DATA, "'text/plain' is not JSON"),
    ([*HEADERS[:-1], ("content-type", b"application/octet-stream")], DATA, "is not JSON"),
    (HEADERS, b"inspection ins-1", "the data is not UTF-8 JSON"),
    (HEADERS, b"\xff{}", "the data is not UTF-8 JSON"),
    (HEADERS, b"", "the data is not UTF-8 JSON"),
    ([*HEADERS, ("ce_data", b"{}")], DATA, "'data' cannot be a ce_ header"),
    ([*HEADERS, ("ce_", b"x")], DATA, "'' is not a CloudEvents attribute name"),
    ([*HEADERS, ("ce_Trace-Id", b"x")], DATA, "'Trace-Id' is not a CloudEvents attribute name"),
    ([*HEADERS, ("ce_datacontenttype", b"application/json")], DATA, "'datacontenttype' cannot be a ce_ header"),
    (HEADERS, b'"' + b"x" * MAX_USAGE_RECORD_BYTES + b'"', f"at most {MAX_USAGE_RECORD_BYTES}"),
    ([*HEADERS, ("ce_bulk", b"x" * MAX_USAGE_RECORD_BYTES)], DATA, f"at most {MAX_USAGE_RECORD_BYTES}"),
])
def test_a_malformed_binary_record_raises_malformed_with_the_reason(headers, value, says):
    with pytest.raises(EventError) as e:
        binary_event(headers, value)
    assert e.value.reason == "MALFORMED" and says in e.value.detail, e.value.detail


def test_json_media_types():
    assert all(map(is_json_media_type, ["application/json", "application/json; charset=utf-8", "text/json",
                                        "application/vnd.aimis.usage+json", "Application/JSON"]))
    assert not any(map(is_json_media_type, ["text/plain", "application/xml", "application/jsonx", ""]))


def test_from_binary_keeps_the_attributes_and_sets_content_type_and_data():
    assert from_binary({"id": "x"}, "application/json", b"[1]") == {
        "id": "x", "datacontenttype": "application/json", "data": [1]}


def test_kept_headers_are_text_or_base64_and_none_without_headers():
    record = ConsumerRecord("t", 0, 0, 0, 0, None, b"v", None, 0, 1, (("ce_id", b"u-1"), ("ce_bad", b"\xff")))
    kept = [h.model_dump() for h in kept_headers(record) or []]
    assert kept == [{"key": "ce_id", "value": "u-1", "base64": False},
                    {"key": "ce_bad", "value": base64.b64encode(b"\xff").decode(), "base64": True}]
    assert kept_headers(ConsumerRecord("t", 0, 0, 0, 0, None, b"v", None, 0, 1, ())) is None


async def test_the_batch_parser_survives_header_values_faststream_cannot_decode():
    """FastStream's batch parser decodes header values as UTF-8; shared.kafka.any_headers hands it
    readable copies when that fails, and keeps the records as consumed for the handler."""
    from faststream.kafka.message import KafkaMessage
    from faststream.kafka.parser import AioKafkaBatchParser

    from shared.kafka import any_headers

    parse = AioKafkaBatchParser(KafkaMessage, None).parse_batch
    ok = ConsumerRecord("t", 0, 0, 0, 0, None, b"{}", None, 0, 2, (("content-type", b"application/json"),))
    bad = ConsumerRecord("t", 0, 1, 0, 0, None, b"{}", None, 0, 2, (("ce_id", b"\xff"), ("ce_x", None)))
    with pytest.raises((UnicodeDecodeError, AttributeError)):
        await parse((ok, bad))
    parsed = await any_headers((ok, bad), parse)
    assert parsed.raw_message == (ok, bad)
    assert parsed.batch_headers[1] == {"ce_id": "\ufffd", "ce_x": ""}
    assert (await any_headers((ok,), parse)).raw_message == (ok,)


async def test_the_batch_parser_hands_the_records_over_without_reading_them():
    """shared.kafka.raw_batch: the handler takes the records as consumed, so the parser builds
    FastStream's message around them without FastStream's walk over every record (whose header
    decoding fails on a value that is not UTF-8)."""
    from faststream.kafka.message import KafkaMessage
    from faststream.kafka.parser import AioKafkaBatchParser

    from shared.kafka import raw_batch

    class Walks(AioKafkaBatchParser):
        async def parse_batch(self, message):  # type: ignore[no-untyped-def]
            raise AssertionError("FastStream's parser walked the records")

    parser = Walks(KafkaMessage, None)
    consumer = object()
    parser._consumer = consumer  # what FastStream sets when the subscriber starts  # noqa: SLF001
    ok = ConsumerRecord("t", 0, 7, 5, 0, None, b"{}", None, 0, 2, (("content-type", b"application/json"),))
    bad = ConsumerRecord("t", 0, 8, 6, 0, None, b"{}", None, 0, 2, (("ce_id", b"\xff"), ("ce_x", None)))
    parsed = await raw_batch((ok, bad), parser.parse_batch)
    assert isinstance(parsed, KafkaMessage)
    assert parsed.raw_message == (ok, bad) and parsed.consumer is consumer
    assert parsed.message_id == "7-8-5"
    # anything but a FastStream parser's bound method: FastStream's parse, surviving any header
    plain = AioKafkaBatchParser(KafkaMessage, None).parse_batch

    async def unbound(records):  # type: ignore[no-untyped-def]
        return await plain(records)

    assert (await raw_batch((ok, bad), unbound)).raw_message == (ok, bad)

    class Unknown:  # a parser of another FastStream version: no consumer where this one keeps it
        msg_class = KafkaMessage

        async def parse_batch(self, records):  # type: ignore[no-untyped-def]
            return await plain(records)

    assert (await raw_batch((ok, bad), Unknown().parse_batch)).raw_message == (ok, bad)
