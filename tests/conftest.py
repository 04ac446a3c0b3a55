from __future__ import annotations

import os
import signal
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from shared.config import Settings
from tests.support.db import scratch_database
from tests.support.infra import Infra, infra
from tests.support.services import SECRET
from tests.support.stack import stack  # noqa: F401  (the one session stack: e2e and browser tests)

_STAGE = {"unit": 0, "component": 1, "integration": 2, "adversarial": 2, "e2e": 3, "browser": 4, "cluster": 5}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Unit, then component (PostgreSQL only), then integration, then e2e. The e2e stack (session-scoped subprocesses using the
    production consumer groups) must not run while integration tests consume the same topics."""
    items.sort(key=lambda i: _STAGE.get(i.path.parent.name, 2))


def _terminate_as_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


# SIGTERM (a CI timeout, `kill`) unwinds like Ctrl-C, so fixtures stop the brokers, databases and
# service processes they started instead of leaving them behind.
signal.signal(signal.SIGTERM, _terminate_as_interrupt)


@pytest.fixture(autouse=True)
def _no_run_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI fills unset AIMIS_* variables from `.run/env` (the addresses of a `make up` stack) into
    os.environ. A test that runs the CLI in process must not pick up a developer's stack that way:
    it would outlive the test and send `real_infra` to that stack (or, after `make down`, to nothing)."""
    from cli import runenv

    monkeypatch.setattr(runenv, "RUN_ENV", runenv.RUN_ENV.with_name("env-not-read-by-tests"))


@pytest.fixture(scope="session")
def real_infra(request: pytest.FixtureRequest) -> Iterator[Infra]:
    """The real broker and database for this test session (see tests/support/infra.py)."""
    with infra() as i:
        os.environ["AIMIS_KAFKA_BOOTSTRAP"] = i.bootstrap
        os.environ["AIMIS_DATABASE_URL"] = i.dsn
        # Shown even under capture, so the CI log says which real broker and database ran the tests.
        capture = request.config.pluginmanager.getplugin("capturemanager")
        with capture.global_and_fixture_disabled():
            print(f"\n[infra] real Kafka {i.bootstrap} and PostgreSQL {i.dsn} via {i.how}", flush=True)
        yield i


@pytest.fixture
def settings(real_infra: Infra) -> Settings:
    return Settings(
        kafka_bootstrap=real_infra.bootstrap,
        database_url=real_infra.dsn,
        auth_secret=SECRET,
        expiry_interval_s=0.5,
        late_usage_grace_s=2,
    )


@pytest.fixture
def org_id() -> str:
    return f"org-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def fresh_db(real_infra: Infra) -> AsyncIterator[str]:
    """A new empty database on the real server; dropped afterwards."""
    async with scratch_database(real_infra.dsn, "t") as dsn:
        yield dsn
