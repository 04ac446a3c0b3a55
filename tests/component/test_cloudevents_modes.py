"""Usage in every CloudEvents content mode, made by the official CloudEvents Python SDK (PyPI
`cloudevents`), into metering's usage consumer (Kafka binding) and its HTTP ingestion (HTTP
binding, rejections: they answer before anything is published). The same rules hold in every
mode: idempotency per (org, id), SPEC 5.1 and 7 rejections with reasons, and a rejected record
keeps the headers it came with. Delivery on a real stack: tests/e2e/test_e2e_cloudevents_sdk.py."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta
from typing import Any

import httpx
import pytest
from aiokafka import ConsumerRecord
from cloudevents.core.bindings import http as ce_http
from cloudevents.core.bindings import kafka as ce_kafka
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent as SdkEvent

from contracts import topics
from contracts.events import AgreementRecordedData, new_event
from services.metering import api
from services.metering.handlers import orders
from tests.component.conftest import NOW, Feed
from tests.component.test_metering_consumers import KnownOrgs, feed, rt  # noqa: F401 - fixtures
from tests.support.services import bearer

JSON = JSONFormat()


def sdk_event(org: str, uid: str, **data: Any) -> SdkEvent:
    return SdkEvent(attributes={
        "type": "aimis.usage.cloud_inspection", "source": "/imaging-platform", "id": uid, "subject": org,
        "time": NOW - timedelta(minutes=1), "datacontenttype": "application/json",
    }, data={"inspection_id": f"ins-{uid}", **data})


def by_subject(e: SdkEvent) -> str:
    return str(e.get_subject())


def kafka_record(feed: Feed, msg: ce_kafka.KafkaMessage) -> ConsumerRecord:
    """The SDK's Kafka message as the consumer receives it (headers as a sequence of pairs)."""
    key = msg.key.decode() if isinstance(msg.key, bytes) else msg.key
    return replace(feed.record(msg.value, key), headers=tuple(msg.headers.items()))


def binary(feed: Feed, org: str, uid: str, **data: Any) -> ConsumerRecord:
    return kafka_record(feed, ce_kafka.to_binary(sdk_event(org, uid, **data), JSON, key_mapper=by_subject))


def with_headers(record: ConsumerRecord, drop: str = "", **set_: bytes) -> ConsumerRecord:
    headers = [(k, v) for k, v in record.headers if k != drop and k not in set_]
    return replace(record, headers=tuple(headers + list(set_.items())))


async def deductions(feed: Feed) -> list[tuple[str, str, int]]:
    return sorted((e["subject"], e["data"]["usage_id"], e["data"]["quantity"])
                  for e in await feed.outbox(topics.DEDUCTIONS))


async def test_sdk_binary_and_structured_kafka_records_are_each_forwarded_once(feed):
    b = binary(feed, "org-a", "u-bin", quantity=3)
    s = kafka_record(feed, ce_kafka.to_structured(sdk_event("org-a", "u-str", quantity=2), JSON,
                                                  key_mapper=by_subject))
    assert s.headers == (("content-type", b"application/cloudevents+json"),)
    other_org = binary(feed, "org-b", "u-bin")  # the same id from another org is another use
    again = binary(feed, "org-a", "u-bin", quantity=3)  # the same use again, in binary mode
    as_structured = kafka_record(feed, ce_kafka.to_structured(sdk_event("org-a", "u-bin", quantity=3), JSON,
                                                              key_mapper=by_subject))  # and in structured mode
    await feed(b, s, other_org)
    await feed(again, as_structured, b)
    assert await deductions(feed) == [("org-a", "u-bin", 3), ("org-a", "u-str", 2), ("org-b", "u-bin", 1)]
    assert await feed.outbox(topics.USAGE_REJECTED) == []


async def rejection(feed: Feed, record: ConsumerRecord) -> dict[str, Any]:
    [ev] = [e for e in await feed.outbox(topics.USAGE_REJECTED)
            if e["id"] == f"rejected:{record.topic}:{record.partition}:{record.offset}"]
    return ev["data"]


def kept(record: ConsumerRecord) -> list[dict[str, Any]]:
    out = []
    for k, v in record.headers:
        try:
            out.append({"key": k, "value": v.decode("utf-8"), "base64": False})
        except UnicodeDecodeError:
            out.append({"key": k, "value": base64.b64encode(v).decode(), "base64": True})
    return out


