"""`aimis dlq list|replay` (SPEC 7.2): show dead letters and re-publish chosen originals.

Dead letters live on each service's `aimis.<service>.dlq.v1` (a `DeadLetterData` naming the source
topic, partition and offset) and, for usage, on `aimis.usage.rejected.v1` (a `UsageRejectedData`;
the source is `aimis.usage.v1`). Both carry the `original`: the record's JSON, or its raw text when
it was not JSON, and `original_base64`, its exact bytes, when they are not UTF-8 (the text then has
U+FFFD in their place). `replay` publishes the exact bytes when the letter has them, else the
original as JSON or text, to its source topic, keyed by the letter's org,
as the `admin` Kafka principal when AIMIS_KAFKA_SECURITY=scram. The consumers' inboxes make a
replay take effect at most once: replaying twice, or replaying what already took effect, is a no-op.
"""

from __future__ import annotations

import asyncio
import base64
import json
from dataclasses import asdict, dataclass
from typing import Any

import typer
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from rich.console import Console
from rich.table import Table

from contracts import principals, topics
from shared.config import Settings

SERVICES = ("order", "metering", "entitlement", "expiry")
LETTER_TOPICS = tuple(principals.dlq(s) for s in SERVICES) + (topics.USAGE_REJECTED,)

dlq_app = typer.Typer(help="Dead letters: list them, replay originals once their cause is fixed.",
                      no_args_is_help=True)
out = Console()
err = Console(stderr=True, soft_wrap=True, highlight=False)


class DlqError(Exception):
    pass


