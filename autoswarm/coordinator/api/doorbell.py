"""Wakes long-polling lease requests when experiments are queued (in this process, and
through `autoswarm.coordinator.relay` in the coordinator's other API processes)."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable


class Doorbell:
    """Waiters park on futures; `ring(n)` wakes n of them (all when n covers them).

    A woken request that finds nothing for its hardware class simply waits again; lease
    requests also re-check on a timer, so a missed ring costs at most one poll interval.
    """

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiters: deque[asyncio.Future[None]] = deque()
        self.relay: Callable[[int], None] | None = None  # tells the other API processes

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    async def wait(self, timeout_s: float) -> None:
        """Return when rung or after `timeout_s`."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        try:
            await asyncio.wait_for(asyncio.shield(future), timeout_s)
        except TimeoutError:
            pass
        finally:
            if not future.done():
                future.cancel()
            with contextlib.suppress(ValueError):
                self._waiters.remove(future)

    def _ring(self, count: int) -> None:
        woken = 0
        while self._waiters and woken < count:
            future = self._waiters.popleft()
            if not future.done():
                future.set_result(None)
                woken += 1

    def ring(self, count: int = 1) -> None:
        """Wake `count` waiters here and, through the relay, in the other API processes;
        safe to call from any thread."""
        self.ring_here(count)
        if self.relay is not None:
            self.relay(count)

    def ring_here(self, count: int = 1) -> None:
        """Wake `count` waiters of this process; safe to call from any thread."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._ring(count)
        else:
            loop.call_soon_threadsafe(self._ring, count)
