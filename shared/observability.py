"""Structured logging, Prometheus metrics, and /healthz /readyz /metrics routes."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest

MESSAGES = Counter(
    "aimis_messages_total", "Kafka messages handled", ["service", "topic", "outcome"]
)
OUTBOX_PUBLISHED = Counter("aimis_outbox_published_total", "Outbox rows published", ["schema"])
BATCH_SECONDS = Histogram(
    "aimis_batch_seconds", "Time to process one consumed batch", ["service", "topic"]
)
HTTP_REQUESTS = Counter("aimis_http_requests_total", "HTTP requests", ["service", "status"])


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for k in ("service", "org_id", "topic", "event_id", "reason", "suppressed"):
            if hasattr(record, k):
                out[k] = getattr(record, k)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


NOISY = ("aiokafka", "kafka", "faststream")  # third-party loggers: WARNING and up, repeats damped


class Repeats(logging.Filter):
    """Lets one record of each kind (logger, level, message template) through per `window_s` from
    the NOISY libraries; the next one through carries how many were dropped meanwhile
    (`suppressed`). While Kafka is down aiokafka logs its failed metadata requests in a tight loop:
    13,000 lines a second per service (330,000 in a one-minute outage), a disk filled by one
    outage. Our own loggers are never damped."""

    def __init__(self, window_s: float = 1.0, clock: Callable[[], float] = time.monotonic, max_kinds: int = 1000):
        super().__init__()
        self.window_s, self.clock, self.max_kinds = window_s, clock, max_kinds
        self._kinds: dict[tuple[str, int, str], list[float]] = {}  # kind -> [last let through, dropped]

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.split(".", 1)[0] not in NOISY:
            return True
        kind = (record.name, record.levelno, str(record.msg))
        now = self.clock()
        seen = self._kinds.get(kind)
        if seen is not None and now - seen[0] < self.window_s:
            seen[1] += 1
            return False
        if seen is not None and seen[1]:
            record.suppressed = int(seen[1])
        if seen is None and len(self._kinds) >= self.max_kinds:
            self._kinds.clear()  # bounded: past that many kinds, each starts again
        self._kinds[kind] = [now, 0]
        return True


def setup_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(Repeats())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in NOISY:
        logging.getLogger(noisy).setLevel(logging.WARNING)


def health_router(checks: dict[str, Callable[[], Awaitable[bool]]]) -> APIRouter:
    router = APIRouter(tags=["operations"])

    @router.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/readyz", responses={503: {"description": "not ready: the same body, `status: \"not ready\"`"}})
    async def readyz(response: Response) -> dict[str, object]:
        results = {name: await check() for name, check in checks.items()}
        ok = all(results.values())
        response.status_code = 200 if ok else 503
        return {"status": "ready" if ok else "not ready", "checks": results}

    @router.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return router
