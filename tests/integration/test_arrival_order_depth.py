"""The arrival-order property (tests/component/test_arrival_order.py) at full depth: 500 examples.

The component tier runs the same property with 100 examples so that it stays a fast tier; this
stage of `make test` keeps the 500-example run. PostgreSQL only (the session's real server, a new
database); no broker is used. ARRIVAL_DEPTH_EXAMPLES sets another depth.
"""

from __future__ import annotations

import os

import pytest

from tests.component.test_arrival_order import check_arrival_order
from tests.support.infra import Infra

pytestmark = pytest.mark.integration

DEPTH = int(os.environ.get("ARRIVAL_DEPTH_EXAMPLES", "500"))


@pytest.mark.timeout(900)
def test_the_account_does_not_depend_on_arrival_order_500_examples(real_infra: Infra) -> None:
    check_arrival_order(real_infra.dsn, False, examples=DEPTH)
