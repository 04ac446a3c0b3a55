"""`aimis dlq list|replay` (SPEC 7.2) on the real broker: a use metering could not store is rejected
UNPROCESSABLE; once the cause is fixed, replaying it bills it, and only once however often it is
replayed."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from typing import Any

import pytest
from typer.testing import CliRunner

from cli.dlq import DlqError, Letter, letter_of
from cli.main import app
from contracts import topics
from tests.integration.test_metering import (  # noqa: F401 - fixtures
    deductions,
    known_org,
    metering,
    rejected,
    send,
    usage,
)
from tests.support.kafka import TopicReader

pytestmark = pytest.mark.integration


async def _cli(*args: str) -> Any:
    r = await asyncio.to_thread(CliRunner().invoke, app, ["dlq", *args])
    return r


async def test_a_rejected_use_replayed_after_its_cause_is_fixed_is_billed_once(
    metering, send, deductions, rejected, known_org  # noqa: F811
):
    trigger = f"refuse_{uuid.uuid4().hex[:8]}"
    async with metering.pool.acquire() as conn:  # the cause: the hourly aggregate refuses this org
        await conn.execute(f"""
            CREATE FUNCTION {trigger}() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
              IF NEW.org_id = '{known_org}' THEN RAISE EXCEPTION 'refused for the test' USING ERRCODE = '22023'; END IF;
              RETURN NEW;
            END $$;
            CREATE TRIGGER {trigger} BEFORE INSERT ON usage_hourly FOR EACH ROW EXECUTE FUNCTION {trigger}();""")
    use = usage(known_org, quantity=3)
    await send([(known_org, use)])
    [letter] = await rejected.wait_for(lambda e: e["subject"] == known_org, timeout=60)
    assert letter["data"]["reason"] == "UNPROCESSABLE" and letter["data"]["original"]["id"] == use["id"]

    listed = await _cli("list", "--service", "metering", "--json")
    assert listed.exit_code == 0, listed.output
    mine = [Letter(**json.loads(line)) for line in listed.output.splitlines()
            if json.loads(line)["id"] == letter["id"]]
    assert len(mine) == 1 and mine[0].topic == topics.USAGE_REJECTED and mine[0].source_topic == topics.USAGE
    table = await _cli("list", "--topic", topics.USAGE_REJECTED)
    assert table.exit_code == 0 and "dead letter(s)" in table.output  # a human's table (wraps at 80 columns)

    async with metering.pool.acquire() as conn:  # the cause is fixed
        await conn.execute(f"DROP TRIGGER {trigger} ON usage_hourly; DROP FUNCTION {trigger}()")

    replayed = await _cli("replay", "--topic", topics.USAGE_REJECTED, "--offset", str(mine[0].offset),
                          "--partition", str(mine[0].partition))
    assert replayed.exit_code == 0, replayed.output
    [d] = await deductions.wait_for(lambda e: e["data"]["usage_id"] == use["id"], timeout=60)
    assert d["subject"] == known_org and d["data"]["quantity"] == 3

    again = await _cli("replay", "--id", letter["id"])  # twice: still one use
    assert again.exit_code == 0, again.output
    marker = usage(known_org)  # sent after the second replay, on the same partition (same key)
    await send([(known_org, marker)])
    await deductions.wait_for(lambda e: e["data"]["usage_id"] == marker["id"], timeout=60)
    assert len(deductions.events(lambda e: e["data"]["usage_id"] == use["id"])) == 1
    assert await metering.pool.fetchval(
        "SELECT sum(accepted_qty) FROM usage_hourly WHERE org_id = $1", known_org) == 3 + 1


async def test_replay_names_exactly_one_letter():
    missing = await _cli("replay", "--service", "order", "--id", "no-such-letter")
    assert missing.exit_code == 1 and "no such dead letter" in missing.output
    unnamed = await _cli("replay", "--service", "order")
    assert unnamed.exit_code == 1 and "--offset" in unnamed.output
    bad_topic = await _cli("list", "--topic", topics.USAGE)
    assert bad_topic.exit_code == 1 and "not a dead-letter topic" in bad_topic.output


def test_a_dead_letter_replays_its_original_to_its_source_topic_keyed_by_org():
    original = {"specversion": "1.0", "id": "e-1", "subject": "org-a", "data": {"x": "é"}}
    value = json.dumps({"id": "dl-1", "subject": "unknown", "type": "aimis.expiry.dead_letter", "data": {
        "reason": "MALFORMED", "detail": "d", "topic": topics.LEDGER, "partition": 2, "offset": 7,
        "received_at": "2026-11-20T12:00:00Z", "original": original}}).encode()
    x = letter_of("aimis.expiry.dlq.v1", 0, 5, value)
    assert x is not None and x.source == f"{topics.LEDGER}[2]@7"
    topic, key, raw = x.replay_record()
    assert (topic, key, json.loads(raw)) == (topics.LEDGER, b"org-a", original)
    text = letter_of(topics.USAGE_REJECTED, 1, 3, json.dumps({"id": "r", "subject": "org-b", "data": {
        "reason": "MALFORMED", "detail": "", "original": "{not json"}}).encode())
    assert text is not None and text.replay_record() == (topics.USAGE, b"org-b", b"{not json")
    assert letter_of(topics.USAGE_REJECTED, 0, 0, b"\xff garbage") is None


def test_a_rejected_binary_mode_record_replays_with_its_headers():
    """A binary-mode event is its headers plus its data: the replay sends both, as consumed."""
    headers = [{"key": "ce_id", "value": "u-1", "base64": False}, {"key": "ce_x", "value": "/w==", "base64": True}]
    x = letter_of(topics.USAGE_REJECTED, 0, 4, json.dumps({"id": "r-4", "subject": "org-a", "data": {
        "reason": "UNKNOWN_ORG", "detail": "", "original": {"inspection_id": "i-1"}, "headers": headers}}).encode())
    assert x is not None and x.replay_record() == (topics.USAGE, b"org-a", b'{"inspection_id": "i-1"}')
    assert x.replay_headers() == [("ce_id", b"u-1"), ("ce_x", b"\xff"), ("aimis-replay-of", b"r-4")]


async def test_a_record_that_is_not_utf8_is_replayed_byte_for_byte(
    metering, send, rejected, known_org, real_infra  # noqa: F811
):
    hostile = b'{"id": "\xff\xfe", "subject": "' + known_org.encode() + b'", "\x00": [1, 2]}\n'
    await send([(known_org, hostile)])
    [letter] = await rejected.wait_for(lambda e: e["subject"] == known_org, timeout=30)
    data = letter["data"]
    assert data["reason"] == "MALFORMED" and "\ufffd" in data["original"]  # the text is lossy ...
    assert base64.b64decode(data["original_base64"]) == hostile  # ... the bytes are kept

    async with TopicReader(real_infra.bootstrap, topics.USAGE) as usage_topic:
        replayed = await _cli("replay", "--id", letter["id"])
        assert replayed.exit_code == 0, replayed.output
        deadline = time.monotonic() + 30
        while not (mine := [r for r in usage_topic.records if (b"aimis-replay-of", letter["id"].encode()) in
                            [(k.encode(), v) for k, v in r.headers]]):
            assert time.monotonic() < deadline, "the replay did not arrive"
            await usage_topic.poll()
    assert [(r.key, r.value) for r in mine] == [(known_org.encode(), hostile)]


def test_a_truncated_original_is_not_replayed():
    x = letter_of(topics.USAGE_REJECTED, 0, 9, json.dumps({"id": "r", "subject": "org-b", "data": {
        "reason": "MALFORMED", "detail": "", "original": "\u0000" * 10, "original_truncated": True,
        "original_sha256": "0" * 64}}).encode())
    assert x is not None and x.original_truncated
    with pytest.raises(DlqError, match="4 KiB"):
        x.replay_record()
