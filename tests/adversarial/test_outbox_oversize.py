"""SPEC 7.2 with the hostile record of issue 11: 300 KB of NUL bytes on aimis.usage.v1. Its rejection
event carries the original as JSON text (each NUL escaped to six characters) and grows past Kafka's
1 MiB limit. The rejection row is parked, listed to admins, and the outbox behind it keeps moving:
another organisation's use is deducted within seconds."""

from __future__ import annotations

import httpx
import pytest

from contracts import topics
from tests.integration.test_metering import (  # noqa: F401 - fixtures
    deductions,
    known_org,
    metering,
    record_agreement,
    send,
    usage,
)
from tests.support.kafka import wait_until
from tests.support.services import SECRET, bearer

pytestmark = pytest.mark.integration


async def test_a_rejection_too_large_to_publish_is_parked_and_other_orgs_are_billed(
    metering, send, deductions, known_org, org_id  # noqa: F811
):
    other = f"{org_id}-b"
    await record_agreement(metering, send, other)
    hostile = b"\x00" * 300_000
    good = usage(other)
    await send([(known_org, hostile), (other, good)])

    await deductions.wait_for(lambda e: e["data"]["usage_id"] == good["id"], timeout=15)
    parked = await wait_until(lambda: metering.pool.fetchrow(
        "SELECT seq, topic, key, octet_length(payload) AS size, park_reason FROM outbox"
        " WHERE parked_at IS NOT NULL AND key = $1", known_org), timeout=15)
    assert parked["topic"] == topics.USAGE_REJECTED and parked["size"] > 1024 * 1024
    assert "TooLarge" in parked["park_reason"]

    after = usage(other)  # the relay is not stuck behind the parked row
    await send([(other, after)])
    await deductions.wait_for(lambda e: e["data"]["usage_id"] == after["id"], timeout=15)

    async with httpx.AsyncClient(base_url=metering.url) as http:
        listed = (await http.get("/v1/admin/outbox/parked", headers=bearer(SECRET))).json()
        assert parked["seq"] in [r["seq"] for r in listed["rows"]]
        assert (await http.get("/v1/admin/outbox/parked", headers=bearer(SECRET, org_id=known_org))).status_code == 403
        metrics = (await http.get("/metrics")).text
    assert 'aimis_outbox_parked_total{service="metering"}' in metrics
