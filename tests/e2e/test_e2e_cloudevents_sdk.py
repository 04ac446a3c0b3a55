"""Usage made by the official CloudEvents Python SDK (PyPI `cloudevents`), in every content mode,
on the real stack (issue 15): over Kafka with the SDK's Kafka binding (binary: attributes in `ce_`
headers, the data alone as the value; structured), over HTTP with its HTTP binding (binary: `ce-`
headers; structured) and a batch of SDK-written events. Each is sent twice and is deducted exactly
once; a malformed binary-mode record is rejected with its reason and its headers kept."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from cloudevents.core.bindings import http as ce_http
from cloudevents.core.bindings import kafka as ce_kafka
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent as SdkEvent

from contracts import topics
from contracts.events import LotCreditedData, UsageDeductedData
from tests.e2e.conftest import SECRET, Stack
from tests.e2e.helpers import buy, eventually, ledger, now, of_kind, onboard
from tests.support.kafka import TopicReader
from tests.support.services import bearer

pytestmark = pytest.mark.e2e

JSON = JSONFormat()
BATCH = "application/cloudevents-batch+json"


def sdk_event(org: str, uid: str, quantity: int = 1) -> SdkEvent:
    return SdkEvent(attributes={
        "type": "aimis.usage.cloud_inspection", "source": "/imaging-platform", "id": uid, "subject": org,
        "time": now(), "datacontenttype": "application/json",
    }, data={"inspection_id": f"ins-{uid}", "quantity": quantity})


def by_subject(e: SdkEvent) -> str:
    return str(e.get_subject())


async def produce(stack: Stack, messages: list[ce_kafka.KafkaMessage]) -> None:
    p = AIOKafkaProducer(bootstrap_servers=stack.bootstrap, acks="all", enable_idempotence=True)
    await p.start()
    try:
        for m in messages:
            key = m.key.encode() if isinstance(m.key, str) else m.key
            await p.send_and_wait(topics.USAGE, m.value, key=key, headers=list(m.headers.items()))
    finally:
        await p.stop()


async def post(stack: Stack, body: bytes, headers: dict[str, str]) -> httpx.Response:
    async with httpx.AsyncClient(base_url=stack.urls["metering"], timeout=10) as c:
        return await c.post("/v1/usage", content=body, headers={**headers, **bearer(SECRET, role="platform")})


async def test_sdk_usage_in_every_content_mode_is_deducted_exactly_once(stack: Stack):
    org = f"ce-{uuid.uuid4().hex[:10]}"
    await onboard(stack.admin, org)
    await buy(stack.admin, org, [{"sku": "CI-QTY", "quantity": 1000, "storage_years": 1}])
    await eventually(lambda: of_kind(ledger(stack.admin, org), LotCreditedData), bool)

    quantities = {"kafka-binary": 2, "kafka-structured": 3, "http-binary": 5, "http-structured": 7,
                  "http-batch-1": 11, "http-batch-2": 13}
    ids = {mode: f"{mode}-{uuid.uuid4().hex[:8]}" for mode in quantities}
    ev = {mode: sdk_event(org, ids[mode], q) for mode, q in quantities.items()}
    for _ in range(2):  # each use sent twice, in its own mode
        await produce(stack, [ce_kafka.to_binary(ev["kafka-binary"], JSON, key_mapper=by_subject),
                              ce_kafka.to_structured(ev["kafka-structured"], JSON, key_mapper=by_subject)])
        b = ce_http.to_binary(ev["http-binary"], JSON)
        assert {"ce-id", "ce-specversion"} <= b.headers.keys() and json.loads(b.body)["quantity"] == 5
        s = ce_http.to_structured(ev["http-structured"], JSON)
        batch = b"[" + b",".join(JSON.write(ev[m]) for m in ("http-batch-1", "http-batch-2")) + b"]"
        for body, headers in ((b.body, b.headers), (s.body, s.headers), (batch, {"content-type": BATCH})):
            r = await post(stack, body, headers)
            assert r.status_code == 202, r.text
        assert r.json() == {"accepted": [ids["http-batch-1"], ids["http-batch-2"]]}
    # a last use behind all of them (one org: one partition, in order): once it is on the ledger,
    # every repeat before it has been processed too
    last = f"last-{uuid.uuid4().hex[:8]}"
    await produce(stack, [ce_kafka.to_binary(sdk_event(org, last), JSON, key_mapper=by_subject)])
    deducted = await eventually(lambda: of_kind(ledger(stack.admin, org), UsageDeductedData),
                                lambda d: last in {x["usage_id"] for x in d})
    times = Counter(d["usage_id"] for d in deducted)
    assert {mode: times[uid] for mode, uid in ids.items()} == dict.fromkeys(ids, 1)
    got = {d["usage_id"]: sum(a["quantity"] for a in d["allocations"]) for d in deducted}
    assert {mode: got[uid] for mode, uid in ids.items()} == quantities
    ci = stack.admin.balances(org)["resources"]["cloud_inspection"]
    assert ci["used"] == sum(quantities.values()) + 1 and ci["available"] == 1000 - ci["used"]


def spoilt(msg: ce_kafka.KafkaMessage, **headers: bytes) -> ce_kafka.KafkaMessage:
    return ce_kafka.KafkaMessage(headers={**msg.headers, **headers}, key=msg.key, value=msg.value)


async def test_a_malformed_binary_record_is_rejected_with_its_headers_kept(stack: Stack):
    org = f"ce-bad-{uuid.uuid4().hex[:8]}"
    good = ce_kafka.to_binary(sdk_event(org, "u-1"), JSON, key_mapper=by_subject)
    no_id = ce_kafka.KafkaMessage(headers={k: v for k, v in good.headers.items() if k != "ce_id"},
                                  key=good.key, value=good.value)
    cases: dict[str, tuple[ce_kafka.KafkaMessage, str]] = {
        "missing ce_id": (no_id, "id: Field required"),
        "bad ce_time": (spoilt(good, ce_time=b"not-a-time"), "time:"),
        "non-UTF-8 header": (spoilt(good, ce_source=b"\xff\xfe"), "'ce_source' is not UTF-8"),
        "wrong content-type": (spoilt(good, **{"content-type": b"text/csv"}), "'text/csv' is not JSON"),
        "data not JSON": (ce_kafka.KafkaMessage(headers=good.headers, key=good.key, value=b"ins-1;1"),
                          "not UTF-8 JSON"),
    }
    async with TopicReader(stack.bootstrap, topics.USAGE_REJECTED) as rejected:
        # then a well-formed use behind them (of an org without agreement: UNKNOWN_ORG): the bad
        # records stopped nothing (a header that is not UTF-8 once failed every batch it was in)
        await produce(stack, [m for m, _ in cases.values()] + [good])
        found = await rejected.wait_for(lambda e: e["subject"] == org, count=len(cases) + 1)
    assert [e["data"]["reason"] for e in found][-1] == "UNKNOWN_ORG"
    by_detail: dict[str, dict[str, Any]] = {}
    for e in found[:-1]:
        says = next(s for _, s in cases.values() if s in e["data"]["detail"])
        by_detail[says] = e["data"]
    for name, (msg, says) in cases.items():
        data = by_detail[says]
        assert data["reason"] == "MALFORMED", name
        kept = {h["key"]: h for h in data["headers"]}
        assert set(kept) == set(msg.headers), name
        for k, v in msg.headers.items():
            try:
                assert (kept[k]["value"], kept[k]["base64"]) == (v.decode("utf-8"), False), name
            except UnicodeDecodeError:
                assert kept[k]["base64"] is True, name
