"""SPEC 7.1 and 7.2 on every Kafka topic a service consumes: each kind of hostile record becomes
visible where SPEC 7 says (a rejection on aimis.usage.rejected.v1 or a dead letter on the
consuming service's aimis.<service>.dlq.v1, with its reason and the record's position), is never
lost silently, and blocks nothing: afterwards every consumer of the topic has committed past it
and a use of a *different* organisation is deducted within seconds.

One stack for the module. Per topic, all its hostile records go out together, on the partition
the other organisation's records use (the attacker's org id is chosen to share it, and keyless
records name the partition), followed by the other organisation's use; then each kind is checked
on its own: which consumer made which letter of it, with which reason.
"""

from __future__ import annotations

import asyncio
import copy
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import asyncpg
import httpx
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.structs import TopicPartition

from contracts import topics
from contracts.events import topic_of
from shared.consumer import DeadLetters
from tests.support.inproc import SERVICES, in_process_stack, record_agreements
from tests.support.kafka import TopicReader, producer
from tests.support.services import SECRET, bearer

pytestmark = pytest.mark.integration

NOW = datetime.now(timezone.utc)
ADMIN, PLATFORM = bearer(SECRET), bearer(SECRET, role="platform")
LETTER_TOPICS = (topics.USAGE_REJECTED, topics.ORDER_DLQ, topics.METERING_DLQ, topics.ENTITLEMENT_DLQ,
                 topics.EXPIRY_DLQ)
# What each consumed topic carries in these tests: a valid event of the attacker org, from which
# every hostile record is made.
TIME_FIELDS = {"time", "occurred_at", "received_at", "placed_at", "paid_at", "expires_at", "credited_at"}


def _t(delta: timedelta = timedelta()) -> str:
    return (NOW + delta).isoformat()


def template(topic: str, org: str, id: str) -> dict[str, Any]:
    envelope = {"specversion": "1.0", "id": id, "source": "/hostile", "subject": org, "time": _t()}
    if topic == topics.USAGE:
        return {**envelope, "type": "aimis.usage.cloud_inspection", "data": {
            "quantity": 1, "inspection_id": f"insp-{id[-8:]}", "site_id": "site-1", "channel": "online",
            "attributes": {"camera": "c1"}}}
    if topic == topics.DEDUCTIONS:
        return {**envelope, "type": "aimis.metering.deduction_requested", "data": {
            "usage_id": id, "org_id": org, "resource": "cloud_inspection", "quantity": 1, "occurred_at": _t(),
            "received_at": _t(), "channel": "online", "inspection_id": f"insp-{id[-8:]}", "site_id": "site-1",
            "attributes": {"camera": "c1"}}}
    if topic == topics.ORDERS:
        line = {"line": 0, "sku": "CI-QTY", "quantity": 10, "storage_years": 1, "price": "10.00"}
        return {**envelope, "type": "aimis.orders.order_paid", "data": {
            "order_id": f"o-{id}", "org_id": org, "lines": [line], "total": "10.00", "price_book_version": "2026-1",
            "placed_at": _t(-timedelta(hours=1)), "paid_at": _t(), "payment_ref": "PAY-1", "imported": False}}
    if topic == topics.EXPIRY_COMMANDS:
        return {**envelope, "type": "aimis.expiry.expire_lot", "data": {
            "org_id": org, "lot_id": f"lot-{id}", "expires_at": _t(-timedelta(days=1))}}
    if topic == topics.LEDGER:
        return {**envelope, "type": "aimis.ledger.lot_credited", "data": {
            "org_id": org, "lot_id": f"lot-{id}", "order_id": f"o-{id}", "line": 0, "sku": "CI-QTY",
            "resource": "cloud_inspection", "quantity": 10, "storage_years": 1, "credited_at": _t(),
            "expires_at": _t(timedelta(days=365))}}
    raise KeyError(topic)


# ---------------------------------------------------------------- the hostile records


@dataclass
class Rec:
    value: bytes | None
    key: bytes | None
    headers: list[tuple[str, bytes]] = field(default_factory=list)


