"""The CLI reads `.run/env` (written by `make up`: addresses, AIMIS_ENV, the auth secret) for every
AIMIS_* variable not already set in the environment, so its tokens match the running stack."""

from __future__ import annotations

import os
from pathlib import Path

RUN_ENV = Path(__file__).resolve().parents[1] / ".run" / "env"


def load(path: Path | None = None) -> None:
    try:
        lines = (path or RUN_ENV).read_text().splitlines()
    except OSError:
        return
    for line in lines:
        key, sep, value = line.partition("=")
        if sep and key.startswith("AIMIS_") and key not in os.environ:
            os.environ[key] = value
