"""Composition root of the expiry service: runtime, ledger consumer, sweeper, HTTP routes."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from services.expiry import api, handlers
from shared.clock import Clock
from shared.config import Settings
from shared.service import Runtime

MIGRATIONS = Path(__file__).with_name("migrations")


def create_app(settings: Settings | None = None, clock: Clock | None = None, *, group_id: str | None = None) -> FastAPI:
    """`group_id` overrides the consumer group `aimis-expiry` (tests isolate themselves with it)."""
    rt = Runtime("expiry", MIGRATIONS, settings=settings, clock=clock, group_id=group_id)
    rt.subscribe(handlers.ledger(rt))
    rt.background(handlers.sweeper(rt), "expiry-sweeper")
    return rt.http_app(
        api.router,
        title="AIMIS expiry",
        description="Deadlines from the ledger; expiry commands and reminders when they fall due.",
    )
