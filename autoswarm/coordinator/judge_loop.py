"""The judge loop: applies the judge's decisions off the request path.

A report is recorded by one script, which also files the experiment in the judge queue
(`as:judge`), and answered at once; this loop, one thread of the coordinator, applies
every pending judgement, oldest first. Each report wakes it, and it looks on its own every
`interval_s` as well, so a judgement that failed, or one left by a coordinator that died,
is applied again. A result is acknowledged once it is safe in Redis, never later.

Guarantees: every recorded result is judged exactly once (the scheduler's scripts are
guarded by the experiment's `judged` flag); while `leader` says this process may judge, it
is the only one that does (see `autoswarm.coordinator.leader`). Not guaranteed: that a verdict
exists when the report's answer arrives (readers see it pending for a moment).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from autoswarm.coordinator.scheduler import Scheduler
from autoswarm.coordinator.store import UNAVAILABLE

logger = logging.getLogger(__name__)

BATCH = 100


class JudgeLoop:
    """A thread applying pending judgements whenever woken (see the module doc)."""

    def __init__(
        self,
        scheduler: Scheduler,
        interval_s: float,
        leader: Callable[[], bool] = lambda: True,
    ) -> None:
        self.scheduler = scheduler
        self.interval_s = interval_s
        self.leader = leader
        self.relay: Callable[[], None] | None = None  # wakes the leader's, if not this one
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="judge", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        """A result was recorded: judge it soon, here or, through the relay, in the leading
        process (thread-safe, never blocks on this loop)."""
        self._wake.set()
        if self.relay is not None and not self.leader():
            self.relay()

    def wake_here(self) -> None:
        """Judge soon in this process (thread-safe, never blocks)."""
        self._wake.set()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Finish the judgement in hand, then stop."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout_s)

    def drain(self) -> int:
        """Apply every pending judgement now, in this thread; how many were applied."""
        handled = 0
        while not self._stop.is_set() and self.leader():
            judged = self.scheduler.process_pending(BATCH)
            handled += judged.handled
            # Again if a decision made judgements that waited on it due.
            if judged.handled < BATCH and not judged.woken:
                break
        return handled

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.interval_s)
            self._wake.clear()
            try:
                self.drain()
            except UNAVAILABLE as exc:  # the results wait in Redis
                self.scheduler.store.note_away("the judge loop", exc)
            except Exception:
                logger.exception("judge loop: a pass failed; retrying")
