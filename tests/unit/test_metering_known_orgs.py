"""Metering reads an organisation's agreement from known_orgs once (issue 13): an agreement once
recorded stays recorded, so a batch whose organisations are all known asks nothing of PostgreSQL;
unknown ones are asked for every time (they may be recorded since)."""

from __future__ import annotations

from typing import Any

import pytest

from services.metering import handlers, store


@pytest.fixture
def table(monkeypatch: pytest.MonkeyPatch) -> tuple[set[str], list[set[str]]]:
    rows: set[str] = {"a", "b"}
    asked: list[set[str]] = []

    async def known_orgs(pool: Any, orgs: set[str]) -> set[str]:
        asked.append(set(orgs))
        return orgs & rows

    monkeypatch.setattr(store, "known_orgs", known_orgs)
    return rows, asked


async def test_known_organisations_are_read_once(table: tuple[set[str], list[set[str]]]) -> None:
    rows, asked = table
    catch_up = handlers.OrdersCatchUp(rt=None)  # type: ignore[arg-type]  # no Kafka on this path
    assert await catch_up.settled_known_orgs(None, {"a"}, wait_s=0) == {"a"}
    assert await catch_up.settled_known_orgs(None, {"a"}, wait_s=0) == {"a"}
    assert await catch_up.settled_known_orgs(None, {"a", "b"}, wait_s=0) == {"a", "b"}
    assert asked == [{"a"}, {"b"}]  # only what was not known yet


async def test_an_unknown_organisation_is_asked_for_again(table: tuple[set[str], list[set[str]]],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    rows, asked = table
    catch_up = handlers.OrdersCatchUp(rt=None)  # type: ignore[arg-type]
    catch_up.ready.set()

    async def caught_up(timeout_s: float, poll_s: float = 0.02) -> bool:
        return True

    monkeypatch.setattr(catch_up, "read_up_to_now", caught_up)
    assert await catch_up.settled_known_orgs(None, {"a", "c"}, wait_s=0) == {"a"}
    rows.add("c")  # its agreement is read meanwhile
    assert await catch_up.settled_known_orgs(None, {"a", "c"}, wait_s=0) == {"a", "c"}
    assert await catch_up.settled_known_orgs(None, {"c"}, wait_s=0) == {"c"}
    assert asked == [{"a", "c"}, {"c"}, {"c"}]


async def test_the_memory_is_bounded(table: tuple[set[str], list[set[str]]], monkeypatch: pytest.MonkeyPatch) -> None:
    rows, asked = table
    rows.add("c")
    monkeypatch.setattr(handlers, "MAX_KNOWN", 2)
    catch_up = handlers.OrdersCatchUp(rt=None)  # type: ignore[arg-type]
    for org in ("a", "b", "c", "a"):
        assert await catch_up.settled_known_orgs(None, {org}, wait_s=0) == {org}
    assert asked == [{"a"}, {"b"}, {"c"}, {"a"}]  # a third one made room: "a" is read again
    assert catch_up.known == {"a", "c"}


async def test_http_ingestion_asks_the_database_every_time(table: tuple[set[str], list[set[str]]]) -> None:
    """POST /v1/usage answers 503 when PostgreSQL is down (SPEC 7.5): it does not answer from memory."""
    _, asked = table
    catch_up = handlers.OrdersCatchUp(rt=None)  # type: ignore[arg-type]
    for _ in range(2):
        assert await catch_up.settled_known_orgs(None, {"a"}, wait_s=0, remembered=False) == {"a"}
    assert asked == [{"a"}, {"a"}]
    assert await catch_up.settled_known_orgs(None, {"a"}, wait_s=0) == {"a"}  # the consumer's: from memory
    assert asked == [{"a"}, {"a"}]