@dataclass
class Ctx:
    topic: str
    attacker: str
    victim: str
    probe_id: str  # the id of the other org's use sent after the batch
    last_id: str = ""  # the id of the last event made (to find its effect)

    def event(self) -> dict[str, Any]:
        self.last_id = f"h-{uuid.uuid4().hex}"
        return template(self.topic, self.attacker, self.last_id)

    def rec(self, ev: Any, key: bytes | None = b"", headers: list[tuple[str, bytes]] | None = None) -> Rec:
        value = ev if isinstance(ev, bytes) else json.dumps(ev).encode()
        return Rec(value, self.attacker.encode() if key == b"" else key, headers or [])


Make = Callable[[Ctx], Rec]


def with_(path: str, value: Any) -> Make:
    """The template with `path` (dot-separated; `data.lines.0.sku`) set to `value`."""
    def make(c: Ctx) -> Rec:
        return c.rec(_set(c.event(), path, value))
    return make


def without(path: str) -> Make:
    def make(c: Ctx) -> Rec:
        ev = c.event()
        *parents, last = path.split(".")
        node = ev
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node[p]
        del node[last]
        return c.rec(ev)
    return make


def _set(ev: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    ev = copy.deepcopy(ev)
    *parents, last = path.split(".")
    node: Any = ev
    for p in parents:
        node = node[int(p)] if isinstance(node, list) else node[p]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return ev


def text(make_text: Callable[[Ctx, str], str]) -> Make:
    """The template's JSON text, transformed (for what json.dumps cannot write)."""
    def make(c: Ctx) -> Rec:
        return c.rec(make_text(c, json.dumps(c.event())).encode("utf-8", "surrogatepass"))
    return make


def raw(value: bytes | None) -> Make:
    return lambda c: c.rec(value)


def string_fields(ev: Any, prefix: str = "") -> list[str]:
    """Dot paths of every string in the event that names or references something (not the type,
    specversion, times, enums or prices)."""
    skip = {"type", "specversion", "resource", "channel", "price", "total", "datacontenttype"} | TIME_FIELDS
    out: list[str] = []
    items = ev.items() if isinstance(ev, dict) else enumerate(ev)
    for k, v in items:
        path = f"{prefix}{k}"
        if isinstance(v, (dict, list)):
            out += string_fields(v, path + ".")
        elif isinstance(v, str) and str(k) not in skip:
            out.append(path)
    return out


def _first(c: Ctx, kinds: tuple[type, ...]) -> str:
    """The first data field of one of `kinds`; else (no integer in an expiry command) the first string."""
    ev = template(c.topic, c.attacker, "x")  # not c.event(): that would move c.last_id
    for want in (kinds, (str,)):
        for p in _paths(ev["data"], "data."):
            if isinstance(_get(ev, p), want) and not isinstance(_get(ev, p), bool):
                return p
    raise LookupError("no field to put it in")


def _paths(ev: Any, prefix: str) -> list[str]:
    out: list[str] = []
    for k, v in (ev.items() if isinstance(ev, dict) else enumerate(ev)):
        out += _paths(v, f"{prefix}{k}.") if isinstance(v, (dict, list)) else [f"{prefix}{k}"]
    return out


def _get(ev: Any, path: str) -> Any:
    for p in path.split("."):
        ev = ev[int(p)] if isinstance(ev, list) else ev[p]
    return ev


def at_int(value: Any) -> Make:
    """`value` in the first integer field of the data (quantity, line)."""
    return lambda c: c.rec(_set(c.event(), _first(c, (int,)), value))


def at_int_text(literal: str) -> Make:
    """A JSON literal json.dumps cannot write (NaN, 1e400, 5,000 digits) in the first integer field."""
    def make(c: Ctx) -> Rec:
        marker = "__HOSTILE__"
        doc = json.dumps(_set(c.event(), _first(c, (int,)), marker))
        return c.rec(doc.replace(f'"{marker}"', literal).encode())
    return make


def at_time(value: str, path: str | None = None) -> Make:
    """`value` in the envelope `time` (path None) or the data's first time field."""
    def make(c: Ctx) -> Rec:
        data = template(c.topic, c.attacker, "x")["data"]
        p = path or next((q for q in _paths(data, "data.") if q.rsplit(".", 1)[-1] in TIME_FIELDS), "time")
        return c.rec(_set(c.event(), p, value))
    return make


def keyed(key: bytes | None, headers: list[tuple[str, bytes]] | None = None) -> Make:
    return lambda c: c.rec(c.event(), key=key, headers=headers)


def key_of_victim(c: Ctx) -> Rec:
    return c.rec(c.event(), key=c.victim.encode())


def same_id_as_the_other_orgs_use(c: Ctx) -> Rec:
    """Duplicate ids across orgs (SPEC 7.3): the attacker's event carries the id of the other org's use."""
    ev = c.event()
    ev["id"] = c.last_id = c.probe_id
    if "usage_id" in ev["data"]:
        ev["data"]["usage_id"] = c.probe_id
    return c.rec(ev)


def nested(depth: int) -> Make:
    return lambda c: c.rec(_set(c.event(), "data.extra", json.loads("[" * depth + "]" * depth)))


def too_big_a_usage(c: Ctx) -> Rec:
    """Valid JSON, over 64 KiB (a CloudEvents extension attribute of 70,000 characters)."""
    return c.rec({**c.event(), "padding": "p" * 70_000})


def _nul_everywhere(c: Ctx) -> Rec:
    ev = c.event()
    for p in string_fields(ev):
        ev = _set(ev, p, _get(ev, p) + "\u0000")
    return c.rec(ev)


COMMON: dict[str, Make] = {
    "not UTF-8 (0xff 0xfe in a string)": lambda c: c.rec(
        json.dumps(c.event()).encode().replace(b'"source": "', b'"source": "\xff\xfe')),
    "NUL in every string field": _nul_everywhere,
    "lone surrogate escape in the id": text(lambda c, t: t.replace('"id": "', '"id": "\\ud800', 1)),
    "lone surrogate as raw UTF-8 bytes": text(lambda c, t: t.replace('"source": "', '"source": "\ud800')),
    "UTF-8 BOM before the JSON": lambda c: c.rec(b"\xef\xbb\xbf" + json.dumps(c.event()).encode()),
    "300 KB of NULs": raw(b"\x00" * 300_000),
    "900 KB of control bytes (its rejection, escaped, is past 1 MiB)": raw(b"\x01\x02" * 450_000),
    "900 KB of valid JSON": lambda c: c.rec({**c.event(), "padding": "p" * 900_000}),
    "nesting 100,000 deep": raw(b"[" * 100_000 + b"]" * 100_000),
    "nesting 33 deep inside the data": nested(33),
    "integer of 5,000 digits": at_int_text("9" * 5000),
    "negative integer": at_int(-5),
    "integer past int64": at_int(2**63),
    "NaN": at_int_text("NaN"),
    "Infinity": at_int_text("Infinity"),
    "1e400": at_int_text("1e400"),
    "float in an integer field": at_int(1.5),
    "year 1 at +01:00 (not in UTC)": at_time("0001-01-01T00:30:00+01:00"),
    "year 9999 at -01:00 (not in UTC)": at_time("9999-12-31T23:59:59-01:00"),
    "far future (year 9999)": at_time("9999-12-31T23:59:59Z"),
    "far past (year 1)": at_time("0001-01-01T00:00:00Z"),
    "envelope time in 1970": at_time("1970-01-01T00:00:00Z", "time"),
    "envelope time in year 9999": at_time("9999-12-31T23:59:59Z", "time"),
    "time without a zone": at_time("2026-01-01T00:00:00"),
    "time not a date": at_time("yesterday"),
    "data is a list": with_("data", ["quantity", 3]),
    "data is null": with_("data", None),
    "an integer field as a string": at_int("7"),
    "subject is a number": with_("subject", 42),
    "missing type": without("type"),
    "missing subject": without("subject"),
    "missing data field": lambda c: without(_first(c, (str,)))(c),
    "extra data field": with_("data.unexpected", "x"),
    "unknown type": with_("type", "aimis.hostile.unknown"),
    "specversion 0.3": with_("specversion", "0.3"),
    "id of 129 characters": with_("id", "i" * 129),
    "subject not an org id": with_("subject", "../../etc/passwd"),
    "JSON null": raw(b"null"),
    "JSON array": raw(b"[1, 2, 3]"),
    "JSON string": raw(b'"hello"'),
    "truncated JSON": lambda c: c.rec(json.dumps(c.event()).encode()[:-7]),
    "raw control character in a string": text(lambda c, t: t.replace('"source": "', '"source": "\x01')),
    "duplicate keys (subject twice)": text(lambda c, t: t.replace('"subject": ', f'"subject": "{c.victim}", "subject": ')),
    "empty value": raw(b""),
    "null value (tombstone)": raw(None),
    "no key": keyed(None),
    "key that is not an org id (bytes 0xff 0x00)": keyed(b"\xff\x00"),
    "key that disagrees with the subject": key_of_victim,
    "headers with hostile bytes": keyed(b"", [("content-type", b"\xff\x00\xfe"), ("\x00evil", b"\x00" * 10_000)]),
    "CloudEvents extension with NUL and surrogate": with_("evilext", "a\u0000\ud800b"),
}


def kinds_for(topic: str) -> dict[str, Make]:
    """COMMON plus a NUL in each string field of the topic's event, one kind per field."""
    sample = template(topic, "org", "id")
    per_field = {f"NUL in {p}": with_nul(p) for p in string_fields(sample)}
    extra: dict[str, Make] = {}
    if topic in (topics.USAGE, topics.DEDUCTIONS):
        extra["same id as the other organisation's use"] = same_id_as_the_other_orgs_use
        extra["33 attributes"] = with_("data.attributes", {f"k{i}": "v" for i in range(33)})
        extra["attribute value of 257 characters"] = with_("data.attributes", {"k": "v" * 257})
    if topic == topics.USAGE:
        extra["usage record over 64 KiB"] = too_big_a_usage
    return {**COMMON, **per_field, **extra}


def with_nul(path: str) -> Make:
    def make(c: Ctx) -> Rec:
        ev = c.event()
        return c.rec(_set(ev, path, _get(ev, path) + "\u0000x"))
    return make


# ---------------------------------------------------------------- the stack and what it made of them


@dataclass
class Consumer:
    service: str
    group: str
    letters: str  # where its rejections go


@dataclass
class Outcome:
    offsets: dict[str, int]  # kind -> offset on the attacked partition
    ids: dict[str, str]  # kind -> the id of the event it was made from
    letters: dict[int, list[tuple[str, dict[str, Any]]]]  # offset -> [(letter topic, letter event)]
    error: str | None  # the batch-level proof that failed, if any
    seconds: float


@dataclass
class World:
    stack: Any
    http: httpx.AsyncClient
    attacker: str
    victim: str
    partition: int
    consumers: dict[str, list[Consumer]]  # consumed topic -> its consumers
    readers: dict[str, TopicReader]
    effects: dict[str, TopicReader]  # consumed topic -> where a valid record of it shows its effect
    db: Any
    producer: Any
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def used(self) -> int:
        r = await self.http.get(f"{self.stack.urls['entitlement']}/v1/orgs/{self.victim}/balances", headers=ADMIN)
        assert r.status_code == 200, r.text
        return r.json()["resources"]["cloud_inspection"]["used"]

    async def victim_is_billed(self, usage_id: str, within: float = 10.0) -> None:
        before = await self.used()
        ev = template(topics.USAGE, self.victim, usage_id)
        r = await self.http.post(f"{self.stack.urls['metering']}/v1/usage", json=ev, headers=PLATFORM)
        assert r.status_code == 202, r.text
        deadline = time.monotonic() + within
        while await self.used() != before + 1:
            if time.monotonic() > deadline:
                raise AssertionError(f"the other organisation's use was not deducted within {within} s")
            await asyncio.sleep(0.1)

    async def committed_past(self, topic: str, offset: int, within: float = 20.0) -> None:
        tp = TopicPartition(topic, self.partition)
        admin = AIOKafkaAdminClient(bootstrap_servers=self.stack.settings.kafka_bootstrap)
        await admin.start()
        try:
            for c in self.consumers[topic]:
                deadline = time.monotonic() + within
                while True:
                    got = (await admin.list_consumer_group_offsets(c.group)).get(tp)
                    if got is not None and got.offset > offset:
                        break
                    if time.monotonic() > deadline:
                        raise AssertionError(f"{c.service} did not commit past offset {offset} of {tp} within "
                                             f"{within} s (at {got.offset if got else None})")
                    await asyncio.sleep(0.1)
        finally:
            await admin.close()

    async def attack(self, topic: str) -> Outcome:
        """Send the topic's hostile records (once), then the other org's use; collect the letters."""
        async with self.lock:
            if topic in self.outcomes:
                return self.outcomes[topic]
            started = time.monotonic()
            ctx = Ctx(topic, self.attacker, self.victim, f"u-{uuid.uuid4().hex}")
            futures, ids = {}, {}
            for name, make in kinds_for(topic).items():
                r = make(ctx)
                ids[name] = ctx.last_id
                futures[name] = await self.producer.send(topic, r.value, key=r.key, headers=r.headers,
                                                         partition=self.partition)
            offsets = {name: (await f).offset for name, f in futures.items()}
            error = None
            try:
                await self.victim_is_billed(ctx.probe_id)
                await self.committed_past(topic, max(offsets.values()))
            except AssertionError as e:
                error = str(e)
            await self._await_letters(topic, offsets)
            self.outcomes[topic] = Outcome(offsets, ids, self._letters(topic, set(offsets.values())), error,
                                           time.monotonic() - started)
            return self.outcomes[topic]

    async def _await_letters(self, topic: str, offsets: dict[str, int], within: float = 20.0) -> None:
        """Read the letter topics until every expected letter of this batch is in (the consumers
        committed past the batch, so the letters are in their outboxes), then until nothing new
        comes for half a second (so that a letter no one expected would be seen too)."""
        deadline = time.monotonic() + within
        want = {(lt, offsets[k]) for k in offsets for lt in expected(topic, k)}
        while time.monotonic() < deadline:
            got = {(lt, o) for o, letters in self._letters(topic, set(offsets.values())).items() for lt, _ in letters}
            if want <= got:
                break
            for r in self.readers.values():
                await r.poll(100)
        for r in self.readers.values():
            await r.settle(0.5)

    async def effect_of(self, topic: str, id: str, within: float = 15.0) -> Any:
        """What a valid record of `topic` with event id `id` did, awaited: the deduction it asked
        for, the ledger event of its use, its order's fulfilment, its lot in the expiry schedule;
        for an expiry command (of a lot that does not exist) None: it changes nothing."""
        if topic == topics.EXPIRY_COMMANDS:
            return None
        if topic == topics.LEDGER:
            deadline = time.monotonic() + within
            while True:
                row = await self.db.fetchrow("SELECT * FROM expiry.deadlines WHERE kind = 'lot' AND ref_id = $1",
                                             f"lot-{id}")
                if row is not None or time.monotonic() > deadline:
                    return row
                await asyncio.sleep(0.1)
        reader = self.effects[topic]
        match = {
            topics.USAGE: lambda e: e["subject"] == self.attacker and e["id"] == id,
            topics.DEDUCTIONS: lambda e: e["subject"] == self.attacker and e["data"].get("usage_id") == id,
            topics.ORDERS: lambda e: e["type"] == "aimis.ledger.order_fulfilled" and e["data"]["order_id"] == f"o-{id}",
        }[topic]
        try:
            return (await reader.wait_for(match, timeout=within))[0]
        except AssertionError:
            return None

    def _letters(self, topic: str, offsets: set[int]) -> dict[int, list[tuple[str, dict[str, Any]]]]:
        out: dict[int, list[tuple[str, dict[str, Any]]]] = {}
        for lt, reader in self.readers.items():
            for ev in reader.events():
                pos = source_position(lt, ev)
                if pos is not None and pos[0] == topic and pos[1] == self.partition and pos[2] in offsets:
                    out.setdefault(pos[2], []).append((lt, ev))
        return out


def source_position(letter_topic: str, ev: dict[str, Any]) -> tuple[str, int, int] | None:
    """(topic, partition, offset) of the record a letter is about."""
    if letter_topic == topics.USAGE_REJECTED:  # id rejected:<topic>:<partition>:<offset>
        parts = str(ev.get("id", "")).split(":")
        if len(parts) == 4 and parts[0] == "rejected":
            return parts[1], int(parts[2]), int(parts[3])
        return None
    d = ev.get("data", {})
    return d.get("topic"), d.get("partition"), d.get("offset")


def _partition(key: str, n: int) -> int:
    return DefaultPartitioner()(key.encode(), list(range(n)), list(range(n)))


def consumers_of(stack: Any) -> dict[str, list[Consumer]]:
    """Every consumed topic and its consumers, from what the services declare."""
    out: dict[str, list[Consumer]] = {}
    for name in SERVICES:
        rt = stack.apps[name].state.runtime
        for sub in rt.subscriptions:
            letters = topic_of(sub.rejects.type) if isinstance(sub.rejects, DeadLetters) else topics.USAGE_REJECTED
            out.setdefault(sub.topic, []).append(Consumer(name, rt.group_id, letters))
    return out


@pytest.fixture(scope="module")
async def world(real_infra):
    async with in_process_stack(real_infra) as stack, httpx.AsyncClient(timeout=30) as http:
        n = stack.settings.topic_partitions
        victim = f"victim-{uuid.uuid4().hex[:8]}"
        attacker = next(a for a in (f"mallory-{uuid.uuid4().hex[:8]}" for _ in range(10_000))
                        if _partition(a, n) == _partition(victim, n))
        await record_agreements(http, stack, attacker, victim)
        r = await http.post(f"{stack.urls['order']}/v1/admin/orders/import", headers=ADMIN, json={
            "order_id": f"imp-{victim}", "org_id": victim, "lines": [{"sku": "CI-QTY", "quantity": 1000, "storage_years": 1}],
            "paid_at": (NOW - timedelta(days=1)).isoformat(), "payment_ref": "wire"})
        assert r.status_code == 201, r.text
        readers = {t: await TopicReader(real_infra.bootstrap, t).start() for t in LETTER_TOPICS}
        deductions = await TopicReader(real_infra.bootstrap, topics.DEDUCTIONS).start()
        ledger = await TopicReader(real_infra.bootstrap, topics.LEDGER).start()
        effects = {topics.USAGE: deductions, topics.DEDUCTIONS: ledger, topics.ORDERS: ledger}
        p = await producer(real_infra.bootstrap)
        db = await asyncpg.connect(stack.dsn)
        w = World(stack, http, attacker, victim, _partition(victim, n), consumers_of(stack), readers, effects, db, p)
        try:
            deadline = time.monotonic() + 60
            while True:  # the lot is credited (orders -> entitlement), and the probe itself works
                r = await http.get(f"{stack.urls['entitlement']}/v1/orgs/{victim}/balances", headers=ADMIN)
                if r.json()["resources"]["cloud_inspection"]["purchased"] == 1000:
                    break
                assert time.monotonic() < deadline, "the victim's lot was not credited"
                await asyncio.sleep(0.2)
            await w.victim_is_billed(f"u-{uuid.uuid4().hex}", within=60)
            yield w
        finally:
            await p.stop()
            await db.close()
            for reader in [*readers.values(), deductions, ledger]:
                await reader.stop()


CONSUMED = (topics.USAGE, topics.ORDERS, topics.DEDUCTIONS, topics.EXPIRY_COMMANDS, topics.LEDGER)
# Where each consumed topic's consumers put what they refuse (checked against what the services
# declare, so a new consumer cannot go unattacked).
LETTERS = {
    topics.USAGE: {topics.USAGE_REJECTED},  # metering
    topics.ORDERS: {topics.METERING_DLQ, topics.ENTITLEMENT_DLQ},
    topics.DEDUCTIONS: {topics.ENTITLEMENT_DLQ},
    topics.EXPIRY_COMMANDS: {topics.ENTITLEMENT_DLQ},
    topics.LEDGER: {topics.EXPIRY_DLQ, topics.ORDER_DLQ},
}
# Hostile in form but a valid event: the envelope's subject is the org, not the Kafka key or
# headers; JSON's last duplicate key wins in every parser we use; the same id from two orgs is two
# uses (SPEC 7.3). Each must take effect, for the attacker's org.
VALID = {"no key", "key that is not an org id (bytes 0xff 0x00)", "key that disagrees with the subject",
         "headers with hostile bytes", "duplicate keys (subject twice)", "same id as the other organisation's use"}
# Valid on the internal topics only: their events have no size limit of their own, internal
# times may be far ahead (a usage `time` may not: TIME_IN_FUTURE), "7" is an integer to the models.
VALID_INTERNAL = {"900 KB of valid JSON", "envelope time in year 9999", "an integer field as a string"}
VALID_USAGE = {"extra data field"}  # usage data ignores unknown fields (SPEC 5.1)
VALID_LEDGER = {"negative integer", "integer past int64"}  # lot_credited's `line`: expiry does not use it
NUMBERS = {"negative integer", "integer past int64", "NaN", "Infinity", "1e400", "float in an integer field",
           "an integer field as a string", "integer of 5,000 digits"}
SCHEMA = NUMBERS - {"integer of 5,000 digits"} | {
    "nesting 33 deep inside the data", "year 1 at +01:00 (not in UTC)", "year 9999 at -01:00 (not in UTC)",
    "far future (year 9999)", "far past (year 1)", "time without a zone", "time not a date", "missing data field",
    "extra data field", "33 attributes", "attribute value of 257 characters"}


def expected(topic: str, kind: str) -> dict[str, str]:
    """letter topic -> reason for every consumer of `topic` that must refuse `kind` (empty: valid)."""
    if kind in VALID or (topic == topics.USAGE and kind in VALID_USAGE) or (
            topic != topics.USAGE and kind in VALID_INTERNAL) or (topic == topics.LEDGER and kind in VALID_LEDGER):
        return {}
    if kind == "unknown type":
        reason = "UNKNOWN_TYPE"
    elif topic == topics.USAGE:
        reason = ("INVALID_QUANTITY" if kind in NUMBERS - {"integer of 5,000 digits"} else
                  "TIME_IN_FUTURE" if kind in ("far future (year 9999)", "envelope time in year 9999") else "MALFORMED")
    elif topic == topics.ORDERS and kind == "integer past int64":
        return {topics.ENTITLEMENT_DLQ: "UNPROCESSABLE"}  # a valid line index to the model; PostgreSQL's int refuses it
    elif topic == topics.ORDERS and kind == "NUL in data.lines.0.sku":  # entitlement checks order lines first
        return {topics.ENTITLEMENT_DLQ: "UNKNOWN_ORDER_LINE", topics.METERING_DLQ: "MALFORMED"}
    elif kind in SCHEMA or kind == "NUL in data.org_id" or (topic == topics.DEDUCTIONS and kind.startswith("NUL in data.")):
        reason = "SCHEMA_VIOLATION"  # a field the model types with the SPEC 7.1 limits
    else:
        reason = "MALFORMED"  # not JSON, not an event, or a control character anywhere (the consumer base)
    return {lt: reason for lt in LETTERS[topic]}


CASES = [(t, k) for t in CONSUMED for k in kinds_for(t)]


async def test_every_consumed_topic_is_attacked_with_at_least_30_kinds(world: World):
    assert {t: {c.letters for c in cs} for t, cs in world.consumers.items()} == LETTERS
    assert all(len(kinds_for(t)) >= 30 for t in CONSUMED)


@pytest.mark.parametrize("topic", CONSUMED)
async def test_after_the_hostile_records_another_org_is_billed_and_nothing_is_stuck(world: World, topic: str):
    outcome = await world.attack(topic)
    assert outcome.error is None, outcome.error


@pytest.mark.parametrize(("topic", "kind"), CASES, ids=[f"{t}:{k}" for t, k in CASES])
async def test_hostile_record_is_visible_where_spec_7_says(world: World, topic: str, kind: str):
    outcome = await world.attack(topic)
    offset = outcome.offsets[kind]
    letters = outcome.letters.get(offset, [])
    got = {lt: ev["data"]["reason"] for lt, ev in letters}
    want = expected(topic, kind)
    assert got == want, f"{kind!r} on {topic}: letters {got}, expected {want}"
    assert len(letters) == len(got), f"one letter per consumer, got {[lt for lt, _ in letters]}"
    for lt, ev in letters:
        d = ev["data"]
        assert d["detail"], "a letter says why"
        if lt != topics.USAGE_REJECTED:
            assert (d["topic"], d["partition"], d["offset"]) == (topic, world.partition, offset)
        assert len(json.dumps(d["original"])) < 2 * 1024 * 1024
        if d["original_truncated"]:
            assert len(d["original"].encode()) <= 3 * 4096 and len(d["original_sha256"]) == 64
    if not want:
        assert await world.effect_of(topic, outcome.ids[kind]) is not None or topic == topics.EXPIRY_COMMANDS, (
            f"{kind!r} on {topic} is valid but took no effect")
