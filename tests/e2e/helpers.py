"""Scenario helpers that use only public interfaces: HTTP, aimis.usage.v1, aimis.ledger.v1."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

from aiokafka import AIOKafkaProducer

from cli.client import Api
from contracts import topics
from contracts.events import (
    ArrearsOffsetData,
    EventData,
    LotExpiredData,
    UsageDeductedData,
    UsageRejectedLedgerData,
    usage_type,
)
from tests.support.kafka import wait_until


def now() -> datetime:
    return datetime.now(timezone.utc)


def iso(at: datetime) -> str:
    return at.isoformat()


def parse(ts: str) -> datetime:
    return datetime.fromisoformat(ts.replace("Z", "+00:00"))


async def eventually(fetch: Callable[[], Any], ok: Callable[[Any], bool], timeout: float = 45.0) -> Any:
    """Poll a public read until `ok(value)`; fail with the last value after `timeout`."""
    last: list[Any] = []

    def reached() -> bool:
        last[:] = [fetch()]
        return bool(ok(last[0]))

    try:
        await wait_until(reached, timeout, interval=0.2)
    except AssertionError:
        raise AssertionError(f"not reached within {timeout}s; last value: {json.dumps(last[0], default=str)[:2000]}") from None
    return last[0]


def usage(org: str, resource: str = "cloud_inspection", *, quantity: int = 1, channel: str = "online",
          at: datetime | None = None, event_id: str | None = None) -> dict[str, Any]:
    return {
        "specversion": "1.0", "id": event_id or f"u-{uuid.uuid4().hex}", "source": "/e2e/platform",
        "type": usage_type(resource), "subject": org, "time": iso(at or now()),
        "data": {"quantity": quantity, "inspection_id": f"ins-{uuid.uuid4().hex[:10]}", "channel": channel},
    }


async def send_to_kafka(bootstrap: str, records: list[tuple[str, bytes]]) -> None:
    """Play the imaging platform: raw records (key, value) on aimis.usage.v1."""
    p = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await p.start()
    try:
        for key, value in records:
            await p.send_and_wait(topics.USAGE, value, key=key.encode())
    finally:
        await p.stop()


async def onboard(admin: Api, org: str) -> None:
    """Record the agreement, then wait until metering knows the org: an offline AI review (no
    licence yet, so it changes no balance) must come back on the ledger as NO_OFFLINE_LICENCE."""
    from cli.client import CliError

    admin.record_agreement(org, f"AGR-{org}", iso(now() - timedelta(days=30)))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        probe = usage(org, "ai_review", channel="offline")
        try:
            admin.send_usage([probe])
            await eventually(
                lambda probe=probe: [
                    d for d in of_kind(ledger(admin, org), UsageRejectedLedgerData) if d["usage_id"] == probe["id"]
                ],
                bool, timeout=5,
            )
            return
        except (AssertionError, CliError):
            continue
    raise AssertionError(f"metering never learnt of {org}'s agreement")


async def buy(admin: Api, org: str, lines: list[dict[str, Any]], *, paid_at: datetime | None = None) -> dict[str, Any]:
    """Place and pay (or, with `paid_at`, import) an order; return it."""
    oid = f"o-{uuid.uuid4().hex[:12]}"
    if paid_at is not None:
        return admin.import_order(oid, org, lines, iso(paid_at), f"IMP-{oid}")
    o = admin.place_order(org, lines, oid)
    return admin.pay(o["order_id"], o["total"], f"PAY-{oid}")


def ledger(admin: Api, org: str) -> list[dict[str, Any]]:
    return admin.ledger_all(org)


def of_kind(entries: list[dict[str, Any]], model: type[EventData]) -> list[dict[str, Any]]:
    """The data of the ledger entries whose type is the model's."""
    return [e["data"] for e in entries if e["type"] == model.TYPE]


def assert_conservation(admin: Api, org: str) -> None:
    """SPEC 4, per resource, from the balances API checked against the ledger API."""
    bal = admin.balances(org)["resources"]
    entries = ledger(admin, org)
    for resource, b in bal.items():
        deducted = [d for d in of_kind(entries, UsageDeductedData) if d["resource"] == resource]
        offsets = [d for d in of_kind(entries, ArrearsOffsetData) if d["resource"] == resource]
        expired = [d for d in of_kind(entries, LotExpiredData) if d["resource"] == resource]
        drawn_by_usage = sum(a["quantity"] for d in deducted for a in d["allocations"])
        offset_total = sum(d["quantity"] for d in offsets)
        drawn_from_lots = drawn_by_usage + offset_total
        arrears_recorded = sum(d["arrears_quantity"] for d in deducted)
        forfeited = sum(d["forfeited"] for d in expired)
        assert b["purchased"] == sum(lot["quantity"] for lot in b["lots"]), resource
        assert b["purchased"] == b["available"] + drawn_from_lots + b["forfeited"], (resource, b)
        assert b["forfeited"] == forfeited, resource
        counted = [d for d in deducted if not d.get("offline_licence")]
        assert b["used"] == drawn_by_usage + arrears_recorded == sum(d["quantity"] for d in counted), (resource, b)
        assert b["arrears"] == arrears_recorded - offset_total, (resource, b)
        assert all(lot["remaining"] >= 0 for lot in b["lots"])
