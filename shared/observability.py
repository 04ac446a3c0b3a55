"""Structured logging, Prometheus metrics, and /healthz /readyz /metrics routes."""

from __future__ import annotations

import json
import logging
import sys
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
        for k in ("service", "org_id", "topic", "event_id", "reason"):
            if hasattr(record, k):
                out[k] = getattr(record, k)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def setup_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("aiokafka", "kafka", "faststream"):
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
