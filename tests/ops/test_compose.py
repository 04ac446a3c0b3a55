"""docker-compose.yml and deploy/Dockerfile (the laptop path; no Docker engine here to run them):
every deployable of the repository (a `services/<name>/__main__.py`) is a compose service started
with `python -m services.<name>` on its default port with a health check, the image exposes each
port, and the console reaches each service by its compose name."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from services.console.settings import SERVICES as CONSOLE_UPSTREAMS
from services.console.settings import ConsoleSettings
from shared.config import Settings
from tests.support.infra import ROOT

DEPLOYABLES = sorted(p.parent.name for p in (ROOT / "services").glob("*/__main__.py"))


def _default_port(name: str) -> int:
    if name == "console":
        return int(ConsoleSettings.model_fields["console_port"].default)
    return int(Settings.model_fields[f"{name}_port"].default)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]


def test_the_deployables_are_found():
    assert {"order", "entitlement", "metering", "expiry", "console"} <= set(DEPLOYABLES)


@pytest.mark.parametrize("name", DEPLOYABLES)
def test_each_deployable_runs_in_compose_on_its_port(compose, name):
    assert name in compose, f"docker-compose.yml has no service {name}"
    svc, port = compose[name], _default_port(name)
    assert svc["command"] == ["python", "-m", f"services.{name}"]
    assert svc["build"]["dockerfile"] == "deploy/Dockerfile"
    assert f"{port}:{port}" in svc["ports"]
    assert svc["environment"]["AIMIS_HOST"] == "0.0.0.0"
    assert svc["environment"]["PORT"] == str(port)  # what the health check reads
    assert "/readyz" in " ".join(svc["healthcheck"]["test"])


def test_the_image_exposes_every_port():
    exposed = {int(p) for line in (ROOT / "deploy" / "Dockerfile").read_text().splitlines()
               if line.startswith("EXPOSE") for p in line.split()[1:]}
    assert {_default_port(n) for n in DEPLOYABLES} <= exposed


def test_the_console_reaches_each_service_by_its_compose_name(compose):
    env = compose["console"]["environment"]
    for upstream in CONSOLE_UPSTREAMS:
        assert env[f"AIMIS_{upstream.upper()}_URL"] == f"http://{upstream}:{_default_port(upstream)}"
        assert compose["console"]["depends_on"][upstream]["condition"] == "service_healthy"
