"""Quality gates (issue 10): ruff and mypy, configured in pyproject.toml, pass on the whole tree.

They run here so that the README's test command (`make test`) and CI fail on them; the failure
message is the tool's own report. The rule set is explained in docs/decisions/quality-gates.md.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=600)


@pytest.mark.timeout(600)
def test_ruff_finds_nothing():
    proc = _run("ruff", "check", ".", "--output-format", "concise")
    assert proc.returncode == 0, f"ruff check . failed:\n{proc.stdout}{proc.stderr}"


@pytest.mark.timeout(600)
def test_mypy_finds_nothing():
    proc = _run("mypy")  # files and strictness per package: [tool.mypy] in pyproject.toml
    assert proc.returncode == 0, f"mypy failed:\n{proc.stdout}{proc.stderr}"
