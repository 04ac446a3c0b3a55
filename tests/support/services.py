"""Run a service for a test: in-process under uvicorn (fast), or as a real subprocess (kill -9)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import uvicorn
from fastapi import FastAPI

from shared import auth
from tests.support.infra import ROOT, free_port

# Every test service gets a secret a production start would accept (SPEC 7.4: at least 32 bytes).
SECRET = "test-secret-0123456789abcdef0123456789abcdef"


@contextlib.asynccontextmanager
async def serve_in_process(app: FastAPI, port: int | None = None) -> AsyncIterator[str]:
    """Start `app` (its lifespan starts the consumers and relay); yield its base URL; stop it."""
    port = port or free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on"))
    task = asyncio.create_task(server.serve())
    deadline = time.monotonic() + 60
    while not server.started:
        if task.done():
            task.result()  # raises the start-up error
            raise RuntimeError("server exited during start-up")
        if time.monotonic() > deadline:
            raise RuntimeError("server did not start within 60 s")
        await asyncio.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        done, _ = await asyncio.wait([task], timeout=30)  # the service's stop is bounded at 20 s
        if not done:
            stacks = []
            for t in asyncio.all_tasks():
                frames = io.StringIO()
                t.print_stack(limit=8, file=frames)
                stacks.append(frames.getvalue())
            task.cancel()
            raise TimeoutError("the service did not stop within 30 s; its tasks:\n" + "\n".join(stacks))
        task.result()


class ServiceProcess:
    """`python -m services.<name>` in its own process group, so a test can kill -9 it."""

    def __init__(self, name: str, env: dict[str, str], log_dir: Path, *, label: str | None = None):
        self.name, self.env, self.log_dir = name, env, log_dir
        self.label = label or name  # names the log file (replicas of one service differ)
        self.port = int(env.get(f"AIMIS_{name.upper()}_PORT") or free_port())
        self.env[f"AIMIS_{name.upper()}_PORT"] = str(self.port)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, ready_timeout: float = 60.0) -> ServiceProcess:
        log = open(self.log_dir / f"{self.label}.log", "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", f"services.{self.name}"],
            cwd=ROOT, env={**os.environ, **self.env}, stdout=log, stderr=log, start_new_session=True,
        )
        deadline = time.monotonic() + ready_timeout
        async with httpx.AsyncClient() as c:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{self.label} exited with {self.proc.returncode}; see {log.name}")
                try:
                    if (await c.get(f"{self.url}/readyz", timeout=2)).status_code == 200:
                        return self
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self.label} not ready within {ready_timeout}s")
                await asyncio.sleep(0.2)

    def kill9(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill9()


def bearer(secret: str = SECRET, org_id: str | None = None, role: auth.Role | None = None) -> dict[str, str]:
    """Authorization header: admin when org_id is None, else an org token; or `role` (finance, platform)."""
    if role is not None and role != "org":
        token = auth.mint(secret, role)
    else:
        token = auth.mint(secret, "admin") if org_id is None else auth.mint(secret, "org", org_id)
    return {"Authorization": f"Bearer {token}"}
