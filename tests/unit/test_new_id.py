"""Outgoing events get their ids from `new_id` (a third of `uuid.uuid4()`'s cost)."""

from __future__ import annotations

import uuid

from contracts.events import new_id


def test_new_ids_are_random_version_4_uuids() -> None:
    ids = [new_id() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    for i in ids:
        u = uuid.UUID(i)
        assert (u.version, u.variant, str(u)) == (4, uuid.RFC_4122, i)
