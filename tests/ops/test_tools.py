"""deploy/setup/tools.d/helm.sh: standalone and idempotent (a second run builds nothing), and a clear
failure when Go is missing."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path

from tests.ops.conftest import HELM_SCRIPT


def test_helm_script_does_nothing_when_the_pinned_helm_is_there(helm: str) -> None:
    started = time.monotonic()
    r = subprocess.run([str(HELM_SCRIPT)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == helm
    assert time.monotonic() - started < 10  # no build
    version = subprocess.run([helm, "version", "--template", "{{.Version}}"], capture_output=True, text=True)
    pinned = re.search(r'AIMIS_HELM_VERSION:-(v[0-9.]+)', HELM_SCRIPT.read_text())
    assert pinned and version.stdout == pinned.group(1)


def test_helm_script_without_go_fails_naming_what_is_missing(tmp_path: Path) -> None:
    # A PATH with nothing on it (Debian's golang-go puts go in /usr/bin, so no system folder will do);
    # the script needs only bash's builtins before it looks for go.
    (tmp_path / "empty").mkdir()
    env = {"PATH": str(tmp_path / "empty"), "HOME": str(tmp_path), "AIMIS_CACHE": str(tmp_path / "cache")}
    bash = shutil.which("bash")
    assert bash is not None
    r = subprocess.run([bash, str(HELM_SCRIPT)], capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 1 and "Go is needed to build helm" in r.stderr
    assert not (tmp_path / "cache" / "bin" / "helm").exists()
