"""A small HTTP client for the four services, used by the CLI, the demo and the e2e tests."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from shared import auth
from shared.config import Settings


class CliError(Exception):
    """One readable line: `CODE: message`."""

    def __init__(self, status: int, code: str, message: str, line: int | None = None):
        where = f" (line {line})" if line is not None else ""
        http = f" [HTTP {status}]" if status >= 100 else ""
        super().__init__(f"{code}: {message}{where}{http}")
        self.status, self.code, self.message, self.line = status, code, message, line


def service_urls(settings: Settings | None = None) -> dict[str, str]:
    s = settings or Settings()
    return {
        name: os.environ.get(f"AIMIS_{name.upper()}_URL") or f"http://127.0.0.1:{s.port_of(name)}"
        for name in ("order", "entitlement", "metering", "expiry")
    }


@dataclass
class Api:
    token: str
    urls: dict[str, str]
    timeout: float = 30.0

    @classmethod
    def admin(cls, settings: Settings | None = None) -> Api:
        s = settings or Settings()
        return cls(auth.mint(s.auth_secret, "admin"), service_urls(s))

    @classmethod
    def for_org(cls, org_id: str, settings: Settings | None = None) -> Api:
        s = settings or Settings()
        return cls(auth.mint(s.auth_secret, "org", org_id), service_urls(s))

    def call(self, service: str, method: str, path: str, **kw: Any) -> Any:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        try:
            r = httpx.request(method, self.urls[service] + path, headers=headers, timeout=self.timeout, **kw)
        except httpx.HTTPError as e:
            raise CliError(0, "UNREACHABLE", f"{service} at {self.urls[service]}: {e}") from None
        if r.status_code >= 400:
            try:
                err = r.json()["error"]
                raise CliError(r.status_code, err["code"], err["message"], err.get("line"))
            except (ValueError, KeyError, TypeError):
                raise CliError(r.status_code, "HTTP_ERROR", r.text[:200]) from None
        return r.json() if r.content else None

    # -- order
    def record_agreement(self, org_id: str, ref: str, signed_at: str) -> Any:
        return self.call("order", "PUT", f"/v1/admin/orgs/{org_id}/agreement",
                         json={"agreement_ref": ref, "signed_at": signed_at})

    def place_order(self, org_id: str, lines: list[dict[str, Any]], order_id: str | None = None) -> Any:
        body: dict[str, Any] = {"org_id": org_id, "lines": lines}
        if order_id:
            body["order_id"] = order_id
        return self.call("order", "POST", "/v1/orders", json=body)

    def pay(self, order_id: str, amount: str, payment_ref: str) -> Any:
        return self.call("order", "POST", f"/v1/orders/{quote(order_id, safe='')}/payment",
                         json={"payment_ref": payment_ref, "amount": amount})

    def import_order(
        self, order_id: str, org_id: str, lines: list[dict[str, Any]], paid_at: str, payment_ref: str
    ) -> Any:
        return self.call("order", "POST", "/v1/admin/orders/import", json={
            "order_id": order_id, "org_id": org_id, "lines": lines, "paid_at": paid_at, "payment_ref": payment_ref})

    def order(self, order_id: str) -> Any:
        return self.call("order", "GET", f"/v1/orders/{quote(order_id, safe='')}")

    # -- entitlement
    def balances(self, org_id: str) -> Any:
        return self.call("entitlement", "GET", f"/v1/orgs/{org_id}/balances")

    def ledger(self, org_id: str, after: str | None = None, limit: int = 100, resource: str | None = None) -> Any:
        params: dict[str, Any] = {"limit": limit}
        if after:
            params["after"] = after
        if resource:
            params["resource"] = resource
        return self.call("entitlement", "GET", f"/v1/orgs/{org_id}/ledger", params=params)

    def ledger_all(self, org_id: str, resource: str | None = None) -> list[dict[str, Any]]:
        """Every ledger entry of the org (oldest first), following the cursor."""
        entries: list[dict[str, Any]] = []
        after = None
        while True:
            page = self.ledger(org_id, after=after, limit=500, resource=resource)
            entries += page["entries"]
            if not page.get("next"):
                return entries
            after = page["next"]

    def features(self, org_id: str) -> Any:
        return self.call("entitlement", "GET", f"/v1/orgs/{org_id}/features")

    def services(self, org_id: str) -> Any:
        return self.call("entitlement", "GET", f"/v1/orgs/{org_id}/services")

    def accept_service(self, org_id: str, service_id: str) -> Any:
        return self.call("entitlement", "POST", f"/v1/orgs/{org_id}/services/{quote(service_id, safe='')}/acceptance")

    def allowance(self, org_id: str) -> Any:
        return self.call("entitlement", "GET", f"/v1/orgs/{org_id}/ai-review/allowance")

    # -- metering
    def send_usage(self, events: list[dict[str, Any]]) -> Any:
        return self.call("metering", "POST", "/v1/usage", json=events)
