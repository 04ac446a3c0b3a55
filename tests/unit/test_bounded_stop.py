"""A service's stop ends within its bound whatever hangs (an orchestrator kills a pod that takes
longer): the step that overran is named in the log, and a pool that would not close is terminated."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import pytest

from shared.config import Settings
from shared.service import Runtime


def _runtime() -> Runtime:
    return Runtime("stopping", Path("."), settings=Settings())


async def _forever(_rt: Runtime) -> None:
    await asyncio.Event().wait()


async def test_a_hook_that_never_ends_is_left_behind_and_named(caplog: pytest.LogCaptureFixture) -> None:
    rt = _runtime()
    rt.on_stop.append(_forever)
    finished = []

    async def after(_rt: Runtime) -> None:  # runs before the hanging one (hooks run in reverse)
        finished.append(True)

    rt.on_stop.append(after)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING):
        await asyncio.wait_for(rt.stop(within_s=0.5), timeout=10)
    assert time.monotonic() - started < 3
    assert finished == [True]
    assert "stopping a stop hook took longer" in caplog.text


class _StuckPool:
    """A pool whose graceful close waits for a connection that is never released."""

    def __init__(self) -> None:
        self.terminated = False

    async def close(self) -> None:
        await asyncio.Event().wait()

    def terminate(self) -> None:
        self.terminated = True


async def test_a_pool_that_does_not_close_in_time_is_terminated(caplog: pytest.LogCaptureFixture) -> None:
    rt = _runtime()
    pool = _StuckPool()
    rt._pool = pool  # type: ignore[assignment]  # noqa: SLF001
    with caplog.at_level(logging.WARNING):
        await asyncio.wait_for(rt.stop(within_s=0.5), timeout=10)
    assert pool.terminated
    assert "stopping the database pool took longer" in caplog.text
    assert rt._pool is None  # noqa: SLF001


async def test_a_failing_step_does_not_stop_the_others(caplog: pytest.LogCaptureFixture) -> None:
    rt = _runtime()

    async def broken(_rt: Runtime) -> None:
        raise RuntimeError("hook broke")

    rt.on_stop.append(broken)
    pool = _StuckPool()
    rt._pool = pool  # type: ignore[assignment]  # noqa: SLF001
    with caplog.at_level(logging.WARNING):
        await asyncio.wait_for(rt.stop(within_s=0.5), timeout=10)
    assert "stopping a stop hook failed: RuntimeError('hook broke')" in caplog.text
    assert pool.terminated
