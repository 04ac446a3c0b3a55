"""SPEC 7.1/7.2 with the hostile record of issue 11: 300 KB of NUL bytes on aimis.usage.v1. Its
rejection once carried the whole original as JSON text (each NUL escaped to six characters), grew
past Kafka's 1 MiB limit and blocked the outbox relay. Now the original is cut to 4 KiB with
`original_truncated` and the SHA-256 of the whole record: the rejection is published like any
other, nothing is parked, and another organisation's use behind it is deducted within seconds.
(Rows the broker still refuses are parked: tests/integration/test_outbox_parking.py.)"""

from __future__ import annotations

import hashlib

import pytest

from tests.integration.test_metering import (  # noqa: F401 - fixtures
    deductions,
    known_org,
    metering,
    record_agreement,
    rejected,
    send,
    usage,
)

pytestmark = pytest.mark.integration


async def test_a_rejection_of_300_kb_of_nuls_is_cut_to_4_kib_and_other_orgs_are_billed(
    metering, send, deductions, rejected, known_org, org_id  # noqa: F811
):
    other = f"{org_id}-b"
    await record_agreement(metering, send, other)
    hostile = b"\x00" * 300_000
    good = usage(other)
    await send([(known_org, hostile), (other, good)])

    await deductions.wait_for(lambda e: e["data"]["usage_id"] == good["id"], timeout=15)
    [letter] = await rejected.wait_for(lambda e: e["subject"] == known_org, timeout=15)
    d = letter["data"]
    assert d["reason"] == "MALFORMED" and d["original_truncated"] is True
    assert d["original"] == "\x00" * 4096 and d["original_sha256"] == hashlib.sha256(hostile).hexdigest()
    assert await metering.pool.fetchval("SELECT count(*) FROM outbox WHERE parked_at IS NOT NULL") == 0
