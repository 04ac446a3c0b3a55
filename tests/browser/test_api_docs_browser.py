"""`/docs` of every service in a real headless Chromium that can reach no other machine
(issue 15): the pages load only from the service itself and list every operation of its OpenAPI
document. Requests are read from Chromium's DevTools performance log (Network.requestWillBeSent),
so a request to anywhere else fails the test even though the resolver would have refused it."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.browser.conftest import ARTIFACTS, _chrome
from tests.support.stack import SERVICES, Stack

pytestmark = pytest.mark.e2e

WAIT_S = 30
NETWORK_SCHEMES = {"http", "https", "ws", "wss", "ftp"}


@pytest.fixture(scope="module")
def offline_driver() -> Iterator[Any]:
    d, profile = _chrome(offline=True)
    try:
        yield d
    finally:
        d.quit()  # type: ignore[attr-defined]
        shutil.rmtree(profile, ignore_errors=True)


def requested_urls(driver: Any) -> list[str]:
    """Every URL the page asked for since the last call (the log is drained on reading)."""
    urls = []
    for entry in driver.get_log("performance"):
        msg = json.loads(entry["message"])["message"]
        if msg["method"] == "Network.requestWillBeSent":
            urls.append(msg["params"]["request"]["url"])
    return urls


def foreign(urls: list[str], base: str) -> list[str]:
    """Requests over the network to anywhere but the service. The browser's own pages (such as
    chrome-untrusted://new-tab-page/ of some Chromium versions), data: and blob: never leave it."""
    host = urlsplit(base).netloc
    return [u for u in urls if urlsplit(u).scheme in NETWORK_SCHEMES and urlsplit(u).netloc != host]


def operations(stack: Stack, service: str) -> set[tuple[str, str]]:
    doc = httpx.get(stack.urls[service] + "/openapi.json", timeout=10).json()
    ops = {(m.upper(), p) for p, item in doc["paths"].items() for m in item if m != "parameters"}
    assert ops, f"{service} documents no operation"
    return ops


def shot(driver: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / f"api-docs-{name}.png"))


@pytest.mark.parametrize("service", SERVICES)
def test_swagger_ui_lists_every_operation_loading_nothing_from_outside(stack: Stack, offline_driver, service):
    base, d = stack.urls[service], offline_driver
    requested_urls(d)  # drain what earlier pages left
    d.get(base + "/docs")
    want = operations(stack, service)

    def listed(_: Any) -> set[tuple[str, str]] | None:
        found = {
            (b.find_element(By.CSS_SELECTOR, ".opblock-summary-method").text.strip(),
             b.find_element(By.CSS_SELECTOR, ".opblock-summary-path").get_attribute("data-path"))
            for b in d.find_elements(By.CSS_SELECTOR, ".opblock")
        }
        return found if found >= want else None

    try:
        WebDriverWait(d, WAIT_S).until(listed)
    finally:
        shot(d, f"swagger-{service}")
    assert "Failed to load" not in d.find_element(By.ID, "swagger-ui").text
    urls = requested_urls(d)
    assert any(u.endswith("/docs-assets/swagger-ui-bundle.js") for u in urls), urls
    assert any(u.endswith("/openapi.json") for u in urls), urls
    assert foreign(urls, base) == [], "requests that left the machine"


def test_there_is_no_redoc_page(stack: Stack):
    """ReDoc's bundle loads its logo from its vendor's CDN (shared/docs.py): not served."""
    assert httpx.get(stack.urls["order"] + "/redoc", timeout=10).status_code == 404


def test_the_console_publishes_no_api_pages(console: str):
    for path in ("/docs", "/redoc", "/openapi.json"):
        assert httpx.get(console + path, timeout=10).status_code == 404, path
