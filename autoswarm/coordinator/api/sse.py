"""The live feed: one loop that follows the coordinator's event stream, keeps the read
model's indexes caught up, and fans each new event out to the server-sent-event streams.

One loop per coordinator, whatever the number of viewers: it alone blocks on Redis (XREAD,
at most 1 s, in a worker thread); each stream only waits on its own in-memory queue. It
indexes at most every INDEX_EVERY_S while events flow, so that an experiment leased,
reported and judged within that time is filed once, not three times (an indexed read
catches up first, so readers never see less than what was recorded before they asked). A
viewer too slow to keep up with `QUEUE_SIZE` events is cut off and reconnects with
`Last-Event-ID`, which replays what it missed from the stream (kept to ~100,000 events).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi.concurrency import run_in_threadpool

from autoswarm.coordinator.indexer import Indexer
from autoswarm.coordinator.store import UNAVAILABLE, Store

logger = logging.getLogger(__name__)

QUEUE_SIZE = 1000
BLOCK_MS = 1000
INDEX_BATCH = 5000
INDEX_EVERY_S = 0.5
KEEPALIVE_S = 15.0
REPLAY_LIMIT = 1000
RETRY_MS = 2000


def event_key(event_id: str) -> tuple[int, int]:
    """A stream id (`ms-seq`) as a comparable pair."""
    ms, _, seq = event_id.partition("-")
    return int(ms or 0), int(seq or 0)


def format_event(event: dict[str, Any]) -> str:
    """One server-sent event: its stream id, its type, its fields as JSON."""
    data = json.dumps(event, separators=(",", ":"))
    return f"id: {event['event_id']}\nevent: {event.get('type', 'message')}\ndata: {data}\n\n"


@dataclass(eq=False)
class Subscriber:
    queue: asyncio.Queue[dict[str, Any] | None] = field(
        default_factory=lambda: asyncio.Queue(QUEUE_SIZE)
    )
    cut_off: bool = False


class Feed:
    """The live feed (see the module doc): start it in the app's lifespan, stop it there."""

    def __init__(
        self, store: Store, indexer: Indexer, leads: Callable[[], bool] = lambda: True
    ) -> None:
        self.store = store
        self.indexer = indexer
        self.leads = leads  # the indexing is the leading process's (autoswarm.coordinator.leader)
        self._subscribers: set[Subscriber] = set()
        self._task: asyncio.Task[None] | None = None
        self._last = "0"

    async def start(self) -> None:
        self._last = await run_in_threadpool(self.store.last_event_id)
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for subscriber in list(self._subscribers):
            with contextlib.suppress(asyncio.QueueFull):
                subscriber.queue.put_nowait(None)

    async def _run(self) -> None:
        backlog, indexed = True, -INDEX_EVERY_S
        while True:
            try:
                if not self.leads():
                    backlog = False
                elif backlog or time.monotonic() - indexed >= INDEX_EVERY_S:
                    indexed = time.monotonic()
                    backlog = await run_in_threadpool(self.indexer.catch_up, INDEX_BATCH)
                block_ms = 0 if backlog else BLOCK_MS
                events = await run_in_threadpool(
                    self.store.wait_events, self._last, REPLAY_LIMIT, block_ms
                )
                if events:
                    self._last = events[-1]["event_id"]
                    self._publish(events)
            except asyncio.CancelledError:
                raise
            except UNAVAILABLE as exc:
                self.store.note_away("the event feed", exc)
                await asyncio.sleep(1.0)
            except Exception:
                logger.exception("feed: following the event stream failed; retrying in 1 s")
                await asyncio.sleep(1.0)

    def _publish(self, events: list[dict[str, Any]]) -> None:
        for subscriber in list(self._subscribers):
            for event in events:
                try:
                    subscriber.queue.put_nowait(event)
                except asyncio.QueueFull:
                    logger.warning("feed: a viewer fell %d events behind; cut off", QUEUE_SIZE)
                    subscriber.cut_off = True
                    self._subscribers.discard(subscriber)
                    break

    async def stream(self, after: str | None, task_id: str | None) -> AsyncIterator[str]:
        """Server-sent events: those after `after` (replayed), then each new one."""
        subscriber = Subscriber()
        self._subscribers.add(subscriber)
        try:
            yield f"retry: {RETRY_MS}\n: connected\n\n"
            last = after
            if after is not None:
                for old in await run_in_threadpool(self.store.read_events, after, REPLAY_LIMIT):
                    last = old["event_id"]
                    if task_id is None or old.get("task_id") == task_id:
                        yield format_event(old)
            while True:
                try:
                    event = await asyncio.wait_for(subscriber.queue.get(), KEEPALIVE_S)
                except TimeoutError:
                    if subscriber.cut_off:
                        return
                    yield ": keep-alive\n\n"
                    continue
                if event is None:
                    return
                if last is not None and event_key(event["event_id"]) <= event_key(last):
                    continue
                if task_id is None or event.get("task_id") == task_id:
                    yield format_event(event)
        finally:
            self._subscribers.discard(subscriber)