HOSTILE = [  # (name, how the SDK's binary record is spoilt, reason, words of the detail)
    ("missing ce_id", lambda r: with_headers(r, drop="ce_id"), "MALFORMED", "id: Field required"),
    ("bad ce_time", lambda r: with_headers(r, ce_time=b"yesterday"), "MALFORMED", "time:"),
    ("ce_time before 2000", lambda r: with_headers(r, ce_time=b"1999-12-31T23:00:00Z"), "MALFORMED", "greater than or equal to 2000-01-01"),
    ("ce_time far ahead", lambda r: with_headers(r, ce_time=(NOW + timedelta(hours=1)).isoformat().encode()),
     "TIME_IN_FUTURE", "ahead"),
    ("non-UTF-8 ce_subject", lambda r: with_headers(r, ce_subject=b"org-\xff"), "MALFORMED", "not UTF-8"),
    ("control character in ce_id", lambda r: with_headers(r, ce_id=b"u-\x00-1"), "MALFORMED", "id:"),
    ("wrong content-type", lambda r: with_headers(r, **{"content-type": b"text/plain"}), "MALFORMED",
     "'text/plain' is not JSON"),
    ("data not JSON", lambda r: replace(r, value=b"inspection ins-1, quantity 2"), "MALFORMED", "not UTF-8 JSON"),
    ("ce_type unknown", lambda r: with_headers(r, ce_type=b"aimis.usage.teleportation"), "UNKNOWN_TYPE", "unknown"),
    ("quantity out of range", lambda r: replace(r, value=b'{"inspection_id": "i", "quantity": 0}'),
     "INVALID_QUANTITY", "quantity"),
    ("duplicate ce_id header", lambda r: replace(r, headers=(*r.headers, ("ce_id", b"u-other"))), "MALFORMED",
     "appears twice"),
]


@pytest.mark.parametrize("spoil, reason, says", [h[1:] for h in HOSTILE], ids=[h[0] for h in HOSTILE])
async def test_a_hostile_binary_record_is_rejected_with_its_reason_and_its_headers_kept(feed, spoil, reason, says):
    bad = spoil(binary(feed, "org-a", "u-1"))
    good = binary(feed, "org-a", "u-2")
    await feed(bad, good)
    await feed(bad)  # redelivered: still one rejection
    data = await rejection(feed, bad)
    assert (data["reason"], says in data["detail"]) == (reason, True), data["detail"]
    assert data["headers"] == kept(bad)
    assert data["original"] == (json.loads(bad.value) if bad.value.startswith(b"{") else bad.value.decode())
    assert len(await feed.outbox(topics.USAGE_REJECTED)) == 1
    assert await deductions(feed) == [("org-a", "u-2", 1)]  # the record behind it is forwarded


async def test_binary_usage_of_an_org_without_agreement_is_rejected_unknown_org_with_headers(feed):
    bad = binary(feed, "org-z", "u-1")
    await feed(bad)
    data = await rejection(feed, bad)
    assert data["reason"] == "UNKNOWN_ORG" and data["headers"] == kept(bad)


async def test_a_binary_record_on_another_consumer_is_dead_lettered_with_its_headers(rt):  # noqa: F811
    """The decode is the consumer base's: every subscription reads binary mode (here: orders)."""
    f = Feed(rt, orders(rt))
    ok = new_event("org-n", AgreementRecordedData(org_id="org-n", agreement_ref="A-1", signed_at=NOW,
                                                  recorded_at=NOW), "/order")
    sdk = SdkEvent(attributes={"type": ok.type, "source": ok.source, "id": ok.id, "subject": ok.subject,
                               "time": ok.time, "datacontenttype": "application/json"},
                   data=json.loads(ok.data.model_dump_json()))
    good = kafka_record(f, ce_kafka.to_binary(sdk, JSON, key_mapper=by_subject))
    bad = with_headers(kafka_record(f, ce_kafka.to_binary(sdk, JSON, key_mapper=by_subject)),
                       ce_source=b"\xc3\x28")
    await f(good, bad)
    assert await rt.pool.fetchval("SELECT count(*) FROM known_orgs WHERE org_id = 'org-n'") == 1
    [letter] = await f.outbox(topics.METERING_DLQ)
    assert letter["data"]["reason"] == "MALFORMED" and "'ce_source' is not UTF-8" in letter["data"]["detail"]
    assert letter["data"]["headers"] == kept(bad)


