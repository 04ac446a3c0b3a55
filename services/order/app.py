"""Composition root of the order service: price book, runtime, consumer, routes."""

from __future__ import annotations

import json
import os
from pathlib import Path

from fastapi import FastAPI

from contracts.http import CatalogResponse
from shared.clock import Clock
from shared.config import Settings, get_settings
from shared.service import Runtime

from services.order import api, handlers
from services.order.domain import PriceBook, PriceBookError

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


def load_price_book(path: Path) -> tuple[PriceBook, CatalogResponse]:
    """Read and check the price book; an incomplete or malformed file stops the service."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise PriceBookError(f"cannot read price book {path}: {e}") from None
    book = PriceBook.from_dict(doc)
    catalog = CatalogResponse.model_validate(
        {"price_book_version": book.version, "currency": doc.get("currency", "USD"), "items": doc["items"]}
    )
    return book, catalog


def create_app(
    settings: Settings | None = None, clock: Clock | None = None, *, price_book: Path | None = None
) -> FastAPI:
    book, catalog = load_price_book(price_book or price_book_path())
    rt = Runtime(SCHEMA, MIGRATIONS, settings=settings or get_settings(), clock=clock, group_id=GROUP_ID)
    rt.source = SOURCE
    rt.subscribe(handlers.ledger(rt))
    app = rt.http_app(
        api.router,
        title="AIMIS order service",
        description="Price book, agreements, orders and their lifecycle; publishes aimis.orders.v1.",
    )
    app.state.price_book = book
    app.state.catalog = catalog
    return app
