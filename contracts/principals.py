"""Kafka principals and what each may do (SPEC 10): one per service, plus the imaging platform and
analytics. Each writes only the topics it produces and reads only the topics it consumes, through
its own consumer group. `make up` (deploy/local/kafka_provision.py) and the Helm chart's KafkaUser
resources are written from this table; a test checks the broker enforces it."""

from __future__ import annotations

from dataclasses import dataclass

from contracts import topics


def dlq(service: str) -> str:
    """The dead-letter topic of a service (SPEC 7.2)."""
    return f"aimis.{service}.dlq.v1"


@dataclass(frozen=True)
class Principal:
    name: str
    produces: tuple[str, ...] = ()
    consumes: tuple[str, ...] = ()
    group: str | None = None  # consumer group it reads with (a prefix when `group_prefix`)
    group_prefix: bool = False


PRINCIPALS: tuple[Principal, ...] = (
    Principal("order", produces=(topics.ORDERS, dlq("order")), consumes=(topics.LEDGER,), group="aimis-order"),
    Principal(
        "metering",
        # HTTP ingestion forwards validated usage to aimis.usage.v1 before metering consumes it
        produces=(topics.USAGE, topics.DEDUCTIONS, topics.USAGE_REJECTED, dlq("metering")),
        consumes=(topics.USAGE, topics.ORDERS),
        group="aimis-metering",
    ),
    Principal(
        "entitlement",
        produces=(topics.LEDGER, topics.ENTITLEMENT_DLQ),
        consumes=(topics.ORDERS, topics.DEDUCTIONS, topics.EXPIRY_COMMANDS),
        group="aimis-entitlement",
    ),
    Principal(
        "expiry", produces=(topics.EXPIRY_COMMANDS, topics.NOTIFICATIONS, dlq("expiry")),
        consumes=(topics.LEDGER,), group="aimis-expiry",
    ),
    Principal("console"),  # HTTP only: no Kafka rights at all
    Principal("platform", produces=(topics.USAGE,)),
    Principal("analytics", consumes=(topics.LEDGER,), group="analytics", group_prefix=True),
)

SUPER_USER = "admin"  # operators: provisioning, `aimis dlq replay`


def by_name() -> dict[str, Principal]:
    return {p.name: p for p in PRINCIPALS}


def all_topics() -> tuple[str, ...]:
    """Every topic the system uses: the SPEC's and every principal's."""
    names = dict.fromkeys(topics.ALL)
    for p in PRINCIPALS:
        names.update(dict.fromkeys(p.produces + p.consumes))
    return tuple(names)
