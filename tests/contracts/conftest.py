"""The contract tests that run services in process need a database of their own: a new database
on the session's real PostgreSQL, made from a migrated template (tests/component/conftest.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.component.conftest import Database
from tests.support.infra import Infra


@pytest.fixture
async def database(real_infra: Infra) -> AsyncIterator[Database]:
    db = Database(real_infra.dsn)
    try:
        yield db
    finally:
        await db.drop()
