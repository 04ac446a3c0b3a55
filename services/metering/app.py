"""Composition root of the metering service: runtime, consumers, HTTP routes."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from services.metering import api, handlers
from services.metering.handlers import OrdersCatchUp
from shared.clock import Clock
from shared.config import Settings
from shared.service import Runtime

MIGRATIONS = Path(__file__).with_name("migrations")


def create_app(
    settings: Settings | None = None, clock: Clock | None = None, *, group_id: str | None = None
) -> FastAPI:
    rt = Runtime("metering", MIGRATIONS, settings=settings, clock=clock, group_id=group_id)
    catch_up = OrdersCatchUp(rt)
    rt.subscribe(handlers.orders(rt))
    rt.subscribe(handlers.usage(rt, catch_up))
    rt.background(catch_up.watch, "metering-orders-catch-up")
    rt.on_stop.append(catch_up.close)
    app = rt.http_app(
        api.router,
        title="AIMIS metering",
        description="Usage ingestion, validation, durable dedup, deduction requests and usage reports.",
    )
    app.state.orders_catch_up = catch_up
    return app
