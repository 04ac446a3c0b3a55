"""Repeated records of the noisy libraries are damped (shared/observability.py `Repeats`): a Kafka
outage made aiokafka log 13,000 lines a second per service."""

from __future__ import annotations

import io
import json
import logging

from shared.observability import JsonFormatter, Repeats


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def _logger(name: str, clock: Clock) -> tuple[logging.Logger, io.StringIO]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(Repeats(window_s=1.0, clock=clock))
    log = logging.getLogger(name)
    log.handlers[:] = [handler]
    log.propagate = False
    log.setLevel(logging.INFO)
    return log, out


def _lines(out: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_a_flood_from_aiokafka_becomes_one_line_a_second_with_the_count_dropped():
    clock = Clock()
    log, out = _logger("aiokafka.test-flood", clock)
    for i in range(5000):
        log.error("Unable connect to node with id %s: %s", 1, f"attempt {i}")
    assert len(_lines(out)) == 1
    clock.t += 1.0
    log.error("Unable connect to node with id %s: %s", 1, "again")
    first, second = _lines(out)
    assert "suppressed" not in first and second["suppressed"] == 4999
    assert second["msg"] == "Unable connect to node with id 1: again"


def test_different_messages_and_our_own_loggers_are_not_damped():
    clock = Clock()
    log, out = _logger("aiokafka.test-kinds", clock)
    log.error("Unable to update metadata from %s", [1])
    log.error("Failed fetch messages from %s: %s", 1, "closed")
    log.warning("Unable to update metadata from %s", [1])  # another level: another kind
    assert len(_lines(out)) == 3
    ours, ours_out = _logger("shared.test-ours", clock)
    for _ in range(100):
        ours.warning("outbox publish failed; retrying")
    assert len(_lines(ours_out)) == 100
