"""SPEC 7.5: with Kafka, then PostgreSQL stopped under running services, an endpoint that needs the
missing dependency answers 503 UNAVAILABLE with Retry-After within 5 s (never a hang, never a 500),
one that does not keeps working, and everything recovers once the dependency is back.

The broker and the database are private to this module (other tests keep theirs running)."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest

from tests.support.infra import LOCAL, local_infra
from tests.support.inproc import in_process_stack
from tests.support.services import SECRET, bearer

pytestmark = pytest.mark.integration

ADMIN, PLATFORM = bearer(SECRET), bearer(SECRET, role="platform")
CI_LINE = {"sku": "CI-QTY", "quantity": 1000, "storage_years": 1}


@pytest.fixture(scope="module")
async def world():
    if not (LOCAL / "kafka.sh").exists():
        pytest.skip("needs deploy/local")
    with local_infra() as infra:
        async with in_process_stack(infra) as stack, httpx.AsyncClient(timeout=30) as http:
            org = f"org-{uuid.uuid4().hex[:8]}"
            r = await http.put(f"{stack.urls['order']}/v1/admin/orgs/{org}/agreement", headers=ADMIN,
                               json={"agreement_ref": "AGR", "signed_at": "2026-01-01T00:00:00Z"})
            assert r.status_code == 200
            await _org_known_to_metering(http, stack, org, within_s=60)
            yield infra, stack, http, org


async def _org_known_to_metering(http: httpx.AsyncClient, stack: Any, org: str, within_s: float) -> None:
    """The agreement reaches metering through Kafka: until it has, usage is 400 UNKNOWN_ORG (correctly),
    which is not what this module tests. On a slow machine that can take longer than the first check."""
    deadline = time.monotonic() + within_s
    while True:
        r = await http.post(f"{stack.urls['metering']}/v1/usage", json=_usage(org), headers=PLATFORM)
        if r.status_code == 202:
            return
        assert r.status_code == 400 and [i["code"] for i in r.json()["error"]["items"]] == ["UNKNOWN_ORG"], r.text
        assert time.monotonic() < deadline, f"metering did not learn of {org} within {within_s} s"
        await asyncio.sleep(0.2)


def _usage(org: str) -> dict[str, Any]:
    return {"specversion": "1.0", "id": f"u-{uuid.uuid4().hex}", "source": "/platform",
            "type": "aimis.usage.cloud_inspection", "subject": org,
            "time": datetime.now(timezone.utc).isoformat(), "data": {"inspection_id": "i-1"}}


def _calls(stack: Any, org: str) -> dict[str, tuple[str, str, Any, dict[str, str]]]:
    u = stack.urls
    return {
        "usage": ("POST", f"{u['metering']}/v1/usage", _usage(org), PLATFORM),
        "balances": ("GET", f"{u['entitlement']}/v1/orgs/{org}/balances", None, ADMIN),
        "place order": ("POST", f"{u['order']}/v1/orders", {"org_id": org, "lines": [CI_LINE]}, ADMIN),
        "schedule": ("GET", f"{u['expiry']}/v1/orgs/{org}/schedule", None, ADMIN),
        "usage report": ("GET", f"{u['metering']}/v1/orgs/{org}/usage", None, ADMIN),
    }


async def _call(http: httpx.AsyncClient, spec: tuple[str, str, Any, dict[str, str]]) -> tuple[httpx.Response, float]:
    method, url, body, headers = spec
    started = time.monotonic()
    r = await http.request(method, url, json=body, headers=headers, timeout=30)
    return r, time.monotonic() - started


def _assert_unavailable(name: str, r: httpx.Response, took: float) -> None:
    assert took < 5.0, f"{name} took {took:.1f} s"
    assert r.status_code == 503, (name, r.status_code, r.text)
    assert r.json()["error"]["code"] == "UNAVAILABLE" and int(r.headers["retry-after"]) > 0, name


async def _recovered(http: httpx.AsyncClient, stack: Any, org: str, names: list[str], within_s: float) -> None:
    deadline = time.monotonic() + within_s
    pending = list(names)
    while pending:
        name = pending[0]
        r, _ = await _call(http, _calls(stack, org)[name])
        if r.status_code in (200, 201, 202):
            pending.pop(0)
            continue
        assert r.status_code == 503, (name, r.status_code, r.text)  # while recovering: 503, never 500
        assert time.monotonic() < deadline, f"{name} did not recover within {within_s} s: {r.text}"
        await asyncio.sleep(0.5)


async def test_kafka_down_then_postgres_down_answer_503_quickly_and_recover(world):
    infra, stack, http, org = world
    everything = list(_calls(stack, org))
    await _recovered(http, stack, org, everything, 30)  # all working first

    # -- Kafka down: the direct publish of POST /v1/usage cannot succeed; database reads and the
    #    outbox-backed order placement go on
    await asyncio.to_thread(infra.stop_kafka)
    try:
        for _ in range(2):
            r, took = await _call(http, _calls(stack, org)["usage"])
            _assert_unavailable("usage", r, took)
        for name in ("balances", "place order", "schedule", "usage report"):
            r, took = await _call(http, _calls(stack, org)[name])
            assert r.status_code in (200, 201) and took < 5.0, (name, r.status_code, r.text, took)
    finally:
        await asyncio.to_thread(infra.start_kafka)
    await _recovered(http, stack, org, everything, 60)

    # -- PostgreSQL down: every endpoint that reads or writes the database answers 503
    await asyncio.to_thread(infra.stop_postgres)
    try:
        for name in everything:
            r, took = await _call(http, _calls(stack, org)[name])
            _assert_unavailable(name, r, took)
        r = await http.get(f"{stack.urls['order']}/readyz")
        assert r.status_code == 503
    finally:
        await asyncio.to_thread(infra.start_postgres)
    await _recovered(http, stack, org, everything, 60)
    for url in stack.urls.values():
        deadline = time.monotonic() + 30
        while (await http.get(f"{url}/readyz")).status_code != 200:
            assert time.monotonic() < deadline, url
            await asyncio.sleep(0.5)

    # and what was placed while Kafka was down reached the broker through the outbox
    orders = (await http.get(f"{stack.urls['order']}/v1/orgs/{org}/orders", headers=ADMIN)).json()["orders"]
    assert len(orders) >= 2
    assert datetime.fromisoformat(orders[-1]["placed_at"]) > datetime.now(timezone.utc) - timedelta(minutes=10)
