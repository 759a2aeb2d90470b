"""The app factory and its lifespan: Redis (embedded or not), reconcile, background loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool

from autoswarm import __version__
from autoswarm.coordinator.api.deps import Context, known_token
from autoswarm.coordinator.api.doorbell import Doorbell
from autoswarm.coordinator.api.errors import install_error_handlers
from autoswarm.coordinator.api.latency import RequestLatency
from autoswarm.coordinator.api.limits import Admission
from autoswarm.coordinator.api.routes_admin import router as admin_router
from autoswarm.coordinator.api.routes_dashboard import router as dashboard_router
from autoswarm.coordinator.api.routes_ops import router as ops_router
from autoswarm.coordinator.api.routes_read import probes
from autoswarm.coordinator.api.routes_read import router as read_router
from autoswarm.coordinator.api.routes_workers import router as worker_router
from autoswarm.coordinator.api.sse import Feed
from autoswarm.coordinator.indexer import Indexer
from autoswarm.coordinator.judge_loop import JudgeLoop
from autoswarm.coordinator.leader import Leadership
from autoswarm.coordinator.metrics import Metrics
from autoswarm.coordinator.reconcile import Interrupted, Stopping, reconcile
from autoswarm.coordinator.redis_server import EmbeddedRedis
from autoswarm.coordinator.relay import Relay
from autoswarm.coordinator.scheduler import Scheduler
from autoswarm.coordinator.settings import CoordinatorSettings
from autoswarm.coordinator.store import UNAVAILABLE, Store
from autoswarm.coordinator.tokens import ensure_admin_token, hash_token

logger = logging.getLogger(__name__)


REDIS_WAIT_S = 30.0  # how long a starting process waits for Redis (being restarted, say)


def _connect(settings: CoordinatorSettings) -> tuple[Store, EmbeddedRedis | None]:
    if settings.redis_url:
        store = Store(settings.redis_url)
        if not _await_redis(store, REDIS_WAIT_S):
            raise RuntimeError(
                f"cannot reach Redis at AUTOSWARM_REDIS_URL (waited {REDIS_WAIT_S:g} s):"
                " check that it runs and that the URL names its host and port"
            )
        if not store.appendonly_enabled():
            logger.warning(
                "!!! redis: appendonly is OFF on the configured server: acknowledged results "
                "can be lost if it restarts. Run it with `appendonly yes`. !!!"
            )
        return store, None
    embedded = EmbeddedRedis(settings.redis_dir, appendfsync=settings.redis_appendfsync)
    store = Store(embedded.start())
    return store, embedded


def _await_redis(store: Store, wait_s: float) -> bool:
    """Whether Redis answers within `wait_s`. An API process that starts while Redis is away
    (the embedded one being restarted after a crash) waits for it: failing at once made
    uvicorn stop every other API process with it."""
    deadline = time.monotonic() + wait_s
    delay_s = 0.05
    while not store.ping():
        if time.monotonic() >= deadline:
            return False
        if delay_s == 0.05:
            logger.warning("redis: not answering; waiting up to %.0f s for it", wait_s)
        time.sleep(delay_s)
        delay_s = min(delay_s * 2, 1.0)
    return True


def _background_step(ctx: Context) -> None:
    """Keep or claim the leadership; as leader, reap expired leases (the judge loop judges
    those dead-lettered)."""
    if not ctx.leadership.renew():
        return
    reaped = ctx.store.reap(now=time.time(), max_attempts=ctx.settings.max_attempts)
    for experiment_id, state in reaped.items():
        logger.warning("experiment %s: lease expired; now %s", experiment_id, state)
    requeued = sum(1 for state in reaped.values() if state == "queued")
    if requeued:
        ctx.doorbell.ring(requeued)
    if len(reaped) > requeued:
        ctx.judge.wake_here()


async def _background(ctx: Context) -> None:
    while True:
        try:
            # On the loop's thread: a restarted embedded Redis must die with this thread.
            if ctx.embedded is not None:
                ctx.embedded.ensure_running()
            await run_in_threadpool(_background_step, ctx)
        except UNAVAILABLE as exc:
            ctx.store.note_away("the reaper", exc)
        except Exception:
            logger.exception("background step failed; retrying")
        await asyncio.sleep(ctx.settings.reaper_interval_s)


async def _reconcile(scheduler: Scheduler, stopping: Stopping) -> None:
    try:
        applied = await run_in_threadpool(reconcile, scheduler, stopping)
    except Interrupted as exc:  # the server shuts down once this startup ends
        logger.warning("%s", exc)
        return
    if applied:
        logger.warning("reconcile: %d kept changes re-applied", applied)


def create_app(settings: CoordinatorSettings, stopping: Stopping = lambda: False) -> FastAPI:
    """The coordinator's FastAPI app; its lifespan owns Redis, reconcile and the reaper.
    `stopping` says whether the server was asked to stop (a signal during a long
    reconcile cuts it short)."""
    metrics = Metrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Started on the event loop's thread: the embedded Redis dies with this thread.
        store, embedded = _connect(settings)
        doorbell = Doorbell()
        doorbell.bind(asyncio.get_running_loop())
        scheduler = Scheduler(store, settings, on_enqueue=doorbell.ring)
        admin_token = await run_in_threadpool(ensure_admin_token, store, settings)
        leadership = Leadership(store, shared=settings.api_processes > 1)
        judge_loop = JudgeLoop(scheduler, settings.reaper_interval_s, leader=leadership.leads)
        relay = None
        if leadership.shared:  # several API processes: each one's wake-ups reach the others
            relay = Relay(store, on_ring=doorbell.ring_here, on_result=judge_loop.wake_here)
            doorbell.relay, judge_loop.relay = relay.ring, relay.result
            relay.start()
        ctx = Context(
            settings, store, scheduler, doorbell, embedded, admin_token, judge_loop, leadership
        )
        app.state.ctx = ctx
        metrics.watch_store(store)
        if not leadership.shared:  # several processes: their parent reconciled before them
            await _reconcile(scheduler, stopping)
        await run_in_threadpool(leadership.renew)
        judge_loop.start()
        task = asyncio.create_task(_background(ctx))
        app.state.feed = feed = Feed(store, Indexer(store), leadership.leads)
        await feed.start()
        logger.info("coordinator: ready (data in %s)", settings.data_dir)
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await run_in_threadpool(judge_loop.stop)
            if relay is not None:
                await run_in_threadpool(relay.stop)
            with contextlib.suppress(Exception):
                await run_in_threadpool(leadership.let_go)
            await feed.stop()
            store.close()
            if embedded is not None:
                embedded.stop()
            logger.info("coordinator: stopped")

    app = FastAPI(title="autoswarm coordinator", version=__version__, lifespan=lifespan)
    app.state.metrics = metrics
    install_error_handlers(app)
    app.include_router(probes)
    app.include_router(ops_router)
    app.include_router(worker_router)
    app.include_router(read_router)
    app.include_router(admin_router)
    app.include_router(dashboard_router)

    def limit_for(method: str, path: str) -> int:
        if method == "POST" and path.rstrip("/") == "/api/v1/tasks":
            return settings.max_task_body_bytes
        return settings.max_body_bytes

    async def token_known(token: str) -> bool:
        return await known_token(app.state.ctx, hash_token(token)) is not None

    def note_away(where: str, exc: BaseException) -> None:
        app.state.ctx.store.note_away(where, exc)

    # Before any route: a body is read only for a known token, and only up to its limit.
    app.add_middleware(Admission, limit_for=limit_for, token_known=token_known, note_away=note_away)
    # Added last, so outermost: it times the whole answer, a refused body's 413 included.
    app.add_middleware(RequestLatency, metrics=metrics)
    return app
