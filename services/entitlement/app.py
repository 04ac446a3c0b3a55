"""Composition root: the runtime, the three consumers and the HTTP routes."""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import FastAPI

from services.entitlement import api, handlers, top_balances
from shared.clock import Clock
from shared.config import Settings
from shared.service import Runtime

MIGRATIONS = Path(__file__).with_name("migrations")


def create_app(settings: Settings | None = None, clock: Clock | None = None, *,
               group_id: str | None = None) -> FastAPI:
    """`group_id` (or AIMIS_ENTITLEMENT_GROUP_ID) overrides the consumer group `aimis-entitlement`
    (tests run isolated groups against a shared broker)."""
    rt = Runtime("entitlement", MIGRATIONS, settings=settings, clock=clock,
                 group_id=group_id or os.environ.get("AIMIS_ENTITLEMENT_GROUP_ID") or None)
    for sub in handlers.subscriptions(rt):
        rt.subscribe(sub)
    rt.background(lambda: top_balances.watch(lambda: rt.pool), "entitlement-top-balances")
    return rt.http_app(api.router, title="AIMIS entitlement",
                       description="Balances, lots, ledger, licences, services and AI allowance")
