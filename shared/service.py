"""The runtime every service composes: settings, clock, pool + migrations, broker, outbox relay,
HTTP app with error handlers and /healthz /readyz /metrics."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
from fastapi import APIRouter, FastAPI

from contracts.events import CloudEvent, Encoded, EventData, encoded, new_event
from shared import admin, auth, db, docs, errors, http_limits, kafka, migrate, observability, outbox
from shared.clock import Clock
from shared.config import Settings, get_settings
from shared.consumer import Consumer, Subscription
from shared.outbox import Relay
from shared.progress import Progress

log = logging.getLogger(__name__)

Hook = Callable[["Runtime"], Awaitable[None]]

STOP_WITHIN_S = 20.0  # the longest a stop takes (Kubernetes kills a pod 30 s after asking it to stop)


class Runtime:
    """One service process: owns schema `name` in the database and the consumer group `aimis-<name>`."""

    def __init__(
        self,
        name: str,
        migrations: Path,
        *,
        settings: Settings | None = None,
        clock: Clock | None = None,
        group_id: str | None = None,
        principal: str | None = None,
    ):
        self.name = name
        self.schema = name
        self.migrations = migrations
        self.settings = settings or get_settings()
        self.clock = clock or Clock()
        self.group_id = group_id or f"aimis-{name}"
        self.source = f"/aimis/{name}"
        # The Kafka principal (SPEC 10): AIMIS_KAFKA_USERNAME, else the service's name.
        self.kafka_options = self.settings.kafka_options(principal or self.group_id.removeprefix("aimis-"))
        self.broker = kafka.make_broker(self.settings.kafka_bootstrap, f"aimis-{name}", self.kafka_options)
        self._pool: asyncpg.Pool | None = None
        self.relay: Relay | None = None
        self.publisher = kafka.ProducerPublisher(
            self.settings.kafka_bootstrap, f"aimis-{name}-relay", self.kafka_options
        )
        self.on_start: list[Hook] = []
        self.on_stop: list[Hook] = []
        self._tasks: list[asyncio.Task[Any]] = []
        self._subscribers: list[Any] = []  # FastStream subscribers (for their partition assignment)
        self.subscriptions: list[Subscription] = []  # what this service consumes (tests enumerate them)
        self.progress = Progress(
            name, self.group_id, self.settings.stall_s, self._assigned, bootstrap=self.settings.kafka_bootstrap,
            options=self.kafka_options, pool=lambda: self._pool,
        )

    @property
    def pool(self) -> asyncpg.Pool:
        """The database pool. It is opened first in `start()`, before the broker, the consumers,
        the relay and the HTTP routes run; nothing uses it earlier."""
        if self._pool is None:
            raise RuntimeError(f"{self.name}: the runtime is not started (no database pool yet)")
        return self._pool

    # -- wiring -------------------------------------------------------------
    def subscribe(self, sub: Subscription) -> None:
        """Consume `sub.topic` with the one consumer shape (shared/consumer.py)."""
        self.subscriptions.append(sub)
        self.consume(sub.topic, Consumer(self, sub), retry_backoff_s=0.0)  # the consumer backs off itself

    def consume(self, topic: str, handler: kafka.BatchHandler, **kw: Any) -> None:
        self._subscribers.append(kafka.batch_consumer(
            self.broker, topic, self.group_id, handler, service=self.name,
            max_records=self.settings.batch_max_records,
            batch_timeout_ms=self.settings.batch_timeout_ms, **kw,
        ))

    def consumers_assigned(self) -> bool:
        """Whether every consumer of this process holds partitions (has joined its group)."""
        return all(s.consumer is not None and s.consumer.assignment() for s in self._subscribers)

    def _assigned(self) -> list[Any]:
        """The partitions this process's consumers are assigned now."""
        return [tp for s in self._subscribers if s.consumer is not None for tp in s.consumer.assignment()]

    def event(
        self, subject: str, data: EventData, *, type: str | None = None, id: str | None = None
    ) -> CloudEvent[Any]:
        """An event of this service now; its type comes from the data model (`type` only for a
        model several types share, such as DeadLetterData)."""
        return new_event(subject, data, self.source, type=type, id=id, time=self.clock.now())

    def encoded(self, model: type[EventData], subject: str, data: dict[str, Any], *,
                time: datetime | None = None) -> Encoded:
        """`event` for the hot paths: serialised from plain values, no model built (`encoded`); at
        `time` (a batch's one now) or now."""
        return encoded(model, subject, data, self.source, time=time or self.clock.now())

    @property
    def offering(self) -> str:
        """What a writer that will `offer` its rows passes to `outbox.add` (`Relay.offering`)."""
        return self.relay.offering if self.relay is not None else ""

    def offer(self, appended: outbox.Appended | None) -> None:
        """Hand rows a committed transaction appended to the outbox to this process's relay
        (`Relay.offer`); the log has them anyway."""
        if self.relay is not None:
            self.relay.offer(appended)

    def background(self, coro_fn: Callable[[], Awaitable[None]], name: str) -> None:
        """Run `coro_fn` as a task between start and stop (sweepers and the like)."""
        self.on_start.append(lambda rt: self._spawn(coro_fn, name))

    async def _spawn(self, coro_fn: Callable[[], Awaitable[None]], name: str) -> None:
        async def run() -> None:
            await coro_fn()

        self._tasks.append(asyncio.create_task(run(), name=name))

    # -- lifecycle ----------------------------------------------------------
    async def open_database(self) -> None:
        """Open the pool and migrate the schema: the first step of `start()` (and all the
        component tests need)."""
        self._pool = await db.create_pool(self.settings.database_url, self.schema, max_size=10)
        async with self._pool.acquire() as conn:
            ran = await migrate.migrate(conn, self.schema, self.migrations)
        if ran:
            log.info("%s: applied migrations %s", self.name, ran)

    async def close_database(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def start(self) -> None:
        s = self.settings
        auth.check_secrets(s)  # SPEC 7.4: no start with a weak or the development secret
        await self.open_database()
        if s.kafka_security == "none":  # with security on, the operator provisions the topics
            await kafka.ensure_topics(
                s.kafka_bootstrap, s.topic_partitions, replication=s.kafka_replication,
                min_isr=s.kafka_min_isr, options=self.kafka_options,
            )
        await self.broker.start()
        await self.publisher.start()
        outbox.PARKED.labels(self.schema)  # exported as 0 from the start, so increase() sees the first park
        self.relay = Relay(s.database_url, self.schema, self.publisher)
        self.relay.start()
        await self._spawn(self._housekeeping, f"{self.name}-outbox-housekeeping")
        self.progress.start()
        for hook in self.on_start:
            await hook(self)
        log.info("%s started", self.name)

    async def stop(self, within_s: float = STOP_WITHIN_S) -> None:
        """Stop, in `within_s` at most (an orchestrator kills what takes longer): each step gets
        what is left of it; a step that overruns is logged by name and left behind (the pool is
        terminated). Nothing is lost by that: an uncommitted batch comes back, the outbox keeps
        what was not published."""
        deadline = asyncio.get_running_loop().time() + within_s
        for hook in reversed(self.on_stop):
            await self._step("a stop hook", hook(self), deadline)
        for t in self._tasks:
            t.cancel()
        await self._step("the background tasks", asyncio.wait(self._tasks) if self._tasks else None, deadline)
        for t in self._tasks:  # read what one raised before the stop, so it is not reported unread later
            if t.done() and not t.cancelled():
                t.exception()
        self._tasks.clear()
        await self._step("the progress monitor", self.progress.stop(), deadline)
        if self.relay:
            await self._step("the outbox relay", self.relay.stop(), deadline)
        await self._step("the relay's producer", self.publisher.stop(), deadline)
        await self._step("the last offset commits", kafka.settle_commits(), deadline)
        await self._step("the consumers", self.broker.stop(), deadline)
        pool = self._pool
        if pool is not None and not await self._step("the database pool", self.close_database(), deadline):
            pool.terminate()
        self._pool = None
        log.info("%s stopped", self.name)

    async def _step(self, what: str, work: Awaitable[Any] | None, deadline: float) -> bool:
        """Await `work` until `deadline`; False (logged, the work cancelled) when it overran."""
        if work is None:
            return True
        task = asyncio.ensure_future(work)
        left = max(0.0, deadline - asyncio.get_running_loop().time())
        done, _ = await asyncio.wait([task], timeout=left)
        if done:
            if not task.cancelled() and task.exception() is not None:
                log.warning("%s: stopping %s failed: %r", self.name, what, task.exception())
            return True
        log.warning("%s: stopping %s took longer than the stop allows; left behind", self.name, what)
        task.cancel()
        return False

    async def _housekeeping(self, every_s: float = 3600.0, keep_s: int = 86_400) -> None:
        """Delete outbox rows published more than `keep_s` ago, every `every_s`."""
        while True:
            try:
                async with self.pool.acquire() as conn:
                    purged = await outbox.purge_sent(conn, keep_s)
                if purged:
                    log.info("%s: purged %d sent outbox rows", self.name, purged)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - housekeeping never stops the service
                log.warning("%s: outbox housekeeping failed: %r", self.name, e)
            await asyncio.sleep(every_s)

    async def kafka_ready(self) -> bool:
        try:
            return bool(await self.broker.ping(timeout=2))
        except Exception:  # noqa: BLE001
            return False

    async def db_ready(self) -> bool:
        return self._pool is not None and await db.ping(self._pool)

    # -- HTTP ---------------------------------------------------------------
    def http_app(self, *routers: APIRouter, title: str, description: str = "") -> FastAPI:
        @asynccontextmanager
        async def lifespan(_: FastAPI):  # type: ignore[no-untyped-def]
            await self.start()
            try:
                yield
            finally:
                await self.stop()

        app = FastAPI(title=title, description=description, version="1", lifespan=lifespan,
                      docs_url=None, redoc_url=None)
        app.state.settings = self.settings
        app.state.runtime = self
        errors.install(app)
        docs.install(app)  # /docs from installed assets, never a CDN
        docs.with_examples(app)

        @app.middleware("http")
        async def count_requests(request: Any, call_next: Any) -> Any:
            response = await call_next(request)
            observability.HTTP_REQUESTS.labels(self.name, str(response.status_code)).inc()
            return response

        http_limits.install(app, self.settings.http_deadline_s, self.name)  # outermost: SPEC 7.1, 7.5

        app.include_router(observability.health_router({
            "database": self.db_ready, "kafka": self.kafka_ready,
            "consumers": self.progress.consumers_ok, "outbox": self.progress.outbox_ok,  # SPEC 7.2 stalls
        }))
        app.include_router(admin.router())
        for r in routers:
            app.include_router(r)
        return app


def serve(app: FastAPI, settings: Settings, service: str) -> None:
    """`python -m services.<name>`: run the HTTP app (and with it the consumers) under uvicorn."""
    import uvicorn

    observability.setup_logging(settings.log_level)
    try:
        auth.check_secrets(settings)
    except auth.InsecureSecret as e:
        log.error("%s refuses to start: %s", service, e)
        raise SystemExit(2) from None
    collect_rarely()
    uvicorn.run(app, host=settings.host, port=settings.port_of(service), log_config=None, access_log=False)


GC_THRESHOLD = 100_000  # allocations between young-generation collections (CPython's default: 700)


def collect_rarely() -> None:
    """The services' collector policy. The consumers allocate a few objects per record, thousands
    per batch, nearly all freed by reference counting. With the default threshold (700) the cyclic
    collector runs every few records and walks the long-lived objects again and again: collect less
    often, and move what exists now out of its sight."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, 20, 20)
