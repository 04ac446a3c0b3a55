"""Throwaway servers keep their data in memory where the machine has it (tests/support/infra.py
`scratch`; docs/decisions.md, "Throwaway servers in memory")."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.support import infra


def test_a_throwaway_server_s_folder_is_in_memory_where_the_machine_has_it() -> None:
    if not (os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK)):
        pytest.skip("this machine has no writable /dev/shm")
    if shutil.disk_usage("/dev/shm").free < infra.GIB:
        pytest.skip("this machine's /dev/shm has less than 1 GiB free")
    work = infra.scratch("aimis-scratch-test-", room=infra.GIB)
    try:
        assert work.parent == Path("/dev/shm") and work.name.startswith("aimis-scratch-test-")
        assert work.stat().st_mode & 0o777 == 0o755  # the postgres user reaches it when we run as root
    finally:
        shutil.rmtree(work)


def test_without_memory_to_write_to_it_goes_to_the_temporary_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    real_access = os.access
    monkeypatch.setattr(infra.os, "access", lambda p, mode: False if str(p) == "/dev/shm" else real_access(p, mode))
    work = infra.scratch("aimis-scratch-test-", room=0)
    try:
        assert work.parent == Path(tempfile.gettempdir())
        assert work.stat().st_mode & 0o777 == 0o755
    finally:
        shutil.rmtree(work)


def test_a_small_dev_shm_is_not_used() -> None:
    """A container's /dev/shm (64 MB) would fill under a broker's logs: the data goes to disk."""
    if not os.path.isdir("/dev/shm"):
        pytest.skip("this machine has no /dev/shm")
    work = infra.scratch("aimis-scratch-test-", room=shutil.disk_usage("/dev/shm").free + infra.GIB)
    try:
        assert work.parent == Path(tempfile.gettempdir())
    finally:
        shutil.rmtree(work)
