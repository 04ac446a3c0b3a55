"""Provision a secured local Kafka: every topic (replication, min ISR) and every principal's ACLs.

    python deploy/local/kafka_provision.py BOOTSTRAP CREDENTIALS_JSON [--replication 3] [--min-isr 2]
        [--partitions 6]

Runs as the super user `admin` (its password in CREDENTIALS_JSON). The ACLs come from
contracts/principals.py: WRITE+DESCRIBE on each produced topic, READ+DESCRIBE on each consumed
topic, READ on the principal's consumer group. Idempotent: existing topics and ACLs stay.
aiokafka has no ACL API of its own, so the CreateAcls request (Kafka API 30, v1) is sent directly.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # noqa: E402
from aiokafka.protocol.admin import CreateAclsRequest  # noqa: E402

from contracts.principals import PRINCIPALS, all_topics  # noqa: E402

# Kafka's AclResourceType, PatternType, AclOperation, AclPermissionType codes
TOPIC, GROUP = 2, 3
LITERAL, PREFIXED = 3, 4
READ, WRITE, DESCRIBE = 3, 4, 8
ALLOW = 3


def acl_entries() -> list[tuple[int, str, int, str, int]]:
    """(resource type, name, pattern type, principal, operation) for every grant."""
    out = []
    for p in PRINCIPALS:
        user = f"User:{p.name}"
        for t in p.produces:
            out += [(TOPIC, t, LITERAL, user, WRITE), (TOPIC, t, LITERAL, user, DESCRIBE)]
        for t in p.consumes:
            out += [(TOPIC, t, LITERAL, user, READ), (TOPIC, t, LITERAL, user, DESCRIBE)]
        if p.group:
            out.append((GROUP, p.group, PREFIXED if p.group_prefix else LITERAL, user, READ))
    return out


def admin_options(credentials: Path) -> dict[str, str]:
    password = json.loads(credentials.read_text())["admin"]
    return {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_plain_username": "admin", "sasl_plain_password": password}


async def provision(bootstrap: str, options: dict[str, str], replication: int, min_isr: int, partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30_000, **options)
    await admin.start()
    try:
        await _until_brokers(admin, replication)
        existing = set(await admin.list_topics())
        config = {"min.insync.replicas": str(min_isr)}
        missing = [NewTopic(t, partitions, replication, topic_configs=config)
                   for t in all_topics() if t not in existing]
        if missing:
            resp = await admin.create_topics(missing)
            failed = [(t[0], t[1]) for t in resp.topic_errors if t[1] not in (0, 36)]  # 36: already exists
            if failed:
                raise RuntimeError(f"topics not created: {failed}")
        await _until_led(admin, all_topics())
        for rtype, name, pattern, user, op in acl_entries():
            resp = await admin._send_request(  # noqa: SLF001 - no public ACL API in aiokafka
                CreateAclsRequest(rtype, name, pattern, user, "*", op, ALLOW)
            )
            for code, message in resp.creation_responses:
                if code:
                    raise RuntimeError(f"ACL {user} {op} on {name}: error {code} {message}")
        print(f"kafka: {len(missing)} topics created (replication {replication}, min ISR {min_isr}), "
              f"{len(acl_entries())} ACLs for {len(PRINCIPALS)} principals")
    finally:
        await admin.close()


async def _until_brokers(admin: AIOKafkaAdminClient, n: int, timeout_s: float = 180) -> None:
    """A topic with `n` replicas needs `n` registered brokers: wait for them."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while len((await admin.describe_cluster())["brokers"]) < n:
        if asyncio.get_running_loop().time() > deadline:
            raise RuntimeError(f"fewer than {n} brokers registered after {timeout_s:.0f} s")
        await asyncio.sleep(0.5)


async def _until_led(admin: AIOKafkaAdminClient, names: tuple[str, ...], timeout_s: float = 180) -> None:
    """Topic creation completes asynchronously: wait until every partition of every topic has a leader."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        desc = await admin.describe_topics(list(names))
        waiting = [d["topic"] for d in desc if d.get("error_code", 0) != 0 or not d["partitions"]
                   or any(p["leader"] < 0 for p in d["partitions"])]
        if not waiting:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise RuntimeError(f"topics without a leader after {timeout_s:.0f} s: {waiting}; {desc[:1]}")
        await asyncio.sleep(0.2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bootstrap")
    ap.add_argument("credentials", type=Path)
    ap.add_argument("--replication", type=int, default=1)
    ap.add_argument("--min-isr", type=int, default=1)
    ap.add_argument("--partitions", type=int, default=6)
    a = ap.parse_args()
    asyncio.run(provision(a.bootstrap, admin_options(a.credentials), a.replication, a.min_isr, a.partitions))


if __name__ == "__main__":
    main()
