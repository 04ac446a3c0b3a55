"""All four services in this process (uvicorn tasks) on a fresh database of the given infra, with
consumer groups of their own, so a test module can speak to every HTTP entry point."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from shared.config import Settings
from tests.support.db import scratch_database
from tests.support.infra import Infra
from tests.support.services import SECRET, bearer, serve_in_process

SERVICES = ("order", "entitlement", "metering", "expiry")
WEBHOOK_SECRET = "webhook-secret-0123456789abcdef0123456789"


@dataclass
class Stack:
    urls: dict[str, str]
    apps: dict[str, Any]
    settings: Settings
    dsn: str


@contextlib.asynccontextmanager
async def in_process_stack(infra: Infra, **settings: Any) -> AsyncIterator[Stack]:

    async with scratch_database(infra.dsn, "t_stack") as dsn:
        async for stack in _serve_all(infra, dsn, **settings):
            yield stack


async def _serve_all(infra: Infra, dsn: str, **settings: Any) -> AsyncIterator[Stack]:
    from services.entitlement.app import create_app as entitlement
    from services.expiry.app import create_app as expiry
    from services.metering.app import create_app as metering
    from services.order.app import create_app as order

    s = Settings(kafka_bootstrap=infra.bootstrap, database_url=dsn, auth_secret=SECRET,
                 payment_webhook_secret=WEBHOOK_SECRET, **settings)
    group = uuid.uuid4().hex[:8]
    apps = {
        "order": order(s),
        "entitlement": entitlement(s, group_id=f"t-entitlement-{group}"),
        "metering": metering(s, group_id=f"t-metering-{group}"),
        "expiry": expiry(s, group_id=f"t-expiry-{group}"),
    }
    async with contextlib.AsyncExitStack() as stack:
        urls = {n: await stack.enter_async_context(serve_in_process(apps[n])) for n in SERVICES}
        yield Stack(urls, apps, s, dsn)


async def record_agreements(http: Any, stack: Stack, *orgs: str) -> None:
    """Record each org's cooperation agreement through the order service (as admin)."""
    for org in orgs:
        r = await http.put(f"{stack.urls['order']}/v1/admin/orgs/{org}/agreement", headers=bearer(),
                           json={"agreement_ref": f"AGR-{org}", "signed_at": "2026-01-01T00:00:00Z"})
        assert r.status_code == 200, r.text


@contextlib.asynccontextmanager
async def stack_with_orgs(infra: Infra, *prefixes: str) -> AsyncIterator[tuple[Stack, Any, list[str]]]:
    """An in-process stack, an HTTP client, and one new org per prefix with its agreement recorded."""
    import httpx

    async with in_process_stack(infra) as stack, httpx.AsyncClient(timeout=30) as http:
        orgs = [f"{p}-{uuid.uuid4().hex[:8]}" for p in prefixes]
        await record_agreements(http, stack, *orgs)
        yield stack, http, orgs
