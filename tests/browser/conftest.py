"""The console as a fifth process on the session's stack, and one headless Chromium for all tests.

Debian's chromium and chromium-driver (deploy/setup/prerequisites.txt) driven by Selenium; the
driver and browser paths are given, so Selenium Manager never looks for (or downloads) anything.
Every test saves a screenshot under test-artifacts/browser/ (git-ignored).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.support.infra import ROOT
from tests.support.services import ServiceProcess
from tests.support.stack import SECRET, Stack

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
ARTIFACTS = ROOT / "test-artifacts" / "browser"


@pytest.fixture(scope="session")
async def console(stack: Stack) -> AsyncIterator[str]:
    """`python -m services.console` calling the stack's services; its base URL."""
    logs = Path(tempfile.mkdtemp(prefix="aimis-console-log-"))
    env = {f"AIMIS_{s.upper()}_URL": url for s, url in stack.urls.items()}
    env["AIMIS_AUTH_SECRET"] = SECRET  # not used by the console; keeps the environment like `make up`
    proc = ServiceProcess("console", env, logs)
    try:
        await proc.start()
        yield proc.url
    finally:
        proc.stop()
        log = logs / "console.log"
        if log.exists():
            print("\n[console log tail]", *log.read_text(errors="replace").splitlines()[-5:], sep="\n  ")
        shutil.rmtree(logs, ignore_errors=True)


def _chrome(javascript: bool = True, offline: bool = False) -> tuple[object, str]:
    """A headless Chromium. `offline`: every host name but localhost resolves to nothing (so a page
    can reach no other machine), and the DevTools performance log records every request it made."""
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.fail("browser tests need Debian's chromium and chromium-driver: `make setup` installs them "
                    "(deploy/setup/prerequisites.txt), or apt-get install -y chromium chromium-driver")
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager: never download
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="aimis-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    if not javascript:
        opts.add_experimental_option("prefs", {"profile.managed_default_content_settings.javascript": 2})
    if offline:
        opts.add_argument("--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost")
        opts.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
              "--disable-background-networking", "--disable-component-update", "--disable-sync",
              "--disable-dev-shm-usage", "--window-size=1280,1000", f"--user-data-dir={profile}"):
        opts.add_argument(a)
    d = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=opts)
    d.set_page_load_timeout(30)
    return d, profile


@pytest.fixture(scope="session")
def driver() -> Iterator[object]:
    d, profile = _chrome()
    try:
        yield d
    finally:
        d.quit()  # type: ignore[attr-defined]
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def browser_without_js(console: str, request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    """A second Chromium with JavaScript switched off: the core flows must still work."""
    from tests.browser.pages import Browser

    d, profile = _chrome(javascript=False)
    b = Browser(d, console, ARTIFACTS, request.node.name)  # type: ignore[arg-type]
    try:
        yield b
        b.shot("end")
    finally:
        d.quit()  # type: ignore[attr-defined]
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def browser(driver, console: str, request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    """The shared browser, signed out, on the console; a screenshot of the last page afterwards."""
    from tests.browser.pages import Browser

    b = Browser(driver, console, ARTIFACTS, request.node.name)
    b.open("/login")
    driver.delete_all_cookies()
    yield b
    b.shot("end")
