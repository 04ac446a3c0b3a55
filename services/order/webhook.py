"""POST /v1/payments/webhook: online payments from the payment provider (SPEC 7.4).

The provider signs `"<t>.<raw body>"` with HMAC-SHA256 under AIMIS_PAYMENT_WEBHOOK_SECRET and sends
`AIMIS-Signature: t=<unix seconds>,v1=<hex>` (several v1 entries allowed, for a secret rotation).
A wrong signature, or one more than 300 s away from now, is 401. A verified event pays the order
through the very code path of the manual payment (`api.pay_order`); its event id is then recorded,
so the same event again answers 200 with the order and changes nothing.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from fastapi import APIRouter, Request
from pydantic import ValidationError

from contracts.http import ErrorBody, ErrorCode, OrderResponse, PaymentRequest, PaymentWebhookEvent
from services.order import api, store
from shared import unavailable
from shared.auth import Principal
from shared.errors import ApiError

router = APIRouter(tags=["payments"])
SIGNATURE_HEADER = "AIMIS-Signature"
TOLERANCE_S = 300
# The provider acts with the authority of finance, for exactly one verified payment.
PROVIDER = Principal("finance", None)


def sign(secret: str, t: int, body: bytes) -> str:
    return hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()


def signature_header(secret: str, t: int, body: bytes) -> str:
    return f"t={t},v1={sign(secret, t, body)}"


def _unauthorized(message: str) -> ApiError:
    return ApiError(ErrorCode.UNAUTHORIZED, message)


def verify(secret: str, header: str | None, body: bytes, now_s: float) -> None:
    """Raise 401 unless `header` carries a v1 signature of `body` made within TOLERANCE_S of now."""
    if not header:
        raise _unauthorized(f"missing {SIGNATURE_HEADER} header")
    t: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t" and value.isdigit() and len(value) <= 12:
            t = int(value)
        elif key == "v1":
            candidates.append(value)
    if t is None or not candidates:
        raise _unauthorized(f"{SIGNATURE_HEADER} must be t=<unix seconds>,v1=<hex HMAC-SHA256>")
    if abs(now_s - t) > TOLERANCE_S:
        raise _unauthorized(f"signature timestamp is more than {TOLERANCE_S} s away from now")
    expected = sign(secret, t, body).encode()
    # compare_digest on every candidate (no early exit on the first match either)
    matches = [hmac.compare_digest(expected, c.encode("ascii", "replace")) for c in candidates]
    if not any(matches):
        raise _unauthorized("signature does not match")


_OPENAPI = {  # the body is read raw (the signature covers its bytes), so describe it here
    "parameters": [{"in": "header", "name": SIGNATURE_HEADER, "required": True, "schema": {"type": "string"},
                    "description": "t=<unix seconds>,v1=<hex HMAC-SHA256 of '<t>.<raw body>'>"}],
    "requestBody": {"required": True, "content": {"application/json": {
        "schema": PaymentWebhookEvent.model_json_schema(ref_template="#/components/schemas/{model}")}}},
}


@router.post(
    "/v1/payments/webhook", response_model=OrderResponse, openapi_extra=_OPENAPI,
    responses={c: {"model": ErrorBody} for c in (400, 401, 404, 409, 422, 503)},
    summary="A payment reported by the payment provider (signed); the same event again changes nothing",
)
async def payment_webhook(request: Request) -> Any:
    rt = request.app.state.runtime
    secret = rt.settings.payment_webhook_secret
    if not secret:  # 503, so the provider retries until the operator configures it (a 4xx: it gives up)
        return unavailable.response(getattr(request.state, "request_id", None),
                                    "the payment webhook (AIMIS_PAYMENT_WEBHOOK_SECRET is not set)")
    body = await request.body()
    verify(secret, request.headers.get(SIGNATURE_HEADER), body, rt.clock.now().timestamp())
    try:
        event = PaymentWebhookEvent.model_validate_json(body)
    except ValidationError as e:
        raise ApiError(ErrorCode.VALIDATION_ERROR, f"not a payment event: {e.errors()[0]['msg']}") from None
    async with rt.pool.acquire() as conn:
        seen = await store.webhook_event_order(conn, event.event_id)
        if seen is not None:
            order = await store.get_order(conn, seen)
            assert order is not None
            return api._view(order)
    paid = await api.pay_order(
        event.order_id, PaymentRequest(payment_ref=event.payment_ref, amount=event.amount), PROVIDER, request
    )
    async with rt.pool.acquire() as conn:
        await store.record_webhook_event(conn, event.event_id, event.order_id, event.amount,
                                         event.payment_ref, event.paid_at, rt.clock.now())
    return paid
