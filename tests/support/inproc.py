"""All four services in this process (uvicorn tasks) on a fresh database of the given infra, with
consumer groups of their own, so a test module can speak to every HTTP entry point."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg

from shared.config import Settings
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
    from services.entitlement.app import create_app as entitlement
    from services.expiry.app import create_app as expiry
    from services.metering.app import create_app as metering
    from services.order.app import create_app as order

    name = f"t_stack_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(infra.dsn)
    await admin.execute(f"CREATE DATABASE {name}")
    dsn = f"{infra.dsn.rsplit('/', 1)[0]}/{name}"
    s = Settings(kafka_bootstrap=infra.bootstrap, database_url=dsn, auth_secret=SECRET,
                 payment_webhook_secret=WEBHOOK_SECRET, **settings)
    group = uuid.uuid4().hex[:8]
    apps = {
        "order": order(s),
        "entitlement": entitlement(s, group_id=f"t-entitlement-{group}"),
        "metering": metering(s, group_id=f"t-metering-{group}"),
        "expiry": expiry(s, group_id=f"t-expiry-{group}"),
    }
    try:
        async with contextlib.AsyncExitStack() as stack:
            urls = {n: await stack.enter_async_context(serve_in_process(apps[n])) for n in SERVICES}
            yield Stack(urls, apps, s, dsn)
    finally:
        await admin.close()  # (a test may have restarted the server under it)
        admin = await asyncpg.connect(infra.dsn)
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.close()


async def record_agreements(http: Any, stack: Stack, *orgs: str) -> None:
    """Record each org's cooperation agreement through the order service (as admin)."""
    for org in orgs:
        r = await http.put(f"{stack.urls['order']}/v1/admin/orgs/{org}/agreement", headers=bearer(),
                           json={"agreement_ref": f"AGR-{org}", "signed_at": "2026-01-01T00:00:00Z"})
        assert r.status_code == 200, r.text
