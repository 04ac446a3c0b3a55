"""`ErrorCode` carries its HTTP status (SPEC 5.3); `ApiError` takes it from the code."""

from __future__ import annotations

import pytest

from contracts.http import ErrorCode
from shared.errors import ApiError

CONFLICTS = {"ORDER_ID_CONFLICT", "ORDER_NOT_PAYABLE", "ORDER_NOT_CANCELLABLE", "PAYMENT_CONFLICT",
             "SERVICE_NOT_ACCEPTABLE"}
ORDER_RULES = {"AGREEMENT_REQUIRED", "QUANTITY_BELOW_MINIMUM", "QUANTITY_NOT_MULTIPLE", "QUANTITY_TOO_LARGE",
               "INVALID_STORAGE_YEARS", "INVALID_DURATION", "INVALID_MODE", "UNKNOWN_SKU", "UNKNOWN_FEATURE",
               "BASIC_EDITION_REQUIRED", "OFFLINE_ONLY_PRODUCT", "AMOUNT_MISMATCH", "PAID_AT_IN_FUTURE"}


def test_every_code_has_a_spec_status():
    # SPEC 5.3's statuses, 7.1's 413 and 500, 7.5's 503
    assert {c.status for c in ErrorCode} <= {400, 401, 403, 404, 405, 409, 413, 422, 500, 503}


@pytest.mark.parametrize("code,status", [
    ("VALIDATION_ERROR", 400), ("TOO_MANY_EVENTS", 400), ("UNAUTHORIZED", 401), ("FORBIDDEN", 403),
    ("NOT_FOUND", 404), *((c, 409) for c in sorted(CONFLICTS)), *((c, 422) for c in sorted(ORDER_RULES)),
])
def test_status_of_each_code_is_the_one_the_api_answered_before(code, status):
    assert ErrorCode(code).status == status
    assert ApiError(ErrorCode(code), "x").status == status


def test_codes_are_their_own_strings():
    assert ErrorCode.PAYMENT_CONFLICT == "PAYMENT_CONFLICT" and ErrorCode("NOT_FOUND") is ErrorCode.NOT_FOUND
    assert f"{ErrorCode.UNKNOWN_SKU}" == "UNKNOWN_SKU"


def test_error_body_shape_is_unchanged():
    assert ApiError(ErrorCode.UNKNOWN_SKU, "unknown sku 'X'", line=2).body() == {
        "error": {"code": "UNKNOWN_SKU", "message": "unknown sku 'X'", "line": 2}}
    items = [{"index": 0, "id": "e1", "code": "MALFORMED", "message": "m"}]
    assert ApiError(ErrorCode.VALIDATION_ERROR, "bad", items=items).body() == {
        "error": {"code": "VALIDATION_ERROR", "message": "bad", "items": items}}