@dataclass(frozen=True)
class Letter:
    topic: str  # where the letter is: a dead-letter topic or aimis.usage.rejected.v1
    partition: int
    offset: int
    id: str  # the letter's event id
    subject: str  # the org (or "unknown")
    reason: str
    detail: str
    source_topic: str  # where the original was consumed from, and is replayed to
    source: str  # topic[partition]@offset of the original, when known
    original: Any
    original_base64: str | None = None  # the exact bytes, when they are not UTF-8
    original_truncated: bool = False  # `original` is the first 4 KiB only (SPEC 7.1): not replayable
    headers: list[dict[str, Any]] | None = None  # the original record's (binary mode: its attributes)

    @property
    def position(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"

    def replay_record(self) -> tuple[str, bytes, bytes]:
        """(topic, key, value) to re-publish: the original as it was consumed (byte for byte when
        the letter kept the bytes)."""
        if self.original_truncated:
            raise DlqError(f"{self.position} kept only the first 4 KiB of its original (a record refused for its "
                           "content); there is nothing whole to replay")
        o = self.original
        if self.original_base64 is not None:
            value = base64.b64decode(self.original_base64, validate=True)
        else:
            text = o if isinstance(o, str) else json.dumps(o, ensure_ascii=False)
            value = text.encode("utf-8", "surrogatepass")
        key = self.subject
        if key == "unknown" and isinstance(o, dict) and isinstance(o.get("subject"), str):
            key = o["subject"]
        return self.source_topic, key.encode("utf-8", "surrogatepass"), value

    def replay_headers(self) -> list[tuple[str, bytes]]:
        """The original record's headers (a binary-mode event's attributes), and which letter it replays."""
        kept = [(str(h["key"]), base64.b64decode(h["value"]) if h.get("base64")
                 else str(h["value"]).encode("utf-8", "surrogatepass")) for h in self.headers or []]
        return [*kept, ("aimis-replay-of", self.id.encode())]


def letter_of(topic: str, partition: int, offset: int, value: bytes | None) -> Letter | None:
    """A letter from a record of `topic`; None for a record that is not one."""
    try:
        ev = json.loads(value or b"")
        data = ev["data"]
        if topic == topics.USAGE_REJECTED:
            source_topic, source = topics.USAGE, ""
        else:
            source_topic = str(data["topic"])
            source = f"{source_topic}[{data['partition']}]@{data['offset']}"
        b64 = data.get("original_base64")
        return Letter(topic, partition, offset, str(ev["id"]), str(ev.get("subject", "unknown")),
                      str(data["reason"]), str(data.get("detail", "")), source_topic, source, data.get("original"),
                      b64 if isinstance(b64, str) else None, data.get("original_truncated") is True,
                      data.get("headers"))
    except (ValueError, KeyError, TypeError):
        return None


def topics_for(service: str | None, topic: str | None) -> list[str]:
    if topic is not None:
        if topic not in LETTER_TOPICS:
            raise DlqError(f"{topic!r} is not a dead-letter topic (one of {', '.join(LETTER_TOPICS)})")
        return [topic]
    if service is not None:
        if service not in SERVICES:
            raise DlqError(f"unknown service {service!r} (one of {', '.join(SERVICES)})")
        # metering's dead letters include the usage it rejected
        return [principals.dlq(service)] + ([topics.USAGE_REJECTED] if service == "metering" else [])
    return list(LETTER_TOPICS)


def _options(s: Settings) -> dict[str, Any]:
    return dict(s.kafka_options(principals.SUPER_USER))


async def read_letters(s: Settings, names: list[str]) -> list[Letter]:
    """Every letter now on `names`, from the beginning up to the end offsets at the start."""
    admin = AIOKafkaAdminClient(bootstrap_servers=s.kafka_bootstrap, **_options(s))
    await admin.start()
    try:
        described = await admin.describe_topics(names)
    finally:
        await admin.close()
    tps = [TopicPartition(d["topic"], p["partition"]) for d in described if d.get("error_code", 0) == 0
           for p in d["partitions"]]
    if not tps:
        return []
    # no group, no commits: an assigned partition starts at its earliest offset (no seek that could
    # race the first fetch from another position)
    c = AIOKafkaConsumer(bootstrap_servers=s.kafka_bootstrap, enable_auto_commit=False, group_id=None,
                         auto_offset_reset="earliest", **_options(s))
    await c.start()
    try:
        c.assign(tps)
        ends = await c.end_offsets(tps)
        todo = {tp for tp in tps if ends[tp] > 0}
        letters: list[Letter] = []
        while todo:
            for tp, recs in (await c.getmany(*todo, timeout_ms=1000)).items():
                for r in recs:
                    if r.offset < ends[tp] and (x := letter_of(r.topic, r.partition, r.offset, r.value)):
                        letters.append(x)
            todo = {tp for tp in todo if await c.position(tp) < ends[tp]}
        return sorted(letters, key=lambda x: (x.topic, x.partition, x.offset))
    finally:
        await c.stop()


def pick(letters: list[Letter], *, offset: int | None, partition: int | None, id: str | None) -> Letter:
    if id is not None:
        found = [x for x in letters if x.id == id]
    elif offset is not None:
        found = [x for x in letters if x.offset == offset and (partition is None or x.partition == partition)]
    else:
        raise DlqError("name the dead letter: --offset N [--partition P], or --id EVENT_ID")
    if not found:
        raise DlqError("no such dead letter")
    if len(found) > 1:
        raise DlqError("several dead letters match (" + ", ".join(x.position for x in found) +
                       "): add --topic or --partition")
    return found[0]


async def replay(s: Settings, letter: Letter) -> None:
    topic, key, value = letter.replay_record()
    if topic in LETTER_TOPICS:
        raise DlqError(f"refusing to replay into the dead-letter topic {topic}")
    p = AIOKafkaProducer(bootstrap_servers=s.kafka_bootstrap, acks="all", enable_idempotence=True,
                         client_id="aimis-dlq-replay", **_options(s))
    await p.start()
    try:
        await p.send_and_wait(topic, value, key=key, headers=letter.replay_headers())
    finally:
        await p.stop()


def _run(coro: Any) -> Any:
    try:
        return asyncio.run(coro)
    except DlqError as e:
        err.print(f"[bold red]error[/] {e}")
        raise typer.Exit(1) from None


@dlq_app.command("list")
def dlq_list(
    service: str | None = typer.Option(None, "--service", help="order, metering, entitlement or expiry"),
    topic: str | None = typer.Option(None, "--topic", help="one dead-letter topic"),
    as_json: bool = typer.Option(False, "--json", help="one JSON object per line"),
) -> None:
    """List the dead letters (and rejected usage), oldest first per partition."""
    async def run() -> list[Letter]:
        return await read_letters(Settings(), topics_for(service, topic))

    letters: list[Letter] = _run(run())
    if as_json:
        for x in letters:
            typer.echo(json.dumps(asdict(x), default=str, ensure_ascii=False))
        return
    t = Table("letter", "id", "org", "reason", "source", "detail")
    for x in letters:
        t.add_row(x.position, x.id, x.subject, x.reason, x.source or x.source_topic, x.detail[:80])
    out.print(t)
    out.print(f"{len(letters)} dead letter(s)")


@dlq_app.command("replay")
def dlq_replay(
    service: str | None = typer.Option(None, "--service"),
    topic: str | None = typer.Option(None, "--topic"),
    offset: int | None = typer.Option(None, "--offset", help="the letter's offset in its dead-letter topic"),
    partition: int | None = typer.Option(None, "--partition"),
    id: str | None = typer.Option(None, "--id", help="the letter's event id"),
) -> None:
    """Re-publish a dead letter's original to its source topic (once its cause is fixed)."""
    async def run() -> Letter:
        s = Settings()
        letter = pick(await read_letters(s, topics_for(service, topic)), offset=offset, partition=partition, id=id)
        await replay(s, letter)
        return letter

    x: Letter = _run(run())
    out.print(f"replayed {x.position} ({x.reason}) to {x.source_topic}", highlight=False)
