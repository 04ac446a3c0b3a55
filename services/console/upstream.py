"""Calls to the four services with the signed-in user's bearer token; errors in the SPEC 5.3 shape."""

from __future__ import annotations

from typing import Any

import httpx


class UpstreamError(Exception):
    """A service answered an error (or could not be reached: status 503, code UNAVAILABLE)."""

    def __init__(self, status: int, code: str, message: str, line: int | None = None, service: str = ""):
        super().__init__(f"{service}: {status} {code}: {message}")
        self.status, self.code, self.message, self.line, self.service = status, code, message, line, service


class Upstream:
    def __init__(self, urls: dict[str, str], timeout: float, transport: httpx.AsyncBaseTransport | None = None):
        self.urls = urls
        self.client = httpx.AsyncClient(timeout=timeout, transport=transport, follow_redirects=False)

    async def close(self) -> None:
        await self.client.aclose()

    async def raw(self, service: str, method: str, path: str, token: str | None, **kw: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        try:
            return await self.client.request(method, self.urls[service] + path, headers=headers, **kw)
        except httpx.HTTPError as e:
            raise UpstreamError(503, "UNAVAILABLE", f"{type(e).__name__}: {e}", service=service) from None

    async def call(self, service: str, method: str, path: str, token: str | None, **kw: Any) -> Any:
        r = await self.raw(service, method, path, token, **kw)
        if r.status_code >= 400:
            try:
                err = r.json()["error"]
                code, message, line = str(err["code"]), str(err.get("message", "")), err.get("line")
            except (ValueError, KeyError, TypeError):
                code, message, line = "HTTP_ERROR", r.text[:200], None
            raise UpstreamError(r.status_code, code, message, line if isinstance(line, int) else None, service)
        try:
            return r.json() if r.content else None
        except ValueError:
            raise UpstreamError(502, "BAD_GATEWAY", "the service answered something that is not JSON",
                                service=service) from None

    async def get(self, service: str, path: str, token: str | None, **params: Any) -> Any:
        return await self.call(service, "GET", path, token, params={k: v for k, v in params.items() if v is not None})
