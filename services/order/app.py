"""Composition root of the order service: price book, runtime, consumer, routes."""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from contracts.http import CatalogResponse
from contracts.skus import REGISTRY, Registry
from services.order import api, handlers, sla, webhook
from services.order.domain import PriceBook, PriceBookError
from shared.clock import Clock
from shared.config import Settings, get_settings
from shared.service import Runtime

HERE = Path(__file__).parent
MIGRATIONS = HERE / "migrations"
DEFAULT_PRICE_BOOK = HERE / "pricebook" / "2026-11-01.json"
# `order` is a reserved SQL word, so the schema (= runtime name) is `ordering`; the consumer
# group and the event source keep the service's name.
SCHEMA = "ordering"
GROUP_ID = "aimis-order"
SOURCE = "/aimis/order"


def price_book_path() -> Path:
    """AIMIS_PRICE_BOOK (a file path) when set, else the price book shipped in the repository."""
    env = os.environ.get("AIMIS_PRICE_BOOK", "").strip()
    return Path(env) if env else DEFAULT_PRICE_BOOK


def load_price_book(path: Path, registry: Registry = REGISTRY) -> tuple[PriceBook, CatalogResponse]:
    """Read the price book and check it against the SKU registry; an incomplete or malformed
    file, or one that disagrees with the registry, stops the service (PriceBookError names it)."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise PriceBookError(f"cannot read price book {path}: {e}") from None
    try:
        book = PriceBook.from_dict(doc, registry)
        catalog = CatalogResponse.model_validate(
            {"price_book_version": book.version, "currency": "USD", "items": book.items}
        )
    except (PriceBookError, ValueError) as e:
        raise PriceBookError(f"price book {path} is refused: {e}") from None
    return book, catalog


def create_app(
    settings: Settings | None = None, clock: Clock | None = None, *, price_book: Path | None = None,
    registry: Registry = REGISTRY,
) -> FastAPI:
    book, catalog = load_price_book(price_book or price_book_path(), registry)
    rt = Runtime(SCHEMA, MIGRATIONS, settings=settings or get_settings(), clock=clock, group_id=GROUP_ID)
    rt.source = SOURCE
    rt.subscribe(handlers.ledger(rt))
    policy = sla.Policy(timedelta(seconds=rt.settings.fulfilment_sla_s), rt.clock)
    rt.background(lambda: sla.watch(lambda: rt.pool, policy, rt.settings.fulfilment_check_s), "order-sla")
    app = rt.http_app(
        api.router,
        webhook.router,
        title="AIMIS order service",
        description="Price book, agreements, orders and their lifecycle; publishes aimis.orders.v1.",
    )

    @app.middleware("http")
    async def bind_sla(request: Any, call_next: Any) -> Any:
        sla.bind(policy)  # the order view shows this app's fulfilment SLA
        return await call_next(request)

    app.state.price_book = book
    app.state.catalog = catalog
    return app
