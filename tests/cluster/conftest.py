"""A three-broker KRaft cluster with SASL/SCRAM and ACLs (SPEC 10), a PostgreSQL, and every service
twice (AIMIS_REPLICAS=2) with its own principal: started once for this folder, stopped by pid.

The cluster is ours even when AIMIS_KAFKA_BOOTSTRAP points at another broker: these tests kill and
restart brokers."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from cli.client import Api
from shared import auth
from tests.support.db import scratch_database
from tests.support.infra import LOCAL, ROOT, free_port
from tests.support.services import ServiceProcess

SECRET = "cluster-secret-0123456789abcdef0123456789"
SERVICES = ("order", "entitlement", "metering", "expiry")
REPLICAS = 2


@dataclass
class Cluster:
    dir: Path
    bootstrap: str
    dsn: str
    credentials: dict[str, str]

    def options(self, principal: str, password: str | None = None) -> dict[str, Any]:
        return {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "SCRAM-SHA-512",
                "sasl_plain_username": principal, "sasl_plain_password": password or self.credentials[principal]}

    def kill_broker(self, node: int) -> None:
        subprocess.run([str(LOCAL / "kafka.sh"), "kill-node", str(self.dir), str(node)], check=True)

    def start_broker(self, node: int) -> None:
        subprocess.run([str(LOCAL / "kafka.sh"), "start-node", str(self.dir), str(node)], check=True)


@dataclass
class Replicated:
    """Every service twice; `procs[name]` lists its replicas, the first one's URL serves the API."""

    cluster: Cluster
    dsn: str = ""  # the services' database
    procs: dict[str, list[ServiceProcess]] = field(default_factory=dict)

    @property
    def urls(self) -> dict[str, str]:
        """The API of each service: its first replica still running."""
        return {s: next(p for p in ps if p.proc is not None and p.proc.poll() is None).url
                for s, ps in self.procs.items()}

    @property
    def admin(self) -> Api:
        return Api(auth.mint(SECRET, "admin"), self.urls)


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    work = Path(tempfile.mkdtemp(prefix="aimis-cluster-"))
    os.chmod(work, 0o755)
    kdir, pdir = work / "kafka", work / "pg"
    kdir.mkdir()
    ports = [free_port() for _ in range(3)]
    ctrls = [free_port() for _ in range(3)]
    pport = free_port()
    env = {**os.environ, "AIMIS_KAFKA_SECURITY": "scram", "AIMIS_KAFKA_HEAP": "512m"}
    bootstrap = ",".join(f"127.0.0.1:{p}" for p in ports)
    try:
        subprocess.run([str(LOCAL / "kafka.sh"), "start-cluster", str(kdir), ",".join(map(str, ports)),
                        ",".join(map(str, ctrls))], check=True, env=env)
        subprocess.run([str(LOCAL / "postgres.sh"), "start", str(pdir), str(pport)], check=True)
        creds = kdir / "credentials.json"
        py = str(ROOT / ".venv/bin/python")
        subprocess.run([py, str(LOCAL / "wait_kafka.py"), bootstrap, "120"], check=True,
                       env={**env, "AIMIS_KAFKA_CREDENTIALS": str(creds)})
        subprocess.run([py, str(LOCAL / "kafka_provision.py"), bootstrap, str(creds), "--replication", "3",
                        "--min-isr", "2"], check=True)
        print(f"\n[cluster] 3 brokers {bootstrap} (SCRAM, ACLs), PostgreSQL on {pport}", flush=True)
        yield Cluster(kdir, bootstrap, f"postgresql://postgres@127.0.0.1:{pport}/aimis", json.loads(creds.read_text()))
    finally:
        subprocess.run([str(LOCAL / "kafka.sh"), "stop", str(kdir)], check=False)
        subprocess.run([str(LOCAL / "postgres.sh"), "stop", str(pdir)], check=False)
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(scope="session")
async def replicated(cluster: Cluster) -> AsyncIterator[Replicated]:
    """order, entitlement, metering and expiry, two processes each, each with its own principal."""
    async with scratch_database(cluster.dsn, "cluster") as dsn:
        async for stack in _replicas(cluster, dsn):
            yield stack


async def _replicas(cluster: Cluster, dsn: str) -> AsyncIterator[Replicated]:
    logs = Path(tempfile.mkdtemp(prefix="aimis-cluster-logs-"))
    base = {
        "AIMIS_KAFKA_BOOTSTRAP": cluster.bootstrap,
        "AIMIS_DATABASE_URL": dsn,
        "AIMIS_AUTH_SECRET": SECRET,
        "AIMIS_ENV": "development",
        "AIMIS_KAFKA_SECURITY": "scram",
        "AIMIS_KAFKA_CREDENTIALS": str(cluster.dir / "credentials.json"),
        "AIMIS_KAFKA_REPLICATION": "3",
        "AIMIS_KAFKA_MIN_ISR": "2",
        "AIMIS_LOG_LEVEL": "WARNING",
    }
    stack = Replicated(cluster, dsn)
    try:
        for s in SERVICES:
            stack.procs[s] = [
                ServiceProcess(s, {**base, "AIMIS_KAFKA_USERNAME": s, f"AIMIS_{s.upper()}_PORT": str(free_port())},
                               logs, label=f"{s}-{r}")
                for r in range(1, REPLICAS + 1)
            ]
        # The first replica of each applies the migrations; then the second ones join their groups.
        for r in range(REPLICAS):
            await asyncio.gather(*(stack.procs[s][r].start() for s in SERVICES))
        yield stack
    finally:
        for ps in stack.procs.values():
            for p in ps:
                p.stop()
        for log in sorted(logs.glob("*.log")):
            lines = log.read_text(errors="replace").splitlines()
            errors = [line for line in lines if '"ERROR"' in line][-3:]
            # our own code's warnings and errors (the brokers' comings and goings fill aiokafka's)
            ours = [line for line in lines if any(f'"{level}"' in line for level in ("CRITICAL", "ERROR", "WARNING"))
                    and '"logger": "aiokafka' not in line][-8:]
            if errors or ours:
                print(f"\n[{log.stem} errors]", *dict.fromkeys(errors + ours), sep="\n  ")
        if not os.environ.get("KEEP_CLUSTER_LOGS"):
            shutil.rmtree(logs, ignore_errors=True)
        else:
            print(f"\n[cluster] service logs kept in {logs}")
