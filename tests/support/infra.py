"""Real Kafka and PostgreSQL for tests.

1. AIMIS_KAFKA_BOOTSTRAP / AIMIS_DATABASE_URL set: use them.
2. else a Docker engine answers: testcontainers (apache/kafka, postgres).
3. else: deploy/local (Kafka from Maven Central jars, PostgreSQL from the machine's binaries) on
   free ports in a temporary folder (in memory where the machine has it: `scratch`), stopped by
   pid at the end.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LOCAL = ROOT / "deploy" / "local"


@dataclass
class Infra:
    bootstrap: str
    dsn: str
    how: str
    # deploy/local only: stop and start the broker / the database in place (same data, same port)
    restart_kafka: Callable[[], None] | None = None
    restart_postgres: Callable[[], None] | None = None
    # the two halves, for tests that act while a dependency is down (SPEC 7.5)
    stop_kafka: Callable[[], None] | None = None
    start_kafka: Callable[[], None] | None = None
    stop_postgres: Callable[[], None] | None = None
    start_postgres: Callable[[], None] | None = None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _docker_answers() -> bool:
    if not shutil.which("docker"):
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=5).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


GIB = 1 << 30
# The room a throwaway server's data may take: `make bench`'s broker and database together peaked at
# 1.97 GiB (`du` every 2 s through a run), twice that; the component tier's database alone.
BROKER_AND_DATABASE, DATABASE = 4 * GIB, 1 * GIB


def scratch(prefix: str, room: int) -> Path:
    """A new directory for a throwaway server's data, in memory where the machine has it (/dev/shm
    with `room` bytes free): these servers are removed whole afterwards, so nothing in them needs to
    survive the machine, and on a disk they waited on its writeback: the page cache flushed every
    30 s (the kernel's dirty_expire_centisecs), hundreds of MB at once, and the broker's appends and
    the database's commits stalled 200-300 ms behind it (docs/decisions.md, "Throwaway servers in
    memory"). A process restart or kill -9 of the server keeps the data, as on a disk. Where /dev/shm
    is small (a container's 64 MB), the data goes to the temporary folder, as before."""
    shm = Path("/dev/shm")
    memory = None
    if shm.is_dir() and os.access(shm, os.W_OK) and shutil.disk_usage(shm).free >= room:
        memory = str(shm)
    work = Path(tempfile.mkdtemp(prefix=prefix, dir=memory))
    os.chmod(work, 0o755)
    return work


@contextlib.contextmanager
def local_infra() -> Iterator[Infra]:
    """A private broker and database (deploy/local) on free ports, whatever the session uses."""
    with _local() as i:
        yield i


@contextlib.contextmanager
def _local() -> Iterator[Infra]:
    work = scratch("aimis-test-", room=BROKER_AND_DATABASE)
    kport, cport, pport = free_port(), free_port(), free_port()
    kdir, pdir = work / "kafka", work / "pg"
    kdir.mkdir()
    try:
        subprocess.run([str(LOCAL / "kafka.sh"), "start", str(kdir), str(kport), str(cport)], check=True)
        subprocess.run([str(LOCAL / "postgres.sh"), "start", str(pdir), str(pport)], check=True)
        bootstrap = f"127.0.0.1:{kport}"
        wait = [str(ROOT / ".venv/bin/python"), str(LOCAL / "wait_kafka.py"), bootstrap, "90"]
        subprocess.run(wait, check=True)

        def stop_kafka() -> None:
            subprocess.run([str(LOCAL / "kafka.sh"), "stop", str(kdir)], check=True)

        def start_kafka() -> None:
            subprocess.run([str(LOCAL / "kafka.sh"), "start", str(kdir), str(kport), str(cport)], check=True)
            subprocess.run(wait, check=True)

        def stop_postgres() -> None:
            subprocess.run([str(LOCAL / "postgres.sh"), "stop", str(pdir)], check=True)

        def start_postgres() -> None:
            subprocess.run([str(LOCAL / "postgres.sh"), "start", str(pdir), str(pport)], check=True)

        def restart_kafka() -> None:
            stop_kafka()
            start_kafka()

        def restart_postgres() -> None:
            stop_postgres()
            start_postgres()

        where = "deploy/local, data in memory" if str(work).startswith("/dev/shm/") else "deploy/local, data on disk"
        yield Infra(bootstrap, f"postgresql://postgres@127.0.0.1:{pport}/aimis", where,
                    restart_kafka, restart_postgres, stop_kafka, start_kafka, stop_postgres, start_postgres)
    finally:
        subprocess.run([str(LOCAL / "kafka.sh"), "stop", str(kdir)], check=False)
        subprocess.run([str(LOCAL / "postgres.sh"), "stop", str(pdir)], check=False)
        shutil.rmtree(work, ignore_errors=True)


@contextlib.contextmanager
def _containers() -> Iterator[Infra]:
    from testcontainers.kafka import KafkaContainer
    from testcontainers.postgres import PostgresContainer

    with KafkaContainer("apache/kafka:4.1.1").with_kraft() as k, PostgresContainer(
        "postgres:16", username="postgres", password="postgres", dbname="aimis"
    ) as p:
        dsn = p.get_connection_url().replace("postgresql+psycopg2://", "postgresql://")
        yield Infra(k.get_bootstrap_server(), dsn, "testcontainers")


@contextlib.contextmanager
def postgres() -> Iterator[tuple[str, bool]]:
    """PostgreSQL only (the component tier): AIMIS_DATABASE_URL, a container, or deploy/local.
    Yields (dsn, throwaway): a throwaway server is removed whole afterwards."""
    if env := os.environ.get("AIMIS_DATABASE_URL"):
        yield env, False
    elif _docker_answers():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:16", username="postgres", password="postgres", dbname="aimis") as p:
            yield p.get_connection_url().replace("postgresql+psycopg2://", "postgresql://"), True
    else:
        work = scratch("aimis-pg-", room=DATABASE)
        port = free_port()
        try:
            subprocess.run([str(LOCAL / "postgres.sh"), "start", str(work / "pg"), str(port)], check=True)
            yield f"postgresql://postgres@127.0.0.1:{port}/aimis", True
        finally:
            _stop_now(work / "pg")
            shutil.rmtree(work, ignore_errors=True)


def _exited(pid: int) -> bool:
    """Gone, or a zombie: it has exited and only waits to be reaped by whoever adopted it (in a
    container, PID 1 may take seconds to do that; the data directory is free at once)."""
    if not os.path.isdir("/proc/self"):  # not Linux: ask the process table (a zombie counts as alive)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def _stop_now(pg: Path, wait_s: float = 15.0) -> None:
    """Stop a throwaway cluster without its shutdown checkpoint (SIGQUIT to its postmaster: an
    immediate shutdown; the data is deleted next), else the ordinary way."""
    try:
        pid = int((pg / "data" / "postmaster.pid").read_text().split()[0])
        os.kill(pid, signal.SIGQUIT)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if _exited(pid):
                return
            time.sleep(0.02)
    except (OSError, ValueError, IndexError):
        return  # never started
    subprocess.run([str(LOCAL / "postgres.sh"), "stop", str(pg)], check=False)


@contextlib.contextmanager
def infra() -> Iterator[Infra]:
    env_k, env_d = os.environ.get("AIMIS_KAFKA_BOOTSTRAP"), os.environ.get("AIMIS_DATABASE_URL")
    if env_k and env_d:
        yield Infra(env_k, env_d, "environment")
    elif _docker_answers():
        with _containers() as i:
            yield i
    else:
        with _local() as i:
            yield i
