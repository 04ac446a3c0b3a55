"""A thin page helper over Selenium: sign in and out, fill forms, read data-metric values."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import Select, WebDriverWait

from shared import auth
from tests.support.stack import SECRET

WAIT_S = 30


class Browser:
    def __init__(self, driver: WebDriver, base: str, artifacts: Path, test: str):
        self.d, self.base, self.artifacts, self.test = driver, base, artifacts, re.sub(r"[^\w.-]", "_", test)
        self.n = 0

    # -- navigation
    def open(self, path: str) -> None:
        self.d.get(self.base + path)

    @property
    def path(self) -> str:
        return self.d.current_url.removeprefix(self.base)

    def shot(self, label: str) -> Path:
        self.artifacts.mkdir(parents=True, exist_ok=True)
        self.n += 1
        f = self.artifacts / f"{self.test}-{self.n:02d}-{label}.png"
        # the whole page, not only the window
        height = self.d.execute_script("return document.documentElement.scrollHeight") or 1000
        self.d.set_window_size(1280, min(max(int(height) + 200, 800), 5000))
        self.d.save_screenshot(str(f))
        self.d.set_window_size(1280, 1000)
        return f

    # -- elements
    def css(self, selector: str) -> WebElement:
        return self.d.find_element(By.CSS_SELECTOR, selector)

    def all(self, selector: str) -> list[WebElement]:
        return self.d.find_elements(By.CSS_SELECTOR, selector)

    def text(self, selector: str = "main") -> str:
        return self.css(selector).text

    def fill(self, selector: str, value: str) -> None:
        el = self.css(selector)
        el.clear()
        el.send_keys(value)

    def choose(self, selector: str, value: str) -> None:
        Select(self.css(selector)).select_by_value(value)

    def click(self, selector: str) -> None:
        self.css(selector).click()

    def wait(self, condition: Callable[[], Any], timeout: float = WAIT_S, what: str = "") -> Any:
        def attempt(_: Any) -> Any:
            try:
                return condition()
            except (NoSuchElementException, StaleElementReferenceException):
                return False
        return WebDriverWait(self.d, timeout, poll_frequency=0.2).until(attempt, what)

    def wait_reloading(self, condition: Callable[[], Any], timeout: float = WAIT_S, what: str = "") -> Any:
        """Reload the page until `condition` holds (a credit arrives asynchronously)."""
        def attempt() -> Any:
            if condition():
                return True
            self.d.refresh()
            return False
        return self.wait(attempt, timeout, what)

    # -- the console
    def sign_in(self, token: str) -> None:
        self.open("/login")
        self.css("#token").send_keys(token)
        self.click("main form button[type=submit]")
        self.wait(lambda: not self.path.startswith("/login"), what="signed in")

    def sign_in_org(self, org: str) -> None:
        self.sign_in(auth.mint(SECRET, "org", org))

    def sign_in_operator(self) -> str:
        """Sign in as finance (SPEC 7.4) when the services accept that role, else as admin; the role used.

        The console takes finance as an operator already; until shared/auth.py knows the role, the
        services refuse such a token (401) and the console says so at sign-in."""
        now = int(time.time())
        finance = jwt.encode({"role": "finance", "iat": now, "exp": now + 3600}, SECRET, algorithm="HS256")
        self.open("/login")
        self.css("#token").send_keys(finance)
        self.click("main form button[type=submit]")
        self.wait(lambda: not self.path.startswith("/login") or self.all("#login-error"), what="sign-in answer")
        if not self.path.startswith("/login"):
            return "finance"
        assert "refused" in self.text("#login-error")  # the services do not know the role yet
        self.sign_in(auth.mint(SECRET, "admin"))
        return "admin"

    def sign_out(self) -> None:
        self.click("header form[action='/logout'] button")
        self.wait(lambda: self.path.startswith("/login"), what="signed out")

    def metrics(self) -> dict[str, int]:
        return {el.get_attribute("data-metric"): int(el.text) for el in self.all("[data-metric]")}
