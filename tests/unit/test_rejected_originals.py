"""What a rejection or dead letter keeps of the record it refused (shared/consumer.py, SPEC 7.1,
7.2), and what the consumer base refuses whatever the topic: pure functions, no I/O."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest
from aiokafka import ConsumerRecord

from contracts.events import DeadLetterData, encode, new_event
from shared.consumer import ORIGINAL_CUT, hostile_text, original_fields


def record(value: bytes | None) -> ConsumerRecord:
    return ConsumerRecord("t", 0, 7, 0, 0, b"k", value, None, 0, len(value or b""), [])


def letter_bytes(fields: dict) -> bytes:
    data = DeadLetterData(reason="MALFORMED", detail="d", topic="t", partition=0, offset=7,
                          received_at="2026-11-20T12:00:00Z", **fields)
    return encode(new_event("org-a", data, "/test", type="aimis.expiry.dead_letter"))


@pytest.mark.parametrize("value", [
    b'{"id": "\\ud800"}',  # JSON with a lone surrogate: kept as its (exact) text
    b'{"q": NaN}',  # json reads NaN, pydantic would write null: kept as text
    b"[" * 40 + b"]" * 40,  # deeper than 32
    b"\xff\xfe not UTF-8",
    b"",
    b"plain text",
])
def test_every_original_serialises_and_keeps_its_exact_bytes(value: bytes):
    fields = original_fields(record(value), "MALFORMED")
    letter_bytes(fields)  # never raises: bad input always reaches its rejection path
    if "original_base64" in fields:
        assert base64.b64decode(fields["original_base64"]) == value
    else:
        assert fields["original"] == value.decode() or json.loads(value) == fields["original"]


def test_a_large_refused_record_is_cut_to_4_kib_with_the_hash_of_the_whole():
    value = b"\x00" * 300_000
    fields = original_fields(record(value), "MALFORMED")
    assert fields == {"original": "\x00" * ORIGINAL_CUT, "original_truncated": True,
                      "original_sha256": hashlib.sha256(value).hexdigest()}
    assert len(letter_bytes(fields)) < 30_000


def test_an_unprocessable_record_is_kept_whole_so_it_can_be_replayed():
    value = json.dumps({"id": "x", "pad": "p" * 10_000}).encode()
    assert original_fields(record(value), "UNPROCESSABLE") == {"original": json.loads(value)}


@pytest.mark.parametrize(("value", "hostile"), [
    (rb'{"a": "x\u0000"}', True),
    (rb'{"a": "x\u001F"}', True),
    (rb'{"a": "x\u007f"}', True),
    (rb'{"a": "x\\u0000"}', False),  # an escaped backslash, then the text "u0000"
    (rb'{"a": "x\\\u0001"}', True),  # an escaped backslash, then a control character
    (rb'{"a": "x\u0020"}', False),
    (rb'{"a": "x\t"}', True),
    (rb'{"a": "x\\n"}', False),
    (b"[" * 32 + b"]" * 32, False),
    (b"[" * 33 + b"]" * 33, True),
    (b'{"a": "' + b"[" * 100 + b'"}', False),  # brackets inside a string are not nesting
])
def test_hostile_text_on_any_topic(value: bytes, hostile: bool):
    assert (hostile_text(value) is not None) is hostile