# ---------------------------------------------------------------- HTTP binding: refusals


@pytest.fixture
async def http(rt) -> AsyncIterator[httpx.AsyncClient]:  # noqa: F811
    app = rt.http_app(api.router, title="metering (component test)")
    app.state.orders_catch_up = KnownOrgs()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://component",
                                 headers=bearer(rt.settings.auth_secret, role="platform")) as c:
        yield c


def spoilt(msg: ce_http.HTTPMessage, **headers: str) -> dict[str, str]:
    return {**msg.headers, **headers}


HTTP_HOSTILE = [
    ("missing ce-id", lambda m: ({k: v for k, v in m.headers.items() if k != "ce-id"}, m.body), "MALFORMED", "id"),
    ("bad ce-time", lambda m: (spoilt(m, **{"ce-time": "yesterday"}), m.body), "MALFORMED", "time"),
    ("not UTF-8 once percent-decoded", lambda m: (spoilt(m, **{"ce-subject": "org-%FF"}), m.body), None,
     "not UTF-8"),
    ("wrong content-type", lambda m: (spoilt(m, **{"content-type": "application/xml"}), m.body), "MALFORMED",
     "is not JSON"),
    ("ce-time far ahead", lambda m: (spoilt(m, **{"ce-time": (NOW + timedelta(hours=1)).isoformat()}), m.body),
     "TIME_IN_FUTURE", "ahead"),
    ("unknown org", lambda m: (spoilt(m, **{"ce-subject": "org-z"}), m.body), "UNKNOWN_ORG", "org-z"),
    ("not an attribute name", lambda m: (spoilt(m, **{"ce-trace-id": "t-1"}), m.body), "MALFORMED",
     "'trace-id' is not a CloudEvents attribute name"),
]


@pytest.mark.parametrize("spoil, code, says", [h[1:] for h in HTTP_HOSTILE], ids=[h[0] for h in HTTP_HOSTILE])
async def test_a_hostile_binary_http_request_is_refused_400_with_the_reason(http, spoil, code, says):
    headers, body = spoil(ce_http.to_binary(sdk_event("org-a", "u-1"), JSON))
    r = await http.post("/v1/usage", content=body, headers=headers)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["code"] == "VALIDATION_ERROR"
    if code is None:  # the header itself cannot be read: no item
        assert says in err["message"], err
    else:
        [item] = err["items"]
        assert (item["code"], says in item["message"]) == (code, True), item


async def test_binary_http_data_that_is_not_json_is_refused_400(http):
    msg = ce_http.to_binary(sdk_event("org-a", "u-1"), JSON)
    r = await http.post("/v1/usage", content=b"inspection 1", headers=msg.headers)
    assert (r.status_code, r.json()["error"]["code"]) == (400, "VALIDATION_ERROR")


async def test_structured_and_batch_media_types_take_one_event_and_a_list(http):
    one = ce_http.to_structured(sdk_event("org-a", "u-1"), JSON)
    r = await http.post("/v1/usage", content=b"[" + one.body + b"]", headers=one.headers)
    assert r.status_code == 400 and "must be one event" in r.json()["error"]["message"]
    r = await http.post("/v1/usage", content=one.body,
                        headers={"content-type": "application/cloudevents-batch+json"})
    assert r.status_code == 400 and "must be a JSON array" in r.json()["error"]["message"]
    bad = json.loads(one.body) | {"id": ""}
    r = await http.post("/v1/usage", content=json.dumps([json.loads(one.body), bad]),
                        headers={"content-type": "application/cloudevents-batch+json"})
    assert r.status_code == 400 and [i["index"] for i in r.json()["error"]["items"]] == [1]


async def test_an_empty_cloudevents_batch_accepts_nothing_and_an_empty_json_list_is_refused(http):
    r = await http.post("/v1/usage", content=b"[]", headers={"content-type": "application/cloudevents-batch+json"})
    assert (r.status_code, r.json()) == (202, {"accepted": []})
    r = await http.post("/v1/usage", content=b"[]", headers={"content-type": "application/json"})
    assert (r.status_code, r.json()["error"]["code"]) == (400, "VALIDATION_ERROR")


async def test_binary_http_needs_a_token_like_every_mode(http):
    msg = ce_http.to_binary(sdk_event("org-a", "u-1"), JSON)
    r = await http.post("/v1/usage", content=msg.body, headers={**msg.headers, "authorization": ""})
    assert r.status_code == 401
