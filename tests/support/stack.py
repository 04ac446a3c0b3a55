"""All four services as real subprocesses on the real broker and database (public interfaces only).

One stack per test session, shared by tests/e2e and tests/browser: the services use the production
consumer groups, so two stacks on one broker would split the partitions between them. The fixture
`stack` is registered in tests/conftest.py."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cli.client import Api
from shared import auth
from tests.support.db import scratch_database
from tests.support.infra import Infra, free_port
from tests.support.services import ServiceProcess

SECRET = "e2e-secret-0123456789abcdef0123456789"
GRACE_S = 4
SERVICES = ("order", "entitlement", "metering", "expiry")


@dataclass
class Stack:
    bootstrap: str
    urls: dict[str, str]
    admin: Api
    procs: dict[str, ServiceProcess]
    infra: Infra
    dsn: str = ""  # the stack's own database (one schema per service)

    def org_api(self, org_id: str) -> Api:
        return Api(auth.mint(SECRET, "org", org_id), self.urls)

    def anonymous(self) -> Api:
        return Api("", self.urls)


@pytest.fixture(scope="session")
async def stack(real_infra: Infra) -> AsyncIterator[Stack]:
    async with scratch_database(real_infra.dsn, "e2e") as dsn:
        logs = Path(tempfile.mkdtemp(prefix="aimis-e2e-logs-"))
        env = {
            "AIMIS_KAFKA_BOOTSTRAP": real_infra.bootstrap,
            "AIMIS_DATABASE_URL": dsn,
            "AIMIS_AUTH_SECRET": SECRET,
            "AIMIS_LATE_USAGE_GRACE_S": str(GRACE_S),
            "AIMIS_EXPIRY_INTERVAL_S": "0.5",
            "AIMIS_REMINDER_DAYS": "30,7,1",
        }
        for s in SERVICES:
            env[f"AIMIS_{s.upper()}_PORT"] = str(free_port())
        procs = {s: ServiceProcess(s, dict(env), logs) for s in SERVICES}
        try:
            for p in procs.values():
                await p.start()
            urls = {s: p.url for s, p in procs.items()}
            yield Stack(real_infra.bootstrap, urls, Api(auth.mint(SECRET, "admin"), urls), procs, real_infra, dsn)
        finally:
            for p in procs.values():
                p.stop()
            for s in SERVICES:
                log = logs / f"{s}.log"
                if log.exists():
                    tail = log.read_text(errors="replace").splitlines()[-5:]
                    print(f"\n[{s} log tail]", *tail, sep="\n  ")
            shutil.rmtree(logs, ignore_errors=True)
