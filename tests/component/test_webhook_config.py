"""The payment webhook without AIMIS_PAYMENT_WEBHOOK_SECRET: 503 with Retry-After (the provider
retries until the operator configures it), before any body is read or any database is touched."""

from __future__ import annotations

import httpx

from services.order.app import create_app
from shared.config import Settings
from tests.support.services import SECRET


async def test_unconfigured_webhook_is_503_with_retry_after():
    app = create_app(Settings(auth_secret=SECRET, payment_webhook_secret=""))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        r = await c.post("/v1/payments/webhook", json={"event_id": "e"}, headers={"AIMIS-Signature": "t=1,v1=00"})
    assert r.status_code == 503 and r.headers["retry-after"] == "5"
    assert r.json()["error"]["code"] == "UNAVAILABLE" and "AIMIS_PAYMENT_WEBHOOK_SECRET" in r.json()["error"]["message"]
