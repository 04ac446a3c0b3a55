"""SPEC 7.6: a failed batch spanning several partitions is redelivered whole. Exactly-once relies on
it: the consumer commits offsets only after its transaction, and a failed batch must come back with
every record of every partition (FastStream before 0.7.8 rewound only the first partition)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from shared.config import Settings
from shared.service import Runtime
from tests.support.kafka import new_topic, producer, wait_until

pytestmark = pytest.mark.integration
MIGRATIONS = Path(__file__).with_name("foundation_migrations")
PARTITIONS = 4


async def _topic(bootstrap: str) -> str:
    return await new_topic(bootstrap, "t-batch", PARTITIONS)


async def test_a_failed_batch_over_several_partitions_comes_back_whole(settings: Settings, fresh_db: str):
    topic = await _topic(settings.kafka_bootstrap)
    p = await producer(settings.kafka_bootstrap)
    try:  # keys of many orgs land on different partitions (the default partitioner)
        acks = [await p.send(topic, f"v-{i}".encode(), key=f"org-{i}".encode()) for i in range(200)]
        metas = [await a for a in acks]
    finally:
        await p.stop()
    produced = {(m.partition, m.offset) for m in metas}
    assert len({part for part, _ in produced}) == PARTITIONS, "the keys span every partition"

    rt = Runtime("foundation", MIGRATIONS, settings=settings.model_copy(update={"database_url": fresh_db}),
                 group_id=f"t-{uuid.uuid4().hex[:8]}")
    failed: set[tuple[int, int]] = set()
    after_failure: set[tuple[int, int]] = set()

    async def fails_the_first_multi_partition_batch(records):
        got = {(r.partition, r.offset) for r in records}
        if not failed and len({part for part, _ in got}) > 1:
            failed.update(got)
            raise RuntimeError("the batch fails once")
        if failed:
            after_failure.update(got)

    rt.consume(topic, fails_the_first_multi_partition_batch, retry_backoff_s=0.0)
    await rt.start()
    try:
        await wait_until(lambda: failed and failed <= after_failure, timeout=60)
    finally:
        await rt.stop()
    assert len({part for part, _ in failed}) > 1
    assert failed <= produced


def test_the_libraries_it_relies_on_are_pinned_exactly_and_installed_at_the_pin():
    import re
    import tomllib
    from importlib.metadata import version

    deps = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = {m["name"]: m["version"] for d in deps
            if (m := re.fullmatch(r"(?P<name>[a-z0-9_-]+)(\[[a-z,]+\])?==(?P<version>[\w.]+)", d))}
    for lib in ("faststream", "aiokafka", "asyncpg"):
        assert lib in pins, f"{lib} is not pinned with == in pyproject.toml"
        assert version(lib) == pins[lib], f"installed {lib} {version(lib)} is not the pinned {pins[lib]}"
