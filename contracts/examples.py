"""Examples in the published documents: the OpenAPI document of each service (its component
schemas, `examples`) and the AsyncAPI document (message `examples`). tests/contracts validates every
one against its JSON Schema and parses it with its model, so an example cannot drift from the
contract it illustrates."""

from __future__ import annotations

from typing import Any

ORG = "hosp-0042"

# component schema name (the model's class name in contracts.http) -> examples
HTTP: dict[str, list[dict[str, Any]]] = {
    "AgreementRequest": [{"agreement_ref": "AGR-2026-0042", "signed_at": "2026-10-01T09:00:00Z"}],
    "PlaceOrderRequest": [
        {"order_id": "po-2026-0042-01", "org_id": ORG,
         "lines": [{"sku": "CI-QTY", "quantity": 10000, "storage_years": 5},
                   {"sku": "SW-BASIC", "months": 12}]},
        {"org_id": ORG, "lines": [{"sku": "AI-QTY", "quantity": 1000}]},
    ],
    "PaymentRequest": [{"payment_ref": "wire-20261002-17", "amount": "1200.00"}],
    "OrderResponse": [
        {"order_id": "po-2026-0042-02", "org_id": ORG, "status": "placed",
         "lines": [{"line": 0, "sku": "AI-QTY", "quantity": 1000, "price": "1200.00"}],
         "total": "1200.00", "price_book_version": "2026-01", "placed_at": "2026-10-02T08:15:00Z"},
    ],
    "LedgerEntry": [
        {"id": "0b9d6c9e-3a1f-4c53-9b0e-6f1f0f6f1a01", "type": "aimis.ledger.usage_deducted",
         "time": "2026-10-03T10:00:02Z", "resource": "cloud_inspection",
         "data": {"org_id": ORG, "usage_id": "u-8812", "resource": "cloud_inspection", "quantity": 1,
                  "occurred_at": "2026-10-03T10:00:00Z",
                  "allocations": [{"lot_id": "po-2026-0042-01:0", "quantity": 1}], "arrears_quantity": 0}},
    ],
    "IngestResponse": [{"accepted": ["u-8812", "u-8813"]}],
    "ScheduleItem": [
        {"kind": "lot", "ref_id": "po-2026-0042-01:0", "expires_at": "2027-10-02T08:20:00Z",
         "due_at": "2027-10-02T08:20:00Z", "remaining": 9999, "status": "scheduled"},
    ],
    "ErrorBody": [{"error": {"code": "FORBIDDEN", "message": "the token is for another organisation"}}],
}

# event type -> examples of the whole CloudEvent (structured mode)
EVENTS: dict[str, list[dict[str, Any]]] = {
    "aimis.usage.cloud_inspection": [
        {"specversion": "1.0", "id": "u-8812", "source": "/imaging/site-7", "type": "aimis.usage.cloud_inspection",
         "subject": ORG, "time": "2026-10-03T10:00:00Z", "datacontenttype": "application/json",
         "data": {"inspection_id": "ins-55120", "quantity": 1, "site_id": "site-7"}},
    ],
    "aimis.usage.ai_review": [
        {"specversion": "1.0", "id": "u-8813", "source": "/imaging/ai", "type": "aimis.usage.ai_review",
         "subject": ORG, "time": "2026-10-03T10:05:00Z",
         "data": {"inspection_id": "ins-55120", "channel": "online"}},
    ],
    "aimis.ledger.usage_deducted": [
        {"specversion": "1.0", "id": "0b9d6c9e-3a1f-4c53-9b0e-6f1f0f6f1a01", "source": "/aimis/entitlement",
         "type": "aimis.ledger.usage_deducted", "subject": ORG, "time": "2026-10-03T10:00:02Z",
         "datacontenttype": "application/json",
         "data": HTTP["LedgerEntry"][0]["data"]},
    ],
}


def add_to_openapi(doc: dict[str, Any]) -> dict[str, Any]:
    """Put the examples of HTTP into the component schemas of an OpenAPI document (in place)."""
    schemas = doc.get("components", {}).get("schemas", {})
    for name, examples in HTTP.items():
        if name in schemas:
            schemas[name]["examples"] = examples
    return doc
