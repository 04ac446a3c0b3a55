"""Operations tooling for the chart and alert tests: helm and promtool, installed when missing.

A missing tool fails these tests (never skips them): helm is built by deploy/setup/tools.d/helm.sh
(pinned, idempotent); promtool comes from Debian's `prometheus` package (deploy/setup/prerequisites.txt),
installed here with apt-get when the tests run as root, else the failure names the command.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.infra import ROOT

HELM_SCRIPT = ROOT / "deploy" / "setup" / "tools.d" / "helm.sh"
KUBE_VERSION = "1.30.0"  # what `helm template` assumes of the cluster (the chart needs >= 1.25)


def _run(cmd: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def helm() -> str:
    r = _run([str(HELM_SCRIPT)], timeout=900)
    if r.returncode != 0 or not r.stdout.strip():
        pytest.fail(f"helm is missing and {HELM_SCRIPT} could not build it:\n{r.stderr[-3000:]}\n"
                    f"Install it with: {HELM_SCRIPT}", pytrace=False)
    return r.stdout.strip().splitlines()[-1]


def _find_promtool() -> str | None:
    return shutil.which("promtool") or next((p for p in ("/usr/bin/promtool",) if Path(p).exists()), None)


@pytest.fixture(scope="session")
def promtool() -> str:
    found = _find_promtool()
    if found is None and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "prometheus"]
        if subprocess.run(install, capture_output=True, env=env, timeout=600).returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], capture_output=True, env=env, timeout=600)
            subprocess.run(install, capture_output=True, env=env, timeout=600)
        found = _find_promtool()
    if found is None:
        pytest.fail("promtool is missing: install Debian's package with "
                    "`apt-get update && apt-get install -y prometheus` (deploy/setup/prerequisites.txt)",
                    pytrace=False)
    return found
