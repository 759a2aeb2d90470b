"""Wake-ups between the coordinator's API processes (`api_processes` > 1).

Each process wakes its own long-polling lease requests (its doorbell) when it queues an
experiment, and its judge loop when it records a result. With several processes on one
port, the process that queued the experiment or recorded the result is often not the one
holding an idle worker's long poll, nor the leader, whose judge loop alone judges. The
relay publishes each wake-up on a Redis pub/sub channel (`as:wakeups`); every other
process's relay hears it and wakes its own waiters or its judge loop.

Guarantees: none beyond speed. Pub/sub delivers at most once: a wake-up lost (Redis
restarting, a subscriber reconnecting) costs what it cost without the relay, one poll
interval (`lease_poll_s` for long polls, `reaper_interval_s` for the judge loop), since
both still look on their own timers. With one API process there is no relay.
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Callable

import redis

from autoswarm.coordinator.store import Store

logger = logging.getLogger(__name__)

RETRY_S = 1.0


class Relay:
    """Publishes this process's wake-ups; a thread wakes this process on the others'."""

    def __init__(
        self,
        store: Store,
        *,
        on_ring: Callable[[int], None],
        on_result: Callable[[], None],
    ) -> None:
        self.store = store
        self.on_ring = on_ring
        self.on_result = on_result
        self.origin = secrets.token_hex(6)  # this process: its own messages are skipped
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._listen, name="relay", daemon=True)

    def ring(self, count: int = 1) -> None:
        """`count` experiments were queued here: wake that many long polls elsewhere."""
        self._publish(f"{self.origin} ring {count}")

    def result(self) -> None:
        """A result was recorded here: wake the leader's judge loop."""
        self._publish(f"{self.origin} result")

    def start(self) -> Relay:
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout_s)

    def _publish(self, message: str) -> None:
        try:
            self.store.publish_wakeup(message)
        except redis.RedisError as exc:  # the timers cover it
            logger.debug("relay: could not publish %r: %s", message, exc)

    def handle(self, message: str) -> None:
        """Act on one message from the channel (skipping this process's own)."""
        origin, _, rest = message.partition(" ")
        if origin == self.origin:
            return
        what, _, count = rest.partition(" ")
        if what == "ring":
            self.on_ring(int(count) if count.isascii() and count.isdigit() else 1)
        elif what == "result":
            self.on_result()

    def _listen(self) -> None:
        while not self._stop.is_set():
            try:
                pubsub = self.store.wakeups()
            except redis.RedisError as exc:
                logger.debug("relay: cannot subscribe (%s); retrying", exc)
                self._stop.wait(RETRY_S)
                continue
            try:
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=RETRY_S)
                    if message is not None and message.get("type") == "message":
                        self.handle(str(message["data"]))
            except redis.RedisError as exc:
                logger.debug("relay: subscription lost (%s); subscribing again", exc)
                self._stop.wait(RETRY_S)
            finally:
                pubsub.close()
