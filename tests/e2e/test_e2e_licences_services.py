"""SPEC 2.4 and 2.5 end to end: licences, optional features, services and their deadlines."""

from __future__ import annotations

from datetime import timedelta

import pytest

from cli.client import CliError
from contracts.events import LicenceActivatedData
from shared.clock import add_months, add_years
from tests.e2e.helpers import buy, eventually, ledger, now, of_kind, onboard, parse

pytestmark = pytest.mark.e2e


async def test_optional_feature_requires_the_basic_edition(stack, org_id):
    await onboard(stack.admin, org_id)
    with pytest.raises(CliError) as e:
        stack.admin.place_order(org_id, [{"sku": "SW-OPT", "months": 6, "feature": "advanced_viewer"}])
    assert (e.value.status, e.value.code, e.value.line) == (422, "BASIC_EDITION_REQUIRED", 0)
    with pytest.raises(CliError) as e:
        stack.admin.place_order(org_id, [{"sku": "SW-BASIC", "months": 6},
                                         {"sku": "SW-OPT", "months": 6, "feature": "teleportation"}])
    assert (e.value.code, e.value.line) == ("UNKNOWN_FEATURE", 1)
    with pytest.raises(CliError) as e:
        stack.admin.place_order(org_id, [{"sku": "SW-BASIC", "months": 121}])
    assert (e.value.code, e.value.line) == ("INVALID_DURATION", 0)


async def test_basic_edition_and_feature_in_one_order_enable_the_feature(stack, org_id):
    await onboard(stack.admin, org_id)
    order = await buy(stack.admin, org_id, [{"sku": "SW-BASIC", "months": 12},
                                            {"sku": "SW-OPT", "months": 6, "feature": "cloud_film"}])
    f = await eventually(lambda: stack.admin.features(org_id), lambda f: f["basic"]["active"])
    paid = parse(order["paid_at"])
    assert parse(f["basic"]["until"]) == add_months(paid, 12)
    assert f["features"]["cloud_film"]["enabled"] is True
    assert parse(f["features"]["cloud_film"]["until"]) == add_months(paid, 6)
    assert f["features"]["remote_teaching"]["enabled"] is False
    one = stack.admin.call("entitlement", "GET", f"/v1/orgs/{org_id}/features/cloud_film")
    assert one["enabled"] is True and one["feature"] == "cloud_film"


async def test_feature_is_disabled_when_basic_edition_has_lapsed(stack, org_id):
    await onboard(stack.admin, org_id)
    # Basic bought 2 months ago for 1 month (lapsed); the feature for 12 months in the same order.
    await buy(stack.admin, org_id, [{"sku": "SW-BASIC", "months": 1},
                                    {"sku": "SW-OPT", "months": 12, "feature": "data_statistics"}],
              paid_at=now() - timedelta(days=62))
    activated = await eventually(lambda: of_kind(ledger(stack.admin, org_id), LicenceActivatedData),
                                 lambda a: len(a) == 2)
    assert {a["feature"] for a in activated} == {"basic", "data_statistics"}
    f = stack.admin.features(org_id)
    assert f["basic"]["active"] is False
    assert f["features"]["data_statistics"]["enabled"] is False


async def test_licence_renewal_stacks_from_the_current_end(stack, org_id):
    await onboard(stack.admin, org_id)
    first = await buy(stack.admin, org_id, [{"sku": "SW-BASIC", "months": 12}])
    await eventually(lambda: stack.admin.features(org_id), lambda f: f["basic"]["active"])
    await buy(stack.admin, org_id, [{"sku": "SW-BASIC", "months": 6}])
    end = add_months(add_months(parse(first["paid_at"]), 12), 6)
    await eventually(lambda: stack.admin.features(org_id),
                     lambda f: f["basic"]["until"] and parse(f["basic"]["until"]) == end)


async def test_delivery_service_is_complete_when_accepted(stack, org_id):
    await onboard(stack.admin, org_id)
    order = await buy(stack.admin, org_id, [{"sku": "SVC-DELIVERY", "mode": "local"}])
    [svc] = await eventually(lambda: stack.admin.services(org_id), lambda s: len(s) == 1)
    assert svc["status"] == "awaiting_acceptance" and svc["mode"] == "local"
    assert parse(svc["accept_by"]) == add_years(parse(order["paid_at"]), 1)
    stack.admin.accept_service(org_id, svc["service_id"])
    [svc] = await eventually(lambda: stack.admin.services(org_id), lambda s: s[0]["status"] == "accepted")


async def test_service_not_accepted_within_a_year_expires(stack, org_id):
    await onboard(stack.admin, org_id)
    await buy(stack.admin, org_id, [{"sku": "SVC-SCHEDULED", "quantity": 5}], paid_at=now() - timedelta(days=366))
    [svc] = await eventually(lambda: stack.admin.services(org_id), lambda s: s and s[0]["status"] == "expired")
    with pytest.raises(CliError) as e:
        stack.admin.accept_service(org_id, svc["service_id"])
    assert e.value.status == 409


async def test_maintenance_subscription_runs_for_its_years_and_ends_by_itself(stack, org_id):
    await onboard(stack.admin, org_id)
    running = await buy(stack.admin, org_id, [{"sku": "SVC-MAINTENANCE", "years": 2}])
    await buy(stack.admin, org_id, [{"sku": "SVC-MAINTENANCE", "years": 1}], paid_at=now() - timedelta(days=370))
    services = await eventually(lambda: stack.admin.services(org_id),
                                lambda s: len(s) == 2 and {x["status"] for x in s} == {"active", "ended"})
    active = next(s for s in services if s["status"] == "active")
    assert active["order_id"] == running["order_id"]
    assert parse(active["ends_at"]) == add_years(parse(running["paid_at"]), 2)
